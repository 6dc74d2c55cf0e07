"""Every ``python -m ...`` command line: a description, an epilog with examples, a help string for
every option (subcommands included), as ``build_parser()`` builds them."""
from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys

import pytest

from repo_paths import REPO

CLI_MODULES = (
    "engine.serve", "engine.render", "engine.generate", "engine.basis", "engine.directions", "engine.convert",
    "engine.train_demo", "engine.train_motion", "trt_build.build", "trt_build.export",
    "engine.demo_world.dataset", "engine.demo_world.train_probes", "engine.demo_world.talking",
    "engine.demo_world.assets", "engine.faces.__main__", "streaming.livekit_worker",
)


def _parsers(parser: argparse.ArgumentParser, name: str):
    """(name, parser) of ``parser`` and of every subcommand below it."""
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {a.dest: a.help for a in action._choices_actions}
            for sub_name, sub in action.choices.items():
                assert helps.get(sub_name), f"{name} {sub_name}: the subcommand has no help in the list"
                yield from _parsers(sub, f"{name} {sub_name}")


@pytest.mark.parametrize("module", CLI_MODULES)
def test_help_has_description_examples_and_option_help(module):
    mod = importlib.import_module(module)
    assert callable(getattr(mod, "build_parser", None)), f"{module} has no build_parser()"
    for name, parser in _parsers(mod.build_parser(), module):
        assert parser.description and parser.description.strip(), f"{name}: no description"
        epilog = parser.epilog or ""
        assert "example:" in epilog or "examples:" in epilog, f"{name}: no example(s) line in the epilog"
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction) or action.help == argparse.SUPPRESS:
                continue
            what = "/".join(action.option_strings) or action.dest
            assert action.help and str(action.help).strip(), f"{name}: {what} has no help"
        parser.format_help()          # the help renders (no bad %-formats in help strings)


def test_generate_help_runs_from_the_repo_root():
    env = dict(os.environ, PYTHONPATH=str(REPO))
    r = subprocess.run([sys.executable, "-m", "engine.generate", "--help"], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "examples:" in r.stdout and "--out" in r.stdout and "--truncation" in r.stdout
    assert "--outdir" not in r.stdout and "--trunc " not in r.stdout      # hidden aliases


@pytest.mark.parametrize("module, new, old, dest, value", [
    ("engine.serve", ["--device", "0"], ["--gpu", "0"], "device", "0"),
    ("trt_build.build", ["--device", "1"], ["--gpu", "1"], "device", "1"),
    ("engine.generate", ["--out", "o"], ["--outdir", "o"], "out", "o"),
    ("engine.generate", ["--truncation", "0.5"], ["--trunc", "0.5"], "truncation", 0.5),
    ("engine.basis", ["show", "--seed", "0", "--local", "--truncation", "0.5"],
     ["show", "--seed", "0", "--local", "--trunc", "0.5"], "truncation", 0.5),
    ("engine.directions", ["discover", "--out", "x.json", "--truncation", "0.5"],
     ["discover", "--out", "x.json", "--trunc", "0.5"], "truncation", 0.5),
    ("engine.demo_world.assets", ["targets", "--talking", "t", "--out", "o", "--truncation", "0.5"],
     ["targets", "--talking", "t", "--out", "o", "--truncation-psi", "0.5"], "truncation", 0.5),
])
def test_old_flag_spellings_are_aliases(module, new, old, dest, value):
    parser = importlib.import_module(module).build_parser()
    a, b = parser.parse_args(new), parser.parse_args(old)
    got = getattr(a, dest)
    assert (str(got) if isinstance(value, str) else got) == value
    assert vars(a) == vars(b)


@pytest.mark.parametrize("module, argv, dest, want", [
    ("engine.serve", [], "device", "cpu"),
    ("trt_build.build", [], "device", "cuda:0"),
    ("engine.generate", ["--out", "o"], "truncation", 0.7),
    ("engine.basis", ["show", "--seed", "0", "--local"], "truncation", 0.7),
    ("engine.demo_world.assets", ["targets", "--talking", "t", "--out", "o"], "truncation", 0.7),
    ("engine.render", ["--audio", "a.wav", "--out", "o.mp4"], "truncation", 0.7),
    ("engine.serve", [], "truncation", 0.7),
    # discovery samples the whole face distribution (results stay as they were); the engine shows 0.7
    ("engine.directions", ["discover", "--out", "x.json"], "truncation", 1.0),
    ("engine.render", ["--audio", "a.wav", "--out", "o.mp4"], "threads", None),    # None: default_threads()
    ("engine.serve", [], "threads", None),
])
def test_defaults(module, argv, dest, want):
    assert getattr(importlib.import_module(module).build_parser().parse_args(argv), dest) == want
