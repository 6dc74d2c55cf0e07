"""LatentBasis files and generator_hash: content-addressed, device/dtype independent, strict on load."""
import numpy as np
import pytest
import torch

from engine.latent.latent_basis import LatentBasis, generator_hash
from engine.synthesis.networks import Generator, GeneratorConfig


def small_generator(seed=0):
    torch.manual_seed(seed)
    return Generator(GeneratorConfig.nvlabs(z_dim=32, w_dim=32, img_resolution=16, channel_base=256,
                                            channel_max=32, mapping_layers=3))


def random_basis(k=5, w_dim=8, z_dim=None, origin="global"):
    rng = np.random.RandomState(0)
    q, _ = np.linalg.qr(rng.randn(w_dim, k))
    zd = None
    if z_dim:
        zd, _ = np.linalg.qr(rng.randn(z_dim, k))
        zd = zd.T
    ev = np.sort(rng.rand(k))[::-1] + 0.1
    return LatentBasis(directions=q.T, stdev=np.sqrt(ev), mean=rng.randn(w_dim), explained_variance=ev,
                       origin=origin, checkpoint_hash="ab" * 32,
                       meta={"n_samples": 10, "seed": 3, "total_variance": float(ev.sum() * 2)}, z_directions=zd)


def test_hash_depends_on_content_only():
    a, b, c = small_generator(0), small_generator(0), small_generator(1)
    ha = generator_hash(a)
    assert len(ha) == 64 and int(ha, 16) >= 0
    assert ha == generator_hash(b) != generator_hash(c)
    assert generator_hash(a.to(torch.float16)) != ha  # float16 rounding changes the values
    d = small_generator(0).double()
    assert generator_hash(d) == ha  # float32 bytes of the same values


def test_hash_is_cached_but_follows_in_place_edits():
    G = small_generator(0)
    h0 = generator_hash(G)
    assert G._stylecast_hash[1] == h0 and generator_hash(G) == h0
    with torch.no_grad():
        G.mapping.fc0.weight[0, 0] += 1.0
    h1 = generator_hash(G)
    assert h1 != h0
    with torch.no_grad():
        G.mapping.fc0.weight[0, 0] -= 1.0
    assert generator_hash(G) == h0 == generator_hash(small_generator(0))


def test_save_load_roundtrip(tmp_path):
    for basis in (random_basis(), random_basis(z_dim=6, origin="local")):
        p = basis.save(tmp_path / f"{basis.origin}.npz")
        back = LatentBasis.load(p)
        for name in ("directions", "stdev", "mean", "explained_variance"):
            np.testing.assert_array_equal(getattr(back, name), getattr(basis, name))
            assert getattr(back, name).dtype == getattr(basis, name).dtype
        assert back.origin == basis.origin and back.checkpoint_hash == basis.checkpoint_hash
        assert back.meta == basis.meta and back.k == 5
        if basis.z_directions is None:
            assert back.z_directions is None
        else:
            np.testing.assert_array_equal(back.z_directions, basis.z_directions)
    assert not list(tmp_path.glob("*.part"))


def test_coords_inverts_the_span():
    b = random_basis()
    x = np.random.RandomState(1).randn(4, b.k)
    w = b.mean + (x * b.stdev) @ b.directions
    np.testing.assert_allclose(b.coords(w), x, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(b.coords(torch.from_numpy(w)), x, rtol=1e-4, atol=1e-5)
    r = b.explained_variance_ratio
    np.testing.assert_allclose(r, b.explained_variance / b.meta["total_variance"])


def test_bad_files_are_clear_errors(tmp_path):
    np.save(tmp_path / "x.npy", np.zeros(3))
    np.savez(tmp_path / "y.npz", a=np.zeros(3))
    (tmp_path / "z.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a StyleCast latent basis"):
        LatentBasis.load(tmp_path / "y.npz")
    with pytest.raises(ValueError, match="z.npz"):
        LatentBasis.load(tmp_path / "z.npz")
    with pytest.raises(ValueError):
        LatentBasis.load(tmp_path / "x.npy")
    with pytest.raises(FileNotFoundError, match="missing.npz"):
        LatentBasis.load(tmp_path / "missing.npz")


def test_invalid_fields_rejected():
    b = random_basis()
    with pytest.raises(ValueError, match="origin"):
        LatentBasis(b.directions, b.stdev, b.mean, b.explained_variance, "other", "h")
    with pytest.raises(ValueError, match="mean"):
        LatentBasis(b.directions, b.stdev, b.mean[:3], b.explained_variance, "global", "h")
    with pytest.raises(ValueError, match="stdev"):
        LatentBasis(b.directions, b.stdev[:2], b.mean, b.explained_variance, "global", "h")


def test_check_generator():
    G = small_generator(0)
    b = random_basis(w_dim=32)
    with pytest.raises(ValueError, match="not this one"):
        b.check_generator(G)
    b.checkpoint_hash = generator_hash(G)
    b.check_generator(G)
