"""Identity latents: where an avatar's face comes from, and how to move between faces.

A face is a per-layer latent ws [1, num_ws, w_dim]: from a seed (NVlabs convention, so faces
match other StyleGAN tools), from a .npy file (e.g. a projected photo), or the mean face w_avg.
Truncation pulls ws toward w_avg; ``interpolate`` blends two latents linearly or spherically.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
import torch

from engine.synthesis.networks import seed_to_z

__all__ = ["z_from_seed", "rest_z", "w_from_seed", "load_ws_array", "ws_from_npy", "mean_ws", "truncate", "interpolate",
           "INTERPOLATION_MODES"]

INTERPOLATION_MODES = ("linear", "slerp")


def _device(G) -> torch.device:
    return G.mapping.w_avg.device


def z_from_seed(seed: int, z_dim: int) -> torch.Tensor:
    """z [1, z_dim] float32 for ``seed``: ``np.random.RandomState(seed).randn(1, z_dim)``."""
    return torch.from_numpy(seed_to_z(seed, int(z_dim))).to(torch.float32)


def rest_z(G, z: torch.Tensor) -> torch.Tensor:
    """z [B, z_dim] with the generator's ``z_rest`` coordinates fixed (a copy; z itself when the
    generator has none). Codes with meaningful coordinates (the demo world's) use it so that an
    identity's seed gives a face at rest: mouth closed, eyes open, head straight."""
    rest = getattr(getattr(G, "config", None), "z_rest", None)
    if not rest:
        return z
    z = z.clone()
    for i, v in rest:
        z[:, int(i)] = float(v)
    return z


def w_from_seed(G, seed: int, *, truncation_psi: float = 1.0, truncation_cutoff: Optional[int] = None) -> torch.Tensor:
    """ws [1, num_ws, w_dim] float32 of ``seed`` (its z at rest, :func:`rest_z`); cutoff defaults
    to the checkpoint's setting."""
    cutoff = truncation_cutoff if truncation_cutoff is not None else getattr(G.config, "truncation_cutoff", None)
    with torch.inference_mode():
        z = rest_z(G, z_from_seed(seed, G.z_dim)).to(_device(G))
        return G.mapping(z, truncation_psi=truncation_psi, truncation_cutoff=cutoff).clone()


def load_ws_array(path: Union[str, Path], num_ws: int, w_dim: int) -> np.ndarray:
    """Read latents from a .npy file as float32 [N, num_ws, w_dim].

    A 3-D array is per-layer ws; a 2-D array is N single w vectors and a 1-D array one w, each
    broadcast to every layer. Raises FileNotFoundError or ValueError with a one-line message
    that names the file.
    """
    path = Path(path)
    try:
        arr = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except (ValueError, OSError) as exc:
        raise ValueError(f"{path}: not a readable .npy array ({exc})") from None
    if not isinstance(arr, np.ndarray):
        raise ValueError(f"{path}: expected a .npy array, got an .npz archive")
    if not np.issubdtype(arr.dtype, np.floating):
        raise ValueError(f"{path}: latents must be floating point, got {arr.dtype}")
    if arr.size == 0:
        raise ValueError(f"{path}: holds no latents (shape {tuple(arr.shape)})")
    shape = tuple(arr.shape)
    ok = (arr.ndim in (1, 2) and shape[-1] == w_dim) or (arr.ndim == 3 and shape[1:] == (num_ws, w_dim))
    if not ok:
        raise ValueError(f"{path}: latents have shape {shape}, this generator needs "
                         f"[N, {num_ws}, {w_dim}] or [N, {w_dim}]")
    if arr.ndim < 3:
        arr = np.repeat(arr.reshape(-1, 1, w_dim), num_ws, axis=1)
    if not np.isfinite(arr).all():
        raise ValueError(f"{path}: latents contain NaN or infinity")
    return arr.astype(np.float32)


def ws_from_npy(path: Union[str, Path], G) -> torch.Tensor:
    """ws [N, num_ws, w_dim] float32 on G's device from a .npy holding [w_dim], [N, w_dim] or
    [N, num_ws, w_dim] (see :func:`load_ws_array` for the errors)."""
    return torch.from_numpy(load_ws_array(path, G.num_ws, G.w_dim)).to(_device(G))


def mean_ws(G) -> torch.Tensor:
    """The mean face: w_avg broadcast to ws [1, num_ws, w_dim] float32."""
    return G.mapping.w_avg.detach().to(torch.float32).expand(1, G.num_ws, -1).clone()


def truncate(G, ws, truncation_psi: float, truncation_cutoff: Optional[int] = None) -> torch.Tensor:
    """Move ws [B, num_ws, w_dim] toward w_avg: ``w_avg + psi (ws - w_avg)`` on the first
    ``truncation_cutoff`` layers (all when None)."""
    ws = torch.as_tensor(np.asarray(ws) if isinstance(ws, np.ndarray) else ws)
    if ws.ndim != 3 or ws.shape[1:] != (G.num_ws, G.w_dim):
        raise ValueError(f"ws must be [B, {G.num_ws}, {G.w_dim}], got {list(ws.shape)}")
    return G.mapping.truncate(ws.to(device=_device(G), dtype=torch.float32), truncation_psi, truncation_cutoff)


def _slerp(a: torch.Tensor, b: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Spherical interpolation along the last dimension; the norm is interpolated linearly, so
    equal-norm endpoints stay on their sphere and the angle grows linearly in t."""
    na, nb = a.norm(dim=-1, keepdim=True), b.norm(dim=-1, keepdim=True)
    ua, ub = a / na.clamp_min(1e-12), b / nb.clamp_min(1e-12)
    cos = (ua * ub).sum(dim=-1, keepdim=True).clamp(-1.0, 1.0)
    omega = torch.arccos(cos)
    so = torch.sin(omega)
    near = so.abs() < 1e-6   # (anti)parallel: the great circle is undefined or degenerate → lerp
    safe = torch.where(near, torch.ones_like(so), so)
    dir_ = torch.where(near, torch.lerp(ua, ub, t),
                       (torch.sin((1 - t) * omega) * ua + torch.sin(t * omega) * ub) / safe)
    norm = torch.lerp(na, nb, t)
    return dir_ * norm


def interpolate(a, b, t: Union[float, Sequence[float], np.ndarray, torch.Tensor], *,
                mode: str = "linear") -> torch.Tensor:
    """Blend latents a and b (same shape; w, ws or z): ``linear`` = (1 − t) a + t b;
    ``slerp`` = spherical along the last dimension (per w vector).

    A scalar t returns a's shape; a 1-D t of length T returns [T, *a.shape].
    """
    if mode not in INTERPOLATION_MODES:
        raise ValueError(f"mode must be one of {INTERPOLATION_MODES}, got {mode!r}")
    a = torch.as_tensor(np.asarray(a) if isinstance(a, np.ndarray) else a)
    b = torch.as_tensor(np.asarray(b) if isinstance(b, np.ndarray) else b).to(a.device)
    if a.shape != b.shape:
        raise ValueError(f"a and b must have the same shape, got {list(a.shape)} and {list(b.shape)}")
    dtype = torch.promote_types(torch.promote_types(a.dtype, b.dtype), torch.float32)
    a, b = a.to(dtype), b.to(dtype)
    tt = torch.as_tensor(np.asarray(t) if isinstance(t, (list, tuple, np.ndarray)) else t, dtype=dtype,
                         device=a.device)
    if tt.ndim > 1:
        raise ValueError(f"t must be a number or 1-D, got shape {list(tt.shape)}")
    if not torch.isfinite(tt).all():
        raise ValueError("t contains NaN or infinity")
    scalar = tt.ndim == 0
    tt = tt.reshape(-1, *([1] * a.ndim))          # [T, 1, ..., 1]
    out = torch.lerp(a, b, tt) if mode == "linear" else _slerp(a.unsqueeze(0), b.unsqueeze(0), tt)
    return out[0] if scalar else out
