"""Global latent basis: PCA of the mapping network's output w over many random z (GANSpace).

The N samples stream through the mapping network in batches and are never held at once. Per
batch the w are centred on the batch mean and their scatter ``Xcᵀ Xc`` accumulated in float64;
batches merge with Chan et al.'s pairwise formula

    M2 = M2_a + M2_b + (μ_b − μ_a)(μ_b − μ_a)ᵀ · n_a n_b / n

which is exact (no E[x²] − E[x]² cancellation). The mapping itself runs in float32 under
``torch.inference_mode``; only the accumulation is float64.

Sampling is deterministic and independent of ``batch_size``: sample j is row ``j mod CHUNK`` of
``torch.randn(CHUNK, z_dim)`` drawn from a ``torch.Generator`` seeded by ``(seed, j // CHUNK)``.
So the first N samples of a run with N' > N are exactly the samples of the run with N.

Results are cached as .npz under ``<cache_dir>/latent/`` keyed by the generator's content hash,
N, k and seed, written atomically, so a second call returns at once.
"""
from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Iterator, Optional, Union

import numpy as np
import torch
from tqdm import tqdm

from engine.synthesis.presets import cache_dir as default_cache_dir

from .latent_basis import LatentBasis, generator_hash

__all__ = ["global_basis", "iter_w_batches", "sample_z_chunk", "pca_from_covariance", "basis_cache_path",
           "CHUNK", "DEFAULT_N_SAMPLES"]

CHUNK = 4096            # samples per seeded random draw (fixes the sample set whatever the batch size)
DEFAULT_N_SAMPLES = 1_000_000


def sample_z_chunk(seed: int, index: int, z_dim: int) -> torch.Tensor:
    """z for samples ``index*CHUNK ... (index+1)*CHUNK - 1`` of the stream for ``seed``: [CHUNK, z_dim] float32."""
    ss = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(seed) >> 32, int(index)])
    g = torch.Generator().manual_seed(int(ss.generate_state(2, dtype=np.uint64)[0] >> 1))
    return torch.randn(CHUNK, z_dim, generator=g)


def _mapping_on(G, device: torch.device) -> torch.nn.Module:
    mapping = G.mapping
    p = next(mapping.parameters(), None)
    if p is not None and (p.device != device or p.dtype != torch.float32):
        mapping = copy.deepcopy(mapping).to(device=device, dtype=torch.float32)
    return mapping


def iter_w_batches(G, n_samples: int, *, seed: int = 0, batch_size: int = 16384,
                   device: Union[str, torch.device] = "cpu") -> Iterator[torch.Tensor]:
    """Yield the mapped w [b, w_dim] (float32, on ``device``) of the first ``n_samples`` z of the
    stream for ``seed``, in batches of about ``batch_size`` (rounded up to whole chunks)."""
    device = torch.device(device)
    mapping = _mapping_on(G, device)
    chunks_per_batch = max(1, -(-int(batch_size) // CHUNK))
    n_chunks = -(-int(n_samples) // CHUNK)
    with torch.inference_mode():
        for first in range(0, n_chunks, chunks_per_batch):
            idx = range(first, min(first + chunks_per_batch, n_chunks))
            z = torch.cat([sample_z_chunk(seed, i, G.z_dim) for i in idx])
            z = z[: int(n_samples) - first * CHUNK]
            yield mapping.forward_w(z.to(device))


def pca_from_covariance(cov: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` eigenpairs of a symmetric matrix: (eigenvalues [k] float64 descending, clipped at
    0; eigenvectors [k, d] float64 as rows), each row's sign fixed so its largest-|.| entry is > 0."""
    evals, evecs = np.linalg.eigh(cov)
    order = np.argsort(evals)[::-1][:k]
    evals = np.clip(evals[order], 0.0, None)
    vecs = evecs[:, order].T.copy()
    pivot = np.argmax(np.abs(vecs), axis=1)
    signs = np.sign(vecs[np.arange(len(vecs)), pivot])
    signs[signs == 0] = 1.0
    return evals, vecs * signs[:, None]


def _resolve_cache_dir(cache_dir) -> Optional[Path]:
    if cache_dir is False:
        return None
    if cache_dir is None or cache_dir is True:
        return default_cache_dir() / "latent"
    return Path(cache_dir)


def basis_cache_path(cache_root: Path, checkpoint_hash: str, n_samples: int, k: int, seed: int) -> Path:
    """Where the global basis for these settings lives under ``cache_root``."""
    return Path(cache_root) / f"global-{checkpoint_hash[:24]}-n{int(n_samples)}-k{int(k)}-seed{int(seed)}.npz"


def global_basis(G, *, n_samples: int = DEFAULT_N_SAMPLES, k: Optional[int] = None, seed: int = 0,
                 batch_size: int = 16384, cache_dir: Union[None, bool, str, Path] = None,
                 progress: bool = True, device: Union[str, torch.device] = "cpu") -> LatentBasis:
    """PCA of w = mapping(z) over ``n_samples`` z ~ N(0, I): the top ``k`` (default ``w_dim``)
    principal directions, ``stdev = sqrt(eigenvalue)`` (covariance with n − 1 denominator),
    ``mean`` the sample mean.

    ``cache_dir``: None → ``$STYLECAST_CACHE/latent`` (default ``~/.cache/stylecast/latent``),
    a path → that folder, False → neither read nor write a cache.
    """
    n_samples, seed = int(n_samples), int(seed)
    w_dim = int(G.w_dim)
    k = w_dim if k is None else int(k)
    if n_samples < 2:
        raise ValueError(f"n_samples must be at least 2, got {n_samples}")
    if not 1 <= k <= w_dim:
        raise ValueError(f"k must be in [1, w_dim={w_dim}], got {k}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    ckpt = generator_hash(G)
    root = _resolve_cache_dir(cache_dir)
    path = basis_cache_path(root, ckpt, n_samples, k, seed) if root is not None else None
    if path is not None and path.is_file():
        try:
            cached = LatentBasis.load(path)
        except (ValueError, OSError):
            cached = None  # unreadable or foreign file: recompute and overwrite
        if (cached is not None and cached.origin == "global" and cached.checkpoint_hash == ckpt
                and cached.k == k and cached.meta.get("n_samples") == n_samples and cached.meta.get("seed") == seed):
            return cached

    t0 = time.perf_counter()
    n = 0
    mean = torch.zeros(w_dim, dtype=torch.float64)
    m2 = torch.zeros(w_dim, w_dim, dtype=torch.float64)
    bar = tqdm(total=n_samples, desc="global basis (PCA)", unit="w", unit_scale=True, disable=not progress,
               leave=False)
    with torch.inference_mode():
        for w in iter_w_batches(G, n_samples, seed=seed, batch_size=batch_size, device=device):
            x = w.to(dtype=torch.float64)
            nb = x.shape[0]
            mb = x.mean(dim=0)
            xc = x - mb
            m2b = (xc.T @ xc).cpu()
            mb = mb.cpu()
            delta = mb - mean
            tot = n + nb
            m2 += m2b + torch.outer(delta, delta) * (n * nb / tot)
            mean += delta * (nb / tot)
            n = tot
            bar.update(nb)
    bar.close()
    cov = ((m2 + m2.T) * 0.5 / (n - 1)).numpy()
    evals, vecs = pca_from_covariance(cov, k)
    elapsed = time.perf_counter() - t0
    basis = LatentBasis(
        directions=vecs.astype(np.float32), stdev=np.sqrt(evals).astype(np.float32), mean=mean.numpy(),
        explained_variance=evals, origin="global", checkpoint_hash=ckpt,
        meta=dict(n_samples=n_samples, seed=seed, k=k, w_dim=w_dim, z_dim=int(G.z_dim), time_s=round(elapsed, 3),
                  total_variance=float(np.trace(cov)), batch_size=int(batch_size), sampling=f"chunked-randn-{CHUNK}",
                  torch_threads=torch.get_num_threads()),
    )
    if path is not None:
        basis.save(path)
    return basis
