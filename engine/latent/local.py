"""Local latent basis: SVD of the mapping network's Jacobian J = dw/dz at one z.

``J = U S Vᵀ``: a z step ``ε·v_i`` (right singular vector) moves w by ``ε·σ_i·u_i`` to first
order, so the columns of U are the W directions the network can move along from this z, ranked
by how strongly, and ``σ_i`` converts z steps to W units. The Jacobian is exact autodiff
(``torch.func.jacrev`` vmapped over a batch of z), not finite differences.

The mapping network starts by normalising z (``z / rms(z)``), so ``J z = 0``: every Jacobian has
a zero singular value whose right vector is the radial direction z / |z| (when z_dim ≤ w_dim).

:func:`local_traverse` follows a local direction for a finite distance by integrating
``dz/ds = v_i(z) / σ_i(z)`` (midpoint rule, basis recomputed at every evaluation), so the result
is always ``(z, m(z))``: it never leaves the manifold W = m(Z), unlike a straight line in W.
"""
from __future__ import annotations

import copy
import time
from typing import Optional, Union

import numpy as np
import torch
from torch.func import jacrev, vmap

from .latent_basis import LatentBasis, generator_hash

__all__ = ["mapping_jacobian", "local_basis", "singular_spectrum", "local_traverse", "local_svd"]

ArrayLike = Union[torch.Tensor, np.ndarray]


def _mapping_for(G, dtype: torch.dtype) -> torch.nn.Module:
    mapping = G.mapping
    p = next(mapping.parameters(), None)
    if p is not None and p.dtype != dtype:
        cache = getattr(G, "_stylecast_mapping_copies", None)
        if cache is None:
            cache = {}
            object.__setattr__(G, "_stylecast_mapping_copies", cache)
        key = (dtype, generator_hash(G))
        if key not in cache:
            cache.clear()
            cache[key] = copy.deepcopy(mapping).to(dtype=dtype)
        mapping = cache[key]
    return mapping


def _as_z(G, z: ArrayLike, dtype: torch.dtype) -> torch.Tensor:
    if isinstance(z, np.ndarray):
        z = torch.from_numpy(np.ascontiguousarray(z))
    z = torch.as_tensor(z)
    if z.ndim == 1:
        z = z[None]
    if z.ndim != 2 or z.shape[1] != G.z_dim:
        raise ValueError(f"z must be [z_dim] or [B, z_dim] with z_dim = {G.z_dim}, got shape {list(z.shape)}")
    if not torch.isfinite(z).all():
        raise ValueError("z contains NaN or infinity")
    return z.to(device=G.mapping.w_avg.device, dtype=dtype)


def mapping_jacobian(G, z: ArrayLike, *, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Exact Jacobian dw/dz of ``G.mapping.forward_w`` at each z: [B, w_dim, z_dim].

    ``dtype=torch.float64`` evaluates a double copy of the mapping network (kept on ``G``).
    """
    mapping = _mapping_for(G, dtype)
    z = _as_z(G, z, dtype)

    def one(zi: torch.Tensor) -> torch.Tensor:
        return mapping.forward_w(zi.unsqueeze(0)).squeeze(0)

    with torch.inference_mode(False), torch.enable_grad():
        return vmap(jacrev(one))(z.clone()).detach()


def _fix_signs(U: np.ndarray, Vh: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flip each singular pair (U[..., :, i], Vh[..., i, :]) so U's column has its largest-|.|
    entry positive."""
    pivot = np.abs(U).argmax(axis=-2)[..., None, :]
    signs = np.sign(np.take_along_axis(U, pivot, axis=-2))
    signs[signs == 0] = 1.0
    return U * signs, Vh * np.swapaxes(signs, -1, -2)


def local_svd(G, z: ArrayLike, *, dtype: torch.dtype = torch.float32):
    """(w [B, w_dim] tensor, U [B, w_dim, r], S [B, r], Vh [B, r, z_dim]) at each z, r = min(w_dim,
    z_dim): the SVD of dw/dz in float64 numpy (LAPACK), signs fixed (largest-|.| entry of each U
    column positive)."""
    z = _as_z(G, z, dtype)
    J = mapping_jacobian(G, z, dtype=dtype).to(torch.float64).cpu().numpy()
    U, S, Vh = np.linalg.svd(J, full_matrices=False)
    U, Vh = _fix_signs(U, Vh)
    with torch.inference_mode():
        w = _mapping_for(G, dtype).forward_w(z)
    return w, U, S, Vh


def singular_spectrum(G, zs: ArrayLike, *, dtype: torch.dtype = torch.float32) -> np.ndarray:
    """Singular values of dw/dz at each z: [B, min(w_dim, z_dim)] float64, descending."""
    z = _as_z(G, zs, dtype)
    J = mapping_jacobian(G, z, dtype=dtype).to(torch.float64).cpu().numpy()
    return np.linalg.svd(J, compute_uv=False)


def local_basis(G, z: ArrayLike, *, k: Optional[int] = None, dtype: torch.dtype = torch.float32) -> LatentBasis:
    """The local basis at one z ([z_dim] or [1, z_dim]): directions = top-k left singular vectors
    of dw/dz (W space), ``stdev = σ_i``, ``z_directions`` = right singular vectors, ``mean = m(z)``.

    ``meta["singular_values"]`` holds the full spectrum, ``meta["z"]`` the anchor.
    """
    t0 = time.perf_counter()
    z = _as_z(G, z, dtype)
    if z.shape[0] != 1:
        raise ValueError(f"local_basis takes one z, got a batch of {z.shape[0]}")
    r = min(int(G.w_dim), int(G.z_dim))
    k = r if k is None else int(k)
    if not 1 <= k <= r:
        raise ValueError(f"k must be in [1, min(w_dim, z_dim) = {r}], got {k}")
    w, U, S, Vh = local_svd(G, z, dtype=dtype)
    S0 = S[0]
    elapsed = time.perf_counter() - t0
    return LatentBasis(
        directions=U[0, :, :k].T, stdev=S0[:k], mean=w[0].float().cpu().numpy(),
        explained_variance=S0[:k] ** 2, origin="local", checkpoint_hash=generator_hash(G),
        meta=dict(z=[float(v) for v in z[0].double().cpu()], singular_values=[float(s) for s in S0], k=k,
                  w_dim=int(G.w_dim), z_dim=int(G.z_dim), dtype=str(dtype).replace("torch.", ""),
                  time_s=round(elapsed, 4)),
        z_directions=Vh[0, :k],
    )


TRAVERSE_MODES = ("straight", "follow")
# Singular values below this fraction of the largest are treated as zero by the pseudo-inverse
# ("straight" mode): inverting tiny ones turns a small W step into a huge z step that leaves
# the linear region (measured on the demo generator: 1e-3 overshoots |dw| by 40%, 1e-2 does not).
PINV_RCOND = 1e-2


def local_traverse(G, z: ArrayLike, direction: int, step: float, *, n_substeps: int = 8,
                   k: Optional[int] = None, dtype: torch.dtype = torch.float32,
                   mode: str = "straight") -> tuple[torch.Tensor, torch.Tensor]:
    """Move z so that w = m(z) travels ``step`` W units along local direction ``direction``.

    The path is integrated in z (``n_substeps`` midpoint steps, the SVD recomputed at every
    evaluation), so the end point is m(z_new) exactly: it never leaves the manifold. Parametrised
    by arc length in W: |dw/ds| = 1. Two ways to say which way to go:

    * ``"straight"`` (default): keep heading along the starting direction u_i(z0), as far as the
      tangent space allows: dz/ds = J⁺ u_i(z0) / |J J⁺ u_i(z0)| (pseudo-inverse over the top ``k``
      singular values above ``PINV_RCOND`` × the largest). This changes the other directions'
      coordinates as little as the manifold permits.
    * ``"follow"``: follow the local singular direction itself, dz/ds = v_j(z)/σ_j(z), where j is
      the local direction (among the top ``k``) best aligned with the previous one, so crossings of
      singular values do not switch directions. The path bends as the local basis turns.

    A positive step starts along ``local_basis(G, z).directions[direction]``. Returns
    (z_new [1, z_dim], w_new = m(z_new) [1, w_dim]) in ``dtype``.
    """
    if mode not in TRAVERSE_MODES:
        raise ValueError(f"mode must be one of {TRAVERSE_MODES}, got {mode!r}")
    z = _as_z(G, z, dtype)
    if z.shape[0] != 1:
        raise ValueError(f"local_traverse takes one z, got a batch of {z.shape[0]}")
    r = min(int(G.w_dim), int(G.z_dim))
    k = r if k is None else int(k)
    direction = int(direction)
    if not 0 <= direction < min(k, r):
        raise ValueError(f"direction must be in [0, {min(k, r)}), got {direction}")
    step = float(step)
    if not np.isfinite(step):
        raise ValueError(f"step must be finite, got {step!r}")
    if n_substeps < 1:
        raise ValueError(f"n_substeps must be at least 1, got {n_substeps}")
    h = step / n_substeps
    u_ref: Optional[np.ndarray] = None
    u_start: Optional[np.ndarray] = None

    def velocity(zc: torch.Tensor) -> torch.Tensor:
        """dz/ds at zc (float64), unit speed in W."""
        nonlocal u_ref, u_start
        _, U, S, Vh = local_svd(G, zc, dtype=dtype)
        U, S, Vh = U[0, :, :k], S[0, :k], Vh[0, :k]
        if u_start is None:
            if not S[direction] > 0:
                raise ValueError(f"singular value {direction} is zero at this z: direction undefined")
            u_start = U[:, direction]
        if mode == "straight":
            keep = S > PINV_RCOND * S[0]
            coeff = U[:, keep].T @ u_start  # u_start in the tangent directions
            speed = float(np.linalg.norm(coeff))  # |J J⁺ u| = |U coeff|
            if not speed > 1e-6:
                raise ValueError("the starting direction has left the tangent space of W: no step possible")
            return torch.from_numpy(Vh[keep].T @ (coeff / S[keep]) / speed).to(zc.device)
        # Follow the direction, not its rank: where singular values cross, the direction we are
        # on changes index, so take the local direction best aligned with the previous one.
        j = direction if u_ref is None else int(np.argmax(np.abs(u_ref @ U)))
        u, v, s = U[:, j], Vh[j], float(S[j])
        if not s > 0:
            raise ValueError(f"singular value {j} is zero at this z: direction undefined")
        if u_ref is not None and float(u @ u_ref) < 0:
            u, v = -u, -v
        u_ref = u
        return torch.from_numpy(v / s).to(zc.device)

    zc = z.to(torch.float64)
    for _ in range(n_substeps):
        k1 = velocity(zc.to(dtype))
        zmid = zc + 0.5 * h * k1
        k2 = velocity(zmid.to(dtype))
        zc = zc + h * k2
    z_new = zc.to(dtype)
    with torch.inference_mode():
        w_new = _mapping_for(G, dtype).forward_w(z_new)
    return z_new, w_new
