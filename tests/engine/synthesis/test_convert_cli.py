"""``python -m engine.convert``: real files in, StyleCast files out, clean failures."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from engine import convert
from engine.synthesis.checkpoints import load_generator, read_checkpoint
from engine.synthesis.networks import GeneratorConfig
import formats
from repo_paths import REPO  # noqa: E402

NV_CFG = GeneratorConfig.nvlabs(z_dim=16, w_dim=16, img_resolution=16, channel_base=128, channel_max=16,
                                mapping_layers=2, conv_clamp=256)
ROS_CFG = GeneratorConfig.rosinality(size=8, style_dim=4, n_mlp=1)


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO), STYLECAST_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "engine.convert", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def _same_state(G, ref, dtype=torch.float32):
    assert G.config == ref.config
    for k, v in ref.state_dict().items():
        assert torch.equal(G.state_dict()[k], v.to(dtype).float()), k


def test_help_shows_examples(tmp_path):
    result = _run("--help", cwd=tmp_path)
    assert result.returncode == 0
    assert "examples:" in result.stdout and "--dtype" in result.stdout
    assert "python -m engine.convert network-snapshot-025000.pkl" in result.stdout


def test_converts_nvlabs_pickle_to_float16(tmp_path):
    G = formats.random_generator(NV_CFG, seed=1)
    formats.write_nvlabs_pkl(G, tmp_path / "network-snapshot-000400.pkl")
    result = _run("network-snapshot-000400.pkl", "out/g.safetensors", "--dtype", "float16", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "nvlabs-pkl" in result.stdout and "float16" in result.stdout
    assert result.stderr == ""
    out = tmp_path / "out" / "g.safetensors"
    side = json.loads((tmp_path / "out" / "g.json").read_text())
    assert side["dtype"] == "float16" and side["source"] == "network-snapshot-000400.pkl (nvlabs-pkl)"
    _same_state(load_generator(out), G, torch.float16)


def test_bad_input_exits_2_with_one_line(tmp_path):
    (tmp_path / "photo.pkl").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(100))
    result = _run("photo.pkl", "g.safetensors", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0] == "python -m engine.convert: error: photo.pkl: not a generator checkpoint (this is a PNG image)"
    assert not (tmp_path / "g.safetensors").exists()


def test_converts_rosinality_train_checkpoint_losslessly(tmp_path, capsys):
    G = formats.random_generator(ROS_CFG, seed=2)
    src = formats.write_rosinality_pt(G, tmp_path / "010000.pt", train_ckpt=True)
    assert convert.main([str(src), str(tmp_path / "r.safetensors")]) == 0
    out = capsys.readouterr().out
    assert "rosinality-pt" in out and "float32" in out
    _same_state(load_generator(tmp_path / "r.safetensors"), G)


def test_notes_are_printed(tmp_path, capsys):
    G = formats.random_generator(ROS_CFG, seed=2)
    src = formats.write_rosinality_pt(G, tmp_path / "010000.pt", train_ckpt=True, include_latent_avg=False)
    assert convert.main([str(src), str(tmp_path / "r.safetensors")]) == 0
    captured = capsys.readouterr()
    assert "note: no 'latent_avg' in the checkpoint" in captured.out


def test_converts_stylecast_and_demo(tmp_path, capsys):
    assert convert.main(["demo", str(tmp_path / "demo.safetensors"), "--dtype", "float16"]) == 0
    assert convert.main(["demo", "--out", str(tmp_path / "demo2.safetensors")]) == 0        # --out, like the others
    assert (tmp_path / "demo2.safetensors").is_file()
    for argv in (["demo"], ["demo", str(tmp_path / "a.safetensors"), "--out", str(tmp_path / "b.safetensors")]):
        with pytest.raises(SystemExit) as exc:
            convert.main(argv)
        assert exc.value.code == 2 and "give the output path once" in capsys.readouterr().err
    assert convert.main([str(tmp_path / "demo.safetensors"), str(tmp_path / "again.safetensors")]) == 0
    assert read_checkpoint(tmp_path / "again.safetensors").config == read_checkpoint(tmp_path / "demo.safetensors").config
    a = load_generator(tmp_path / "demo.safetensors").state_dict()
    b = load_generator(tmp_path / "again.safetensors").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize(
    "case",
    ["missing", "hostile", "truncated", "bad_output_suffix", "overwrite_input", "offline_preset", "dtype"],
)
def test_errors_exit_2_with_one_line_naming_the_file(tmp_path, capsys, monkeypatch, case):
    monkeypatch.setenv("STYLECAST_OFFLINE", "1")
    monkeypatch.setenv("STYLECAST_CACHE", str(tmp_path / "cache"))
    G = formats.random_generator(NV_CFG, seed=3)
    good = formats.write_nvlabs_pkl(G, tmp_path / "good.pkl")
    marker = tmp_path / "marker"
    out = str(tmp_path / "o.safetensors")
    if case == "missing":
        argv, expect = [str(tmp_path / "nope.pkl"), out], "nope.pkl: no such file"
    elif case == "hostile":
        (tmp_path / "evil.pkl").write_bytes(pickle.dumps({"G_ema": _Evil(marker)}))
        argv, expect = [str(tmp_path / "evil.pkl"), out], "evil.pkl: refusing to load global"
    elif case == "truncated":
        (tmp_path / "cut.pkl").write_bytes(good.read_bytes()[:5000])
        argv, expect = [str(tmp_path / "cut.pkl"), out], "cut.pkl: truncated or corrupt pickle"
    elif case == "bad_output_suffix":
        argv, expect = [str(good), str(tmp_path / "o.pt")], "o.pt: output must end in .safetensors"
    elif case == "overwrite_input":
        (tmp_path / "x.safetensors").write_bytes(good.read_bytes())
        argv, expect = [str(tmp_path / "x.safetensors"), str(tmp_path / "x.safetensors")], "would overwrite the input"
    elif case == "offline_preset":
        argv, expect = ["ffhq256", out], "STYLECAST_OFFLINE"
    else:
        with pytest.raises(SystemExit) as exc:  # argparse's own usage error, also status 2
            convert.main([str(good), out, "--dtype", "int8"])
        assert exc.value.code == 2
        return
    assert convert.main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("python -m engine.convert: error: ")
    assert expect in lines[0]
    assert "Traceback" not in captured.err
    assert not Path(out).exists()
    assert not marker.exists()
