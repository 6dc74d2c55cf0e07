"""engine.latent.calibrate: the unit of a discovered direction is the motion the shipped drivers mean.

On a planted linear world the unit is known in closed form; on the shipped demo generator the
learned directions (what the audio LSTM was trained on) must come out at one σ per unit, which
checks the constants of ``UNIT_MOTION`` against the assets they were measured on.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.latent.calibrate import UNIT_AT, UNIT_MOTION, calibrate
from engine.latent.direction_set import Direction, DirectionSet
from engine.latent.sources import GeneratorSource, read

W_DIM, NUM_WS = 8, 4


class Linear:
    """ws → "image" = ws; mouth = max(0, 0.3·mean_layers(ws)·u) (a hinge, like a closed mouth),
    jaw = 0.1·mean_layers(ws)·e (linear)."""

    num_ws, w_dim, checkpoint_hash = NUM_WS, W_DIM, "c" * 64

    def __init__(self):
        q, _ = np.linalg.qr(np.random.default_rng(1).standard_normal((W_DIM, W_DIM)))
        self.u, self.e = q[:, 0], q[:, 1]

    def sample_w(self, n, seed):
        return np.random.default_rng(seed).standard_normal((n, W_DIM))

    def render(self, ws):
        return np.array(ws, dtype=np.float64)


class LinearMeasure:
    name, identity_scale = "linear", 1.0
    roles = {"mouth": "mouth_open", "width": "jaw", "eyes": "blink"}
    scales = {"mouth": 1.0, "width": 2.0, "eyes": 1.0}

    def __init__(self, world):
        self.world = world

    def __call__(self, ws):
        m = ws.mean(axis=1)
        return {"mouth": np.maximum(0.0, 0.3 * m @ self.world.u), "width": 0.1 * m @ self.world.e,
                "eyes": np.zeros(len(ws))}

    def embed(self, ws):
        return ws.mean(axis=1)[:, 2:]


def _setup():
    world = Linear()
    m = LinearMeasure(world)
    ws0 = np.zeros((4, NUM_WS, W_DIM))                               # mouths at the hinge (closed)
    ds = DirectionSet()
    for name, v, sd in (("mouth_open", world.u, 0.5), ("jaw", world.e, 1.0), ("blink", np.eye(W_DIM)[7], 0.5)):
        ds.add(Direction(name, v, stdev=sd), checkpoint_hash=world.checkpoint_hash)
    return world, m, ws0, ds, {"mouth_open": "mouth", "jaw": "width", "blink": "eyes"}


def test_units_match_the_closed_form_on_a_linear_world():
    world, m, ws0, ds, keys = _setup()
    out, info = calibrate(world, m, ds, keys, ws0, read(m, ws0), m.scales)
    # mouth: 0.3 · UNIT_AT · stdev = UNIT_MOTION fraction · 1.0 (one-sided, from the closed mouth)
    side, frac = UNIT_MOTION["mouth_open"]
    assert side == "open"
    assert out["mouth_open"].stdev == pytest.approx(frac / (0.3 * UNIT_AT), rel=0.02)
    # jaw: (m(+t) − m(−t)) / 2 = 0.1 · UNIT_AT · stdev = 0.33 · 2.0
    assert out["jaw"].stdev == pytest.approx(UNIT_MOTION["jaw"][1] * 2.0 / (0.1 * UNIT_AT), rel=0.02)
    assert info["mouth_open"]["reached"] == pytest.approx(frac, rel=0.02) and info["mouth_open"]["capped"] is None
    assert info["mouth_open"]["sigma_per_unit"] == pytest.approx(out["mouth_open"].stdev / 0.5)
    assert out["blink"].stdev == 0.5 and info["blink"] == {"unit": "sigma"}  # no shipped driver's unit: σ
    assert [float(a.vector @ b.vector) for a, b in zip(out, ds)] == pytest.approx([1.0] * 3)
    assert out.checkpoint_hash == ds.checkpoint_hash


def test_unreachable_target_is_capped_and_said():
    world, m, ws0, ds, keys = _setup()
    out, info = calibrate(world, m, ds, keys, ws0, read(m, ws0), m.scales, max_sigma=1.5)
    assert info["mouth_open"]["capped"] == "max" and out["mouth_open"].stdev == pytest.approx(0.75)
    assert info["mouth_open"]["reached"] < info["mouth_open"]["target"]
    out, info = calibrate(world, m, ds, keys, ws0, read(m, ws0), m.scales, min_sigma=20.0, max_sigma=40.0)
    assert info["jaw"]["capped"] == "min" and out["jaw"].stdev == pytest.approx(20.0)


def test_shipped_learned_demo_directions_are_one_unit_each():
    """UNIT_MOTION was measured on these: they must calibrate to themselves (within the probes' spread)."""
    from engine.demo_world.probe_measure import ProbeMeasure
    from engine.synthesis.checkpoints import load_generator

    torch.set_num_threads(1)
    G = load_generator("demo")
    src, m = GeneratorSource(G), ProbeMeasure()
    w = src.sample_w(12, seed=99)                                      # other faces than the constants'
    ws0 = np.repeat(w[:, None, :], G.num_ws, axis=1)
    shipped = DirectionSet.load("engine/assets/demo_directions.json")
    keys = {role: key for key, role in m.roles.items()}
    _, info = calibrate(src, m, shipped, keys, ws0, read(m, src.render(ws0)), m.scales)
    for role in UNIT_MOTION:
        assert info[role]["sigma_per_unit"] == pytest.approx(1.0, abs=0.12), role
        assert info[role]["identity_distance_at_units"] < m.identity_scale
