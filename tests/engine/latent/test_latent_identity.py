"""Identity latents: seeds, .npy files, the mean face, truncation, interpolation."""
import math

import numpy as np
import pytest
import torch

from engine.latent.identity import (interpolate, load_ws_array, mean_ws, truncate, w_from_seed, ws_from_npy,
                                    z_from_seed)
from engine.synthesis.networks import Generator, GeneratorConfig, demo_generator


@pytest.fixture(scope="module")
def G():
    torch.manual_seed(0)
    g = Generator(GeneratorConfig.nvlabs(z_dim=32, w_dim=32, img_resolution=16, channel_base=256,
                                         channel_max=32, mapping_layers=3))
    with torch.no_grad():
        g.mapping.w_avg.copy_(g.mapping.forward_w(torch.randn(1000, 32)).mean(0))
    return g


def test_z_and_w_from_seed_follow_nvlabs(G):
    z = z_from_seed(7, 32)
    ref = np.random.RandomState(7).randn(1, 32)
    assert z.shape == (1, 32) and z.dtype == torch.float32
    np.testing.assert_allclose(z.numpy(), ref, rtol=1e-6)
    ws = w_from_seed(G, 7)
    assert ws.shape == (1, G.num_ws, 32)
    w = G.mapping.forward_w(torch.from_numpy(ref).float())
    for layer in range(G.num_ws):
        torch.testing.assert_close(ws[0, layer], w[0])
    wt = w_from_seed(G, 7, truncation_psi=0.5, truncation_cutoff=2)
    avg = G.mapping.w_avg
    torch.testing.assert_close(wt[0, 0], avg + 0.5 * (w[0] - avg))
    torch.testing.assert_close(wt[0, 2:], ws[0, 2:])


def test_demo_seed_matches_mapping():
    demo = demo_generator()
    z = torch.from_numpy(np.random.RandomState(3).randn(1, 128)).float()
    torch.testing.assert_close(w_from_seed(demo, 3), demo.mapping(z))


def test_mean_ws_and_truncate(G):
    m = mean_ws(G)
    assert m.shape == (1, G.num_ws, 32)
    torch.testing.assert_close(m[0, 3], G.mapping.w_avg)
    ws = w_from_seed(G, 1)
    torch.testing.assert_close(truncate(G, ws, 0.0), m)
    torch.testing.assert_close(truncate(G, ws, 1.0), ws)
    half = truncate(G, ws.numpy(), 0.5, 3)
    torch.testing.assert_close(half[:, :3], 0.5 * (ws[:, :3] + m[:, :3]))
    torch.testing.assert_close(half[:, 3:], ws[:, 3:])
    with pytest.raises(ValueError, match="ws must be"):
        truncate(G, ws[0], 0.5)


def test_ws_from_npy_shapes(G, tmp_path):
    L = G.num_ws
    w1 = np.random.RandomState(0).randn(32).astype(np.float32)
    w2 = np.random.RandomState(1).randn(3, 32)
    w3 = np.random.RandomState(2).randn(2, L, 32).astype(np.float32)
    for name, arr in (("a", w1), ("b", w2), ("c", w3)):
        np.save(tmp_path / f"{name}.npy", arr)
    a, b, c = (ws_from_npy(tmp_path / f"{n}.npy", G) for n in "abc")
    assert a.shape == (1, L, 32) and b.shape == (3, L, 32) and c.shape == (2, L, 32)
    assert b.dtype == torch.float32
    np.testing.assert_array_equal(a[0, 5].numpy(), w1)
    np.testing.assert_allclose(b[2, 0].numpy(), w2[2], rtol=1e-6)
    np.testing.assert_array_equal(c.numpy(), w3)


@pytest.mark.parametrize("content,needle", [
    (np.zeros((2, 5, 7), np.float32), "needs [N, 6, 32] or [N, 32]"),
    (np.zeros((2, 31), np.float32), "latents have shape (2, 31)"),
    (np.zeros((0, 32), np.float32), "holds no latents"),
    (np.arange(32), "floating point"),
    (np.full(32, np.nan, np.float32), "NaN"),
])
def test_ws_from_npy_errors(G, tmp_path, content, needle):
    np.save(tmp_path / "bad.npy", content)
    with pytest.raises(ValueError) as e:
        ws_from_npy(tmp_path / "bad.npy", G)
    assert needle in str(e.value) and "bad.npy" in str(e.value)


def test_ws_from_npy_unreadable(G, tmp_path):
    with pytest.raises(FileNotFoundError, match="nope.npy: no such file"):
        ws_from_npy(tmp_path / "nope.npy", G)
    (tmp_path / "junk.npy").write_bytes(b"junk")
    with pytest.raises(ValueError, match="not a readable .npy"):
        load_ws_array(tmp_path / "junk.npy", 6, 32)
    np.savez(tmp_path / "arch.npz", a=np.zeros(32))
    with pytest.raises(ValueError, match="npz"):
        load_ws_array(tmp_path / "arch.npz", 6, 32)


def test_linear_interpolation():
    a, b = torch.randn(2, 8, 5), torch.randn(2, 8, 5)
    torch.testing.assert_close(interpolate(a, b, 0.0), a)
    torch.testing.assert_close(interpolate(a, b, 1.0), b)
    torch.testing.assert_close(interpolate(a, b, 0.25), 0.75 * a + 0.25 * b)
    seq = interpolate(a.numpy(), b.numpy(), [0.0, 0.5, 1.0])
    assert seq.shape == (3, 2, 8, 5)
    torch.testing.assert_close(seq[1], (a + b) / 2)


def test_slerp():
    rng = np.random.RandomState(0)
    a, b = rng.randn(4, 16), rng.randn(4, 16)
    a *= 3.0 / np.linalg.norm(a, axis=-1, keepdims=True)
    b *= 3.0 / np.linalg.norm(b, axis=-1, keepdims=True)
    a, b = torch.from_numpy(a), torch.from_numpy(b)
    ts = np.linspace(0, 1, 5)
    out = interpolate(a, b, ts, mode="slerp")
    assert out.shape == (5, 4, 16) and out.dtype == torch.float64
    torch.testing.assert_close(out[0], a)
    torch.testing.assert_close(out[-1], b)
    torch.testing.assert_close(out.norm(dim=-1), torch.full((5, 4), 3.0, dtype=torch.float64))
    omega = torch.arccos((a * b).sum(-1) / 9.0)
    for t, o in zip(ts, out):
        angle = torch.arccos(((a * o).sum(-1) / 9.0).clamp(-1, 1))
        torch.testing.assert_close(angle, omega * t, atol=1e-6, rtol=1e-6)
    # different norms: the norm is interpolated linearly; parallel endpoints fall back to lerp
    c = 2.0 * a
    mid = interpolate(a, c, 0.5, mode="slerp")
    torch.testing.assert_close(mid, 1.5 * a)
    with pytest.raises(ValueError, match="mode"):
        interpolate(a, b, 0.5, mode="cubic")
    with pytest.raises(ValueError, match="same shape"):
        interpolate(a, b[:2], 0.5)
    assert math.isclose(float(interpolate(torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]), 0.5,
                                          mode="slerp")[0]), math.sqrt(0.5), rel_tol=1e-6)
