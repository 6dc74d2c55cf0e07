"""Local basis: exact Jacobian vs float64 central differences, SVD, traversal on the manifold."""
import copy

import numpy as np
import pytest
import torch

from engine.latent.latent_basis import generator_hash
from engine.latent.local import TRAVERSE_MODES, local_basis, local_traverse, mapping_jacobian, singular_spectrum
from engine.synthesis.networks import Generator, GeneratorConfig, demo_generator


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Per-z Jacobians are tiny ops; on a busy 2-core machine two OpenMP threads make them ~30x slower."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def G():
    torch.manual_seed(0)
    return Generator(GeneratorConfig.nvlabs(z_dim=32, w_dim=32, img_resolution=16, channel_base=256,
                                            channel_max=32, mapping_layers=3))


@pytest.fixture(scope="module")
def demo():
    return demo_generator()


def finite_difference_jacobian(G, z, eps=1e-6):
    """Central differences in float64 on a double() copy of the mapping: [B, w_dim, z_dim]."""
    m = copy.deepcopy(G.mapping).double()
    z = torch.as_tensor(z, dtype=torch.float64)
    with torch.no_grad():
        cols = [(m.forward_w(z + eps * e) - m.forward_w(z - eps * e)) / (2 * eps)
                for e in torch.eye(z.shape[1], dtype=torch.float64)]
    return torch.stack(cols, dim=-1)


def test_jacobian_matches_finite_differences(G):
    z = torch.randn(4, 32, generator=torch.Generator().manual_seed(1))
    ref = finite_difference_jacobian(G, z)
    J64 = mapping_jacobian(G, z, dtype=torch.float64)
    J32 = mapping_jacobian(G, z)
    assert J64.shape == (4, 32, 32) and J64.dtype == torch.float64 and J32.dtype == torch.float32
    scale = ref.abs().max()
    assert (J64 - ref).abs().max() < 1e-7 * scale
    assert (J32.double() - ref).abs().max() < 1e-5 * scale
    assert G.mapping.fc0.weight.dtype == torch.float32  # the double copy is separate


def test_demo_jacobian_matches_finite_differences(demo):
    z = torch.randn(2, 128, generator=torch.Generator().manual_seed(2))
    ref = finite_difference_jacobian(demo, z)
    J = mapping_jacobian(demo, z, dtype=torch.float64)
    assert J.shape == (2, 128, 128)
    assert (J - ref).abs().max() < 1e-7 * ref.abs().max()


def test_radial_direction_is_null(G):
    """The mapping normalises z, so J z = 0 and the smallest singular value is ~0."""
    z = torch.randn(3, 32, generator=torch.Generator().manual_seed(3))
    J = mapping_jacobian(G, z, dtype=torch.float64)
    Jz = torch.einsum("bwz,bz->bw", J, z.double())
    # not exactly 0: the normalisation adds ε = 1e-8 to mean(z²)
    assert Jz.norm(dim=1).max() < 1e-7 * J.norm(dim=(1, 2)).max()
    s = singular_spectrum(G, z, dtype=torch.float64)
    assert s.shape == (3, 32) and np.all(np.diff(s, axis=1) <= 0)
    assert s[:, -1].max() < 1e-7 * s[:, 0].min() and np.all(s[:, -2] > 1e3 * s[:, -1])
    ref = np.linalg.svd(J.numpy(), compute_uv=False)
    np.testing.assert_allclose(s, ref, rtol=1e-9, atol=1e-12)


def test_local_basis_is_the_svd(G):
    z = np.random.RandomState(4).randn(32)
    b = local_basis(G, z, k=10)
    assert b.origin == "local" and b.k == 10 and b.checkpoint_hash == generator_hash(G)
    assert b.z_directions.shape == (10, 32)
    J = finite_difference_jacobian(G, z[None])[0].numpy()
    U, S, Vh = np.linalg.svd(J)
    np.testing.assert_allclose(b.stdev, S[:10], rtol=1e-4)
    np.testing.assert_allclose(b.explained_variance, S[:10].astype(np.float32).astype(np.float64) ** 2, rtol=1e-4)
    np.testing.assert_allclose(b.meta["singular_values"], S, rtol=1e-4, atol=1e-6 * S[0])
    np.testing.assert_allclose(b.meta["z"], z, rtol=1e-6)
    # each pair (u_i, v_i) is J's, with the same sign on both sides: J v_i = σ_i u_i
    np.testing.assert_allclose(J @ b.z_directions.T, b.directions.T * b.stdev, atol=1e-4 * S[0])
    np.testing.assert_allclose(np.abs(np.sum(b.directions * U[:, :10].T, axis=1)), 1.0, atol=1e-4)
    with torch.no_grad():
        np.testing.assert_allclose(b.mean, G.mapping.forward_w(torch.from_numpy(z[None]).float())[0], rtol=1e-6)
    full = local_basis(G, torch.from_numpy(z).float()[None])
    assert full.k == 32
    with pytest.raises(ValueError, match="one z"):
        local_basis(G, np.zeros((2, 32)))
    with pytest.raises(ValueError, match="k must be"):
        local_basis(G, z, k=33)


@pytest.mark.parametrize("mode", TRAVERSE_MODES)
def test_traverse_stays_on_manifold_and_moves_by_step(G, mode):
    """The mapping is piecewise linear (leaky ReLU), so its local directions turn abruptly where
    a unit changes sign: the displacement matches ``step`` for steps short of those kinks."""
    z0 = torch.from_numpy(np.random.RandomState(5).randn(1, 32)).float()
    b = local_basis(G, z0, dtype=torch.float64)
    m64 = copy.deepcopy(G.mapping).double()
    with torch.no_grad():
        w0 = m64.forward_w(z0.double())
    for direction, step in ((0, 2e-3), (2, -2e-3), (5, 1e-3)):
        z_new, w_new = local_traverse(G, z0, direction, step, dtype=torch.float64, mode=mode)
        with torch.no_grad():
            torch.testing.assert_close(w_new, m64.forward_w(z_new), rtol=0, atol=0)
        dw = (w_new - w0)[0].numpy()
        along = float(dw @ b.directions[direction])
        assert abs(along - step) < 0.02 * abs(step), (direction, along, step)
        assert np.linalg.norm(dw - along * b.directions[direction]) < 0.1 * abs(step)
    z_new, w_new = local_traverse(G, z0, 0, 0.3, mode=mode)  # float32, a long way: still exactly m(z_new)
    assert z_new.dtype == w_new.dtype == torch.float32
    with torch.no_grad():
        torch.testing.assert_close(w_new, G.mapping.forward_w(z_new), rtol=0, atol=0)
    assert abs(float(torch.linalg.vector_norm(w_new.double() - w0)) - 0.3) < 0.1


@pytest.mark.parametrize("mode", TRAVERSE_MODES)
def test_traverse_is_unit_speed_and_starts_along_the_local_direction(G, mode):
    """dw/ds is a unit vector, so the W path length is |step|; a tiny step equals the straight
    z step (h / σ_i) v_i to first order."""
    z0 = torch.from_numpy(np.random.RandomState(6).randn(1, 32)).double()
    b = local_basis(G, z0, dtype=torch.float64)
    step, n = 0.1, 32
    with torch.no_grad():
        pts = [copy.deepcopy(G.mapping).double().forward_w(z0)]
    z = z0
    for _ in range(n):
        z, w = local_traverse(G, z, 1, step / n, n_substeps=2, dtype=torch.float64, mode=mode)
        pts.append(w)
    seg = torch.cat(pts).diff(dim=0).norm(dim=1)
    np.testing.assert_allclose(float(seg.sum()), step, rtol=1e-2)
    h = 1e-4
    z_new, w_new = local_traverse(G, z0, 1, h, n_substeps=1, dtype=torch.float64, mode=mode)
    z_lin = z0 + h / float(b.stdev[1]) * torch.from_numpy(b.z_directions[1]).double()
    assert (z_new - z_lin).norm() < 1e-3 * (z_lin - z0).norm()


def test_traverse_arguments(G):
    z0 = torch.zeros(1, 32)
    z0[0, 0] = 1.0
    with pytest.raises(ValueError, match="direction"):
        local_traverse(G, z0, 32, 0.1)
    with pytest.raises(ValueError, match="direction"):
        local_traverse(G, z0, 3, 0.1, k=3)
    with pytest.raises(ValueError, match="finite"):
        local_traverse(G, z0, 0, float("nan"))
    with pytest.raises(ValueError, match="mode"):
        local_traverse(G, z0, 0, 0.1, mode="sideways")
    with pytest.raises(ValueError, match="z_dim"):
        local_traverse(G, torch.zeros(1, 31), 0, 0.1)
