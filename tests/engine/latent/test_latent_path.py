"""LatentPath: ws = anchor + Σ mask · clamp(x) · stdev · V, checked against a numpy loop."""
import numpy as np
import pytest
import torch

from engine.latent.latent_basis import LatentBasis
from engine.latent.path import LatentPath
from engine.synthesis.networks import Generator, GeneratorConfig

NUM_WS, W_DIM, K = 6, 16, 5


def make_basis():
    rng = np.random.RandomState(0)
    q, _ = np.linalg.qr(rng.randn(W_DIM, K))
    ev = np.array([4.0, 2.0, 1.0, 0.5, 0.25])
    return LatentBasis(directions=q.T, stdev=np.sqrt(ev), mean=rng.randn(W_DIM), explained_variance=ev,
                       origin="global", checkpoint_hash="0" * 64)


def reference(basis, anchor_ws, comps, masks, x, clamp):
    out = np.repeat(anchor_ws[None].astype(np.float64), len(x), axis=0)
    for b in range(len(x)):
        for j, c in enumerate(comps):
            xv = float(np.clip(x[b, j], -clamp, clamp)) if clamp is not None else float(x[b, j])
            for layer in range(anchor_ws.shape[0]):
                out[b, layer] += masks[j, layer] * xv * basis.stdev[c] * basis.directions[c]
    return out


def test_matches_the_formula_with_masks_and_clamp():
    basis = make_basis()
    rng = np.random.RandomState(1)
    comps = [0, 2, 4]
    masks = np.stack([LatentPath.layer_range_mask(NUM_WS, 0, 1), LatentPath.layer_range_mask(NUM_WS, 2, 5),
                      np.ones(NUM_WS, bool)])
    path = LatentPath(basis, NUM_WS, components=comps, layer_masks=masks, clamp_sigma=2.0)
    anchor = rng.randn(NUM_WS, W_DIM).astype(np.float32)
    path.set_anchor(ws=anchor)
    x = rng.randn(7, 3) * 2.5  # some beyond ±2σ
    ws = path(x)
    assert ws.shape == (7, NUM_WS, W_DIM) and ws.dtype == torch.float32
    np.testing.assert_allclose(ws.numpy(), reference(basis, anchor, comps, masks.astype(float), x, 2.0),
                               rtol=1e-5, atol=1e-5)
    # a direction masked off a layer leaves that layer alone
    only0 = path(np.array([[1.5, 0.0, 0.0]]))[0]
    np.testing.assert_allclose(only0[2:].numpy(), anchor[2:], atol=1e-6)
    np.testing.assert_allclose((only0[0] - torch.from_numpy(anchor[0])).numpy(),
                               1.5 * 2.0 * basis.directions[0], rtol=1e-5, atol=1e-6)
    # zero control is the anchor; torch input and 1-D input work
    torch.testing.assert_close(path(torch.zeros(3))[0], torch.from_numpy(anchor))


def test_clamp_in_stdev_units_and_coords_roundtrip():
    basis = make_basis()
    path = LatentPath(basis, NUM_WS, clamp_sigma=3.0)
    w = basis.mean
    path.set_anchor(w)
    x = np.array([[0.5, -1.0, 2.0, 10.0, -10.0]])
    ws = path(x)
    for layer in range(NUM_WS):
        np.testing.assert_allclose(basis.coords(ws[0, layer].numpy()), [0.5, -1.0, 2.0, 3.0, -3.0], atol=1e-5)
    free = LatentPath(basis, NUM_WS, clamp_sigma=None)
    free.set_anchor(w[None])
    np.testing.assert_allclose(basis.coords(free(x)[0, 0].numpy()), x[0], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(path(np.array([[np.nan, 0, 0, 0, 0]])).numpy(), path(np.zeros((1, 5))).numpy())


def test_anchor_from_z_uses_the_mapping():
    torch.manual_seed(0)
    G = Generator(GeneratorConfig.nvlabs(z_dim=32, w_dim=32, img_resolution=16, channel_base=256,
                                         channel_max=32, mapping_layers=3))
    rng = np.random.RandomState(0)
    q, _ = np.linalg.qr(rng.randn(32, 4))
    basis = LatentBasis(q.T, np.ones(4), np.zeros(32), np.ones(4), "global", "h")
    path = LatentPath(basis, G.num_ws)
    z = rng.randn(32)
    path.set_anchor(z=z, G=G, truncation_psi=0.7)
    with torch.no_grad():
        ref = G.mapping(torch.from_numpy(z[None]).float(), truncation_psi=0.7)
    torch.testing.assert_close(path(np.zeros((1, 4))), ref)


def test_errors():
    basis = make_basis()
    with pytest.raises(RuntimeError, match="set_anchor"):
        LatentPath(basis, NUM_WS)(np.zeros((1, K)))
    with pytest.raises(ValueError, match="out of range"):
        LatentPath(basis, NUM_WS, components=[0, 5])
    with pytest.raises(ValueError, match="layer_masks"):
        LatentPath(basis, NUM_WS, components=[0, 1], layer_masks=np.ones((3, NUM_WS)))
    with pytest.raises(ValueError, match="clamp_sigma"):
        LatentPath(basis, NUM_WS, clamp_sigma=0.0)
    with pytest.raises(ValueError, match="layer range"):
        LatentPath.layer_range_mask(NUM_WS, 3, 6)
    p = LatentPath(basis, NUM_WS)
    with pytest.raises(ValueError, match="exactly one"):
        p.set_anchor()
    with pytest.raises(ValueError, match="anchor w"):
        p.set_anchor(np.zeros(W_DIM + 1))
    with pytest.raises(ValueError, match="needs the generator"):
        p.set_anchor(z=np.zeros(4))
    p.set_anchor(np.zeros(W_DIM))
    with pytest.raises(ValueError, match=r"x must be \[B, 5\]"):
        p(np.zeros((2, 4)))
    np.testing.assert_array_equal(LatentPath.layer_range_mask(NUM_WS, 1, 2), [0, 1, 1, 0, 0, 0])
