"""The import graph stays one way: no circles, the engine imports neither the WebRTC edge nor the
deployment tools, and no library module imports a command line.

Every import is counted, function-level and ``TYPE_CHECKING`` ones too (they are the graph as a
reader sees it), read from the source with ``ast`` (nothing is imported, so optional extras do
not matter).
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("engine", "streaming", "trt_build", "benchmarks", "web_client")
#: the one upward edge: ``python -m engine.serve`` (the design's entry point) starts the server;
#: it is a command line that nothing imports
ALLOWED_UPWARD = {("engine.serve", "streaming.server"), ("engine.serve", "streaming.workers")}
#: who may import whom, by top-level package
MAY_IMPORT = {"engine": {"engine"}, "streaming": {"streaming", "engine"}, "trt_build": {"trt_build", "engine"},
              "benchmarks": {"benchmarks", "engine", "streaming", "trt_build"}, "web_client": set()}


def _modules() -> dict[str, Path]:
    mods = {}
    for pkg in PACKAGES:
        for f in (ROOT / pkg).rglob("*.py"):
            parts = list(f.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            mods[".".join(parts)] = f
    return mods


MODULES = _modules()


def _resolve(name: str):
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _imports(mod: str, path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(_resolve(a.name) for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
                base = base[:len(base) - node.level + 1]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            # "from pkg import sub" imports the submodule; "from mod import name" the module
            out.update(f"{prefix}.{a.name}" if f"{prefix}.{a.name}" in MODULES else _resolve(prefix)
                       for a in node.names)
    out.discard(None)
    out.discard(mod)
    return out


GRAPH = {m: _imports(m, p) for m, p in MODULES.items()}


def _is_command_line(path: Path) -> bool:
    return "__name__ == \"__main__\"" in path.read_text() or path.name == "__main__.py"


def _cycles() -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index, low, on, stack, out, counter = {}, {}, set(), [], [], [0]
    for start in GRAPH:
        if start in index:
            continue
        work = [(start, iter(sorted(GRAPH[start])))]
        index[start] = low[start] = counter[0]
        counter[0] += 1
        stack.append(start)
        on.add(start)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter[0]
                    counter[0] += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(GRAPH[w]))))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        out.append(sorted(comp))
    return out


def test_the_graph_is_read():
    # the walker sees real edges (a broken walker would pass every rule below)
    assert "engine.synthesis.backends" in GRAPH["engine.avatar"]
    assert "engine.synthesis.trt_engine" in GRAPH["engine.synthesis.trt_backend"]
    assert "streaming.server" in GRAPH["engine.serve"] and "engine.cli_util" in GRAPH["trt_build.build"]
    assert len(GRAPH) > 100


def test_no_import_circles():
    assert _cycles() == []


def test_a_planted_circle_is_found(monkeypatch):
    monkeypatch.setitem(GRAPH, "engine.frames", GRAPH["engine.frames"] | {"engine.session"})
    assert any({"engine.frames", "engine.session"} <= set(c) for c in _cycles())


@pytest.mark.parametrize("pkg", PACKAGES)
def test_imports_go_one_way(pkg):
    bad = sorted((m, t) for m, targets in GRAPH.items() if m.split(".")[0] == pkg for t in targets
                 if t.split(".")[0] not in MAY_IMPORT[pkg] and (m, t) not in ALLOWED_UPWARD)
    assert bad == []


def test_no_library_module_imports_a_command_line():
    # a command line (a module run with python -m) may use libraries and the CLI helpers; a
    # library may use neither a command line nor the helpers (UsageError, argparse types, ...)
    cli = {m for m, p in MODULES.items() if _is_command_line(p)} | {"engine.cli_util"}
    assert {"engine.render", "engine.serve", "trt_build.build", "engine.demo_world.train_probes"} <= cli
    bad = sorted((m, t) for m, targets in GRAPH.items() if m not in cli and m.split(".")[0] != "benchmarks"
                 for t in targets & cli)
    assert bad == []


def test_no_command_line_shares_a_name_with_a_library_module():
    """``engine/basis.py`` (the CLI) beside ``engine/latent/basis.py`` (the data type) made both
    ambiguous to read and to grep: a top-level module of a package names no module below it."""
    clashes = []
    for pkg in ("engine", "streaming", "trt_build"):
        top = {f.stem for f in (ROOT / pkg).glob("*.py") if f.stem != "__init__"}
        for f in (ROOT / pkg).rglob("*.py"):
            if f.parent != ROOT / pkg and f.stem in top:
                clashes.append(f"{pkg}/{f.stem}.py vs {f.relative_to(ROOT)}")
    assert not clashes, clashes
