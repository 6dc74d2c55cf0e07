"""engine.demo_world.name_directions: attribute directions in W by ridge regression of measured
image attributes on w, orthogonal in priority order, named by motion role."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.demo_world.name_directions import fit_directions, sample_measurements
from engine.synthesis.networks import Generator, GeneratorConfig


def test_recovers_planted_directions():
    rng = np.random.default_rng(0)
    w_dim, n = 16, 4000
    A = rng.standard_normal((w_dim, w_dim))
    w = rng.standard_normal((n, w_dim)) @ A.T * 0.5 + 1.0          # correlated, off-centre w
    t = {a: rng.standard_normal(w_dim) for a in ("yaw", "mouth_open", "blink")}
    values = {a: w @ v + 0.05 * rng.standard_normal(n) for a, v in t.items()}
    ds, rep = fit_directions(w, values, ridge=1e-6, checkpoint_hash="c" * 64)
    assert ds.names == ["head_yaw", "mouth_open", "blink"]               # priority order, role names
    V = np.stack([ds[r].vector for r in ds.names]).astype(np.float64)
    np.testing.assert_allclose(V @ V.T, np.eye(3), atol=1e-5)             # orthonormal
    # the regression coefficient is recovered: the first direction is the planted one (up to scale)
    assert V[0] @ t["yaw"] / np.linalg.norm(t["yaw"]) > 0.999
    assert all(rep[a]["r2"] > 0.99 for a in t)
    # + increases the attribute; stdev is the spread of w along the direction
    wc = w - w.mean(0)
    for a, role in (("yaw", "head_yaw"), ("mouth_open", "mouth_open")):
        assert np.corrcoef(wc @ ds[role].vector, values[a])[0, 1] > 0
        assert ds[role].stdev == pytest.approx(np.std(wc @ ds[role].vector.astype(np.float64), ddof=1), rel=1e-5)
    with pytest.raises(ValueError, match="no motion role"):
        fit_directions(w, {"sparkle": values["yaw"]}, attributes=["sparkle"])
    with pytest.raises(ValueError, match="N > w_dim"):
        fit_directions(w[:10], {"yaw": values["yaw"][:10]})


def test_found_direction_moves_the_measured_attribute_in_a_real_generator():
    torch.manual_seed(0)
    G = Generator(GeneratorConfig(z_dim=32, w_dim=32, mapping_layers=2, img_resolution=16,
                                  channels={4: 32, 8: 16, 16: 8})).eval().requires_grad_(False)

    def measure(images):                    # a stand-in probe: brightness of the top half
        return {"mouth_open": images[:, :8].astype(np.float64).mean(axis=(1, 2, 3))}

    w, values = sample_measurements(G, measure, 600, seed=1)
    assert w.shape == (600, 32) and values["mouth_open"].shape == (600,)
    ds, rep = fit_directions(w, values)
    v = torch.from_numpy(ds["mouth_open"].vector.astype(np.float32))
    step = 2 * ds["mouth_open"].stdev
    z = torch.randn(64, G.z_dim, generator=torch.Generator().manual_seed(99))
    with torch.no_grad():
        ws = G.mapping(z)
        before = measure(((G.synthesis(ws, noise_mode="const") + 1) * 127.5).clamp(0, 255)
                         .permute(0, 2, 3, 1).numpy().astype(np.uint8))["mouth_open"]
        after = measure(((G.synthesis(ws + step * v, noise_mode="const") + 1) * 127.5).clamp(0, 255)
                        .permute(0, 2, 3, 1).numpy().astype(np.uint8))["mouth_open"]
    assert rep["mouth_open"]["r2"] > 0.3
    assert np.mean(after > before) > 0.9, (rep, np.mean(after - before))
