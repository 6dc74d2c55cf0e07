"""engine.latent.discover / python -m engine.directions: motion directions found by measuring.

A planted generator (its "images" are the ws themselves and a planted measure reads fixed linear
functions of them, on known layers) checks the algorithm exactly; the shipped demo generator with
its probes checks it on a real StyleGAN2.
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from engine.latent.calibrate import UNIT_MOTION
from engine.latent.direction_set import DirectionSet
from engine.latent.discover import NoFaceError, discover, layer_candidates

W_DIM, NUM_WS = 16, 6


class Planted:
    """ws → "image" = ws (float); mouth reads layers 2-3, yaw layers 0-1, blink layers 4-5."""

    num_ws, w_dim = NUM_WS, W_DIM
    checkpoint_hash = "p" * 64

    def __init__(self, seed=0):
        q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((W_DIM, W_DIM)))
        self.u = {"mouth_open": q[:, 0], "head_yaw": q[:, 1], "blink": q[:, 2]}
        self.rest = q[:, 3:]                       # the identity lives here

    def sample_w(self, n, seed):
        return np.random.default_rng(seed).standard_normal((n, W_DIM)) * 0.8

    def render(self, ws):
        return np.array(ws, dtype=np.float64)


class PlantedMeasure:
    name = "planted"
    identity_scale = 1.0

    def __init__(self, planted, faceless=False, noise=0.01):
        self.p, self.faceless, self.noise = planted, faceless, noise
        self.roles = {"mouth": "mouth_open", "yaw": "head_yaw", "blink": "blink", "roll": "head_roll"}
        self.scales = {k: 1.0 for k in self.roles}
        self.rng = np.random.default_rng(5)

    def __call__(self, ws):
        n = len(ws)
        layer = lambda a, b: ws[:, a:b + 1].mean(axis=1)           # noqa: E731
        out = {"mouth": 0.2 * layer(2, 3) @ self.p.u["mouth_open"],
               "yaw": 0.3 * layer(0, 1) @ self.p.u["head_yaw"],
               "blink": 0.25 * layer(4, 5) @ self.p.u["blink"],
               "roll": np.zeros(n)}                                   # never moves: left out
        out = {k: v + self.noise * self.rng.standard_normal(n) for k, v in out.items()}
        if self.faceless:
            out = {k: np.full(n, np.nan) for k in out}
        return out

    def detected(self, ws):
        return np.full(len(ws), not self.faceless)

    def embed(self, ws):
        return ws.mean(axis=1) @ self.p.rest


def test_planted_directions_names_and_layers_are_recovered():
    p = Planted()
    ds, rep = discover(p, PlantedMeasure(p), n=200, holdout=8, progress=False)
    assert ds.names == ["head_yaw", "mouth_open", "blink"]           # priority order, roll left out
    assert rep["left_out"] == ["head_roll"]
    for role, u in p.u.items():
        assert abs(float(ds[role].vector @ u)) >= 0.99, role
        assert float(ds[role].vector @ u) > 0, role                   # + raises the measured value
    assert ds["head_yaw"].layers == (0, 1) and ds["mouth_open"].layers == (2, 3) and ds["blink"].layers == (4, 5)
    r = rep["roles"]["mouth_open"]
    # moving only layers 2-3 by ±2σ: the mouth reads 0.2·σ per σ, the identity (all layers) moves less
    assert r["gain_per_sigma_scaled"] == pytest.approx(0.2 * r["stdev"], rel=0.05)
    assert r["leakage"]["head_yaw"] < 0.01 and r["leakage"]["blink"] < 0.01
    every_layer = next(c for c in r["candidates"] if c["layers"] == [0, NUM_WS - 1])
    assert r["identity_distance_2sigma"] < min(0.05, every_layer["identity_distance_2sigma"] / 2) and r["r2"] > 0.9
    assert [c["layers"] for c in r["candidates"]] == [list(c) for c in layer_candidates(NUM_WS)]
    assert ds.checkpoint_hash == p.checkpoint_hash and all(d.origin == "discovered:planted" for d in ds)


def test_refine_keeps_a_linear_world_and_reports_where_it_looked():
    p = Planted()
    ds, rep = discover(p, PlantedMeasure(p), n=200, holdout=8, refine=True, progress=False)
    assert rep["refine"] and ds.names == ["head_yaw", "mouth_open", "blink"]
    for role, u in p.u.items():
        assert abs(float(ds[role].vector @ u)) >= 0.99, role
        r = rep["roles"][role]
        assert r["refined"] and r["cos_refined_to_first"] > 0.99 and r["refined_at_sigma"] in (1.0, 2.0, 4.0, 8.0)


def test_global_estimator_also_recovers_a_linear_world():
    p = Planted()
    ds, _ = discover(p, PlantedMeasure(p), n=200, holdout=4, estimator="global", progress=False)
    assert all(abs(float(ds[r].vector @ u)) >= 0.95 for r, u in p.u.items())


def test_no_faces_stops_with_a_count_and_writes_nothing():
    p = Planted()
    with pytest.raises(NoFaceError, match=r"^64 of 64 samples had no face"):
        discover(p, PlantedMeasure(p, faceless=True), n=500, batch=32, progress=False)


def test_too_few_samples_is_a_clear_error():
    p = Planted()
    with pytest.raises(ValueError, match="more measured samples than w_dim"):
        discover(p, PlantedMeasure(p), n=10, holdout=2, progress=False)


# -- the demo generator, read by its probes --------------------------------------------------------
@pytest.fixture(scope="module")
def demo_discovered(tmp_path_factory):
    from engine.demo_world.probe_measure import ProbeMeasure
    from engine.synthesis.checkpoints import load_generator

    torch.set_num_threads(1)
    G = load_generator("demo")
    return G, *discover(G, ProbeMeasure(), n=400, holdout=6, progress=False)


def test_demo_mouth_and_head_directions_are_found_and_yaw_is_left_out(demo_discovered):
    G, ds, rep = demo_discovered
    shipped = DirectionSet.load("engine/assets/demo_directions.json")
    assert "mouth_open" in ds and "jaw" in ds
    # demo world v2 renders pitch and roll from learned directions, yaw barely (probe gain 0.07 of the
    # renderer's, docs/demo_world.md): discovery finds pitch and roll along the learned ones, and
    # leaves yaw out
    for h in ("head_pitch", "head_roll"):
        assert h in ds and h not in rep["left_out"], (h, rep["left_out"])
        assert abs(float(ds[h].vector @ shipped[h].vector)) > 0.3, (h, float(ds[h].vector @ shipped[h].vector))
    assert "head_yaw" in rep["left_out"], rep["left_out"]
    assert rep["roles"]["mouth_open"]["gain_per_sigma"] > 0.01
    # the learned direction and the discovered one point the same way (0.69 at n = 1000; see README)
    assert float(ds["mouth_open"].vector @ shipped["mouth_open"].vector) > 0.5
    # calibrated: one unit is the motion the shipped LSTM means by it, whatever the σ of the identities
    unit = rep["roles"]["mouth_open"]["unit"]
    assert unit["unit"] == "calibrated" and not unit["capped"] and unit["sigma_per_unit"] > 1.5
    assert unit["reached"] == pytest.approx(UNIT_MOTION["mouth_open"][1], abs=0.03)
    assert 0.6 < ds["mouth_open"].stdev / shipped["mouth_open"].stdev < 1.4


def test_cli_writes_set_report_grid_and_reuses_the_cache(tmp_path, monkeypatch, capsys):
    from PIL import Image

    from engine.directions import main
    from engine.latent.latent_basis import generator_hash
    from engine.latent.defaults import cached_path
    from engine.synthesis.checkpoints import load_generator

    monkeypatch.setenv("STYLECAST_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "d" / "demo.json"
    argv = ["discover", "--measure", "probes", "--n", "200", "--holdout", "4", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    ds = DirectionSet.load(out)
    report = json.loads(out.with_name("demo.report.json").read_text())
    assert set(report["roles"]) == set(ds.names) and "mouth_open" in ds
    grid = Image.open(out.with_name("demo.grid.png"))
    assert grid.size[1] > 128 * len(ds)                                   # a row (+ labels) per role
    cached = cached_path(generator_hash(load_generator("demo")), "probes")
    assert cached.is_file() and DirectionSet.load(cached).names == ds.names
    capsys.readouterr()
    assert main(argv) == 0                                                # second time: from the cache
    assert "using the cached set" in capsys.readouterr().err
    # other settings are another discovery, not the cached one (a --refine run was served the plain set)
    assert report["settings"]["refine"] is False and report["settings"]["n"] == 200
    assert main(argv + ["--no-calibrate", "--no-grid"]) == 0
    err = capsys.readouterr().err
    assert "discovered with other settings (calibrate)" in err and "using the cached set" not in err
    report2 = json.loads(out.with_name("demo.report.json").read_text())
    assert report2["calibrated"] is False and report2["settings"]["calibrate"] is False
    assert all(r.get("unit") is None for r in report2["roles"].values())


def test_cli_on_a_generator_without_faces_fails_in_one_line(tmp_path, monkeypatch, capsys):
    from engine.directions import main

    monkeypatch.setenv("STYLECAST_CACHE", str(tmp_path / "cache"))

    class Faceless:
        name, roles = "probes", {"mouth_open": "mouth_open"}

        def __init__(self, *a, **k):
            pass

        def __call__(self, images):
            return {"mouth_open": np.full(len(images), np.nan)}

        def detected(self, images):
            return np.zeros(len(images), bool)

    monkeypatch.setattr("engine.directions.make_measure", lambda *a, **k: Faceless())
    with pytest.raises(SystemExit) as exc:
        main(["discover", "--generator", "random", "--measure", "probes", "--out", str(tmp_path / "x.json"),
              "--quiet"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1
    assert "64 of 64 samples had no face" in err and not (tmp_path / "x.json").exists()
