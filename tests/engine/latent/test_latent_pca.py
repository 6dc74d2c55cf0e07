"""Global PCA against numpy on the same samples; deterministic sampling; the on-disk cache."""
import numpy as np
import pytest
import torch

from engine.latent import pca
from engine.latent.latent_basis import LatentBasis, generator_hash
from engine.latent.pca import CHUNK, global_basis, iter_w_batches, sample_z_chunk
from engine.synthesis.networks import Generator, GeneratorConfig, demo_generator

N = 20_000


def small_generator(seed=0):
    torch.manual_seed(seed)
    return Generator(GeneratorConfig.nvlabs(z_dim=32, w_dim=32, img_resolution=16, channel_base=256,
                                            channel_max=32, mapping_layers=3))


@pytest.fixture(scope="module")
def demo():
    return demo_generator()


def reference_w(G, n, seed):
    """The documented sample stream, drawn and mapped in one go."""
    z = torch.cat([sample_z_chunk(seed, i, G.z_dim) for i in range(-(-n // CHUNK))])[:n]
    with torch.no_grad():
        return G.mapping.forward_w(z).double().numpy()


def principal_angles(A, B):
    """Principal angles (radians) between the row spaces of A [k, d] and B [k, d] (orthonormal rows)."""
    s = np.linalg.svd(A @ B.T, compute_uv=False)
    return np.arccos(np.clip(s, -1.0, 1.0))


def check_against_numpy(G, basis, n, seed, k):
    w = reference_w(G, n, seed)
    cov = np.cov(w, rowvar=False, ddof=1)
    evals, evecs = np.linalg.eigh(cov)
    order = np.argsort(evals)[::-1][:k]
    ref_vals, ref_vecs = evals[order], evecs[:, order].T
    np.testing.assert_allclose(basis.explained_variance, ref_vals, rtol=1e-6)
    np.testing.assert_allclose(basis.stdev, np.sqrt(ref_vals), rtol=1e-5)
    np.testing.assert_allclose(basis.mean, w.mean(axis=0), rtol=1e-5, atol=1e-5 * np.abs(w).max())
    V = basis.directions.astype(np.float64)
    np.testing.assert_allclose(V @ V.T, np.eye(k), atol=1e-5)
    # the whole top-k subspace, and each direction up to sign (eigenvalues here are distinct)
    assert principal_angles(V, ref_vecs).max() < 1e-3
    gaps = -np.diff(ref_vals) / ref_vals[0]
    distinct = np.nonzero(np.concatenate([[1.0], gaps]) > 1e-3)[0]
    dots = np.abs(np.sum(V * ref_vecs, axis=1))
    np.testing.assert_allclose(dots[distinct[distinct < k - 1]], 1.0, atol=1e-4)
    np.testing.assert_allclose(basis.meta["total_variance"], np.trace(cov), rtol=1e-9)


def test_matches_numpy_eigh_small_generator():
    G = small_generator()
    b = global_basis(G, n_samples=N, seed=1, batch_size=5000, cache_dir=False, progress=False)
    assert b.origin == "global" and b.k == 32 and b.checkpoint_hash == generator_hash(G)
    assert b.meta["n_samples"] == N and b.meta["seed"] == 1
    check_against_numpy(G, b, N, 1, 32)
    np.testing.assert_allclose(b.explained_variance_ratio.sum(), 1.0, rtol=1e-9)


def test_matches_numpy_eigh_demo_top_k(demo):
    b = global_basis(demo, n_samples=N, k=20, seed=0, cache_dir=False, progress=False)
    assert b.k == 20 and b.directions.shape == (20, 128)
    check_against_numpy(demo, b, N, 0, 20)
    assert b.explained_variance_ratio.sum() < 1.0


def test_stable_with_a_large_mean():
    """w = 1000 + O(1): float32 E[w²] - E[w]² would lose the covariance; the accumulation must not."""
    G = small_generator()
    with torch.no_grad():
        G.mapping.fc2.bias.fill_(1000.0 / G.mapping.fc2.bias_gain)
    b = global_basis(G, n_samples=N, seed=2, cache_dir=False, progress=False)
    assert float(b.mean.min()) > 1000.0  # lrelu gain √2: about 1414
    check_against_numpy(G, b, N, 2, 32)


def test_sampling_is_deterministic_and_batch_size_free():
    G = small_generator()
    a = torch.cat(list(iter_w_batches(G, 10_000, seed=5, batch_size=3000)))
    b = torch.cat(list(iter_w_batches(G, 10_000, seed=5, batch_size=CHUNK * 3)))
    c = torch.cat(list(iter_w_batches(G, 12_345, seed=5, batch_size=CHUNK)))
    d = torch.cat(list(iter_w_batches(G, 10_000, seed=6)))
    assert a.shape == (10_000, 32) and c.shape == (12_345, 32)
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(c[:10_000], a, rtol=1e-5, atol=1e-5)  # N is a prefix of a larger N
    assert not torch.allclose(a, d)
    b1 = global_basis(G, n_samples=9000, seed=5, batch_size=2000, cache_dir=False, progress=False)
    b2 = global_basis(G, n_samples=9000, seed=5, batch_size=9000, cache_dir=False, progress=False)
    np.testing.assert_allclose(b1.explained_variance, b2.explained_variance, rtol=1e-6)


def test_cache_hit_and_misses(tmp_path, monkeypatch):
    G = small_generator()
    calls = []
    real = pca.iter_w_batches

    def counting(*args, **kwargs):
        calls.append(kwargs.get("seed"))
        return real(*args, **kwargs)

    monkeypatch.setattr(pca, "iter_w_batches", counting)
    kw = dict(n_samples=8192, k=8, seed=0, cache_dir=tmp_path, progress=False)
    first = global_basis(G, **kw)
    assert len(calls) == 1 and len(list(tmp_path.glob("*.npz"))) == 1
    again = global_basis(G, **kw)
    assert len(calls) == 1, "second call must come from the cache"
    for name in ("directions", "stdev", "mean", "explained_variance"):
        np.testing.assert_array_equal(getattr(again, name), getattr(first, name))
    assert again.meta == first.meta
    for change in (dict(seed=1), dict(n_samples=8000), dict(k=7)):
        global_basis(G, **{**kw, **change})
    assert len(calls) == 4
    global_basis(small_generator(1), **kw)
    assert len(calls) == 5 and len(list(tmp_path.glob("*.npz"))) == 5
    assert not list(tmp_path.glob("*.part"))


def test_corrupt_cache_file_is_recomputed(tmp_path):
    G = small_generator()
    kw = dict(n_samples=4096, k=4, seed=0, cache_dir=tmp_path, progress=False)
    good = global_basis(G, **kw)
    (path,) = tmp_path.glob("*.npz")
    path.write_bytes(b"garbage")
    again = global_basis(G, **kw)
    np.testing.assert_array_equal(again.directions, good.directions)
    assert LatentBasis.load(path).k == 4


def test_default_cache_dir_follows_env(tmp_path, monkeypatch):
    monkeypatch.setenv("STYLECAST_CACHE", str(tmp_path))
    global_basis(small_generator(), n_samples=4096, k=2, progress=False)
    assert len(list((tmp_path / "latent").glob("global-*.npz"))) == 1


def test_bad_arguments():
    G = small_generator()
    with pytest.raises(ValueError, match="k must be"):
        global_basis(G, n_samples=100, k=33, cache_dir=False)
    with pytest.raises(ValueError, match="n_samples"):
        global_basis(G, n_samples=1, cache_dir=False)
