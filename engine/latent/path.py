"""LatentPath: control vectors x_t → per-layer latents ws_t around an anchor.

    ws[b, l] = anchor_ws[l] + Σ_i mask[i, l] · clamp(x[b, i], ±c) · stdev[i] · V[i]

``x`` is measured in units of each component's stdev (so x = 1 is "one standard deviation" for
a global basis, one σ_i-scaled z step for a local one) and clamped to ±``clamp_sigma`` so a
driver can never push the face off the data manifold. ``mask[i]`` says on which of the
``num_ws`` layers direction i acts: GANSpace edits apply a component to a layer range only
(e.g. early layers for pose, middle layers for expression).
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from .latent_basis import LatentBasis

__all__ = ["LatentPath"]


def _to_tensor(a, device, dtype=torch.float32) -> torch.Tensor:
    if isinstance(a, np.ndarray):
        a = torch.from_numpy(np.ascontiguousarray(a))
    return torch.as_tensor(a).to(device=device, dtype=dtype)


class LatentPath:
    """Maps control vectors x [B, n_components] (stdev units) to ws [B, num_ws, w_dim] float32."""

    def __init__(self, basis: LatentBasis, num_ws: int, *, components: Optional[Sequence[int]] = None,
                 layer_masks: Optional[np.ndarray] = None, clamp_sigma: Optional[float] = 3.0, device="cpu"):
        self.basis = basis
        self.num_ws = int(num_ws)
        if self.num_ws < 1:
            raise ValueError(f"num_ws must be positive, got {num_ws}")
        self.device = torch.device(device)
        comps = list(range(basis.k)) if components is None else [int(c) for c in components]
        bad = [c for c in comps if not 0 <= c < basis.k]
        if bad:
            raise ValueError(f"components {bad} are out of range for a basis of k = {basis.k}")
        if not comps:
            raise ValueError("components must name at least one basis direction")
        self.components = comps
        n = len(comps)
        if layer_masks is None:
            masks = np.ones((n, self.num_ws), dtype=np.float32)
        else:
            masks = np.asarray(layer_masks)
            if masks.ndim == 1 and masks.shape[0] == self.num_ws:
                masks = np.broadcast_to(masks, (n, self.num_ws))
            if masks.shape != (n, self.num_ws):
                raise ValueError(f"layer_masks must be [{n}, {self.num_ws}] (components × num_ws), got {masks.shape}")
            masks = masks.astype(np.float32)
            if not np.isfinite(masks).all():
                raise ValueError("layer_masks contain NaN or infinity")
        if clamp_sigma is not None:
            clamp_sigma = float(clamp_sigma)
            if not (np.isfinite(clamp_sigma) and clamp_sigma > 0):
                raise ValueError(f"clamp_sigma must be a positive number or None, got {clamp_sigma!r}")
        self.clamp_sigma = clamp_sigma
        self.layer_masks = _to_tensor(masks, self.device)                          # [n, L]
        scaled = basis.directions[comps].astype(np.float32) * basis.stdev[comps, None]
        self.scaled_directions = _to_tensor(scaled, self.device)                   # [n, w_dim]
        self.anchor_ws: Optional[torch.Tensor] = None                              # [L, w_dim]

    @property
    def n_components(self) -> int:
        return len(self.components)

    @property
    def w_dim(self) -> int:
        return self.basis.w_dim

    @staticmethod
    def layer_range_mask(num_ws: int, start: int, end: int) -> np.ndarray:
        """[num_ws] bool, True on layers start..end inclusive."""
        num_ws, start, end = int(num_ws), int(start), int(end)
        if not 0 <= start <= end < num_ws:
            raise ValueError(f"layer range {start}..{end} is not inside 0..{num_ws - 1}")
        m = np.zeros(num_ws, dtype=bool)
        m[start:end + 1] = True
        return m

    def set_anchor(self, w=None, *, ws=None, z=None, G=None, truncation_psi: float = 1.0) -> None:
        """Anchor the path at w [w_dim] (or [1, w_dim]), at per-layer ws [num_ws, w_dim] (or
        [1, num_ws, w_dim]), or at z [z_dim] mapped through ``G.mapping`` with truncation."""
        given = [name for name, v in (("w", w), ("ws", ws), ("z", z)) if v is not None]
        if len(given) != 1:
            raise ValueError(f"set_anchor takes exactly one of w, ws, z (got {given or 'none'})")
        if w is not None:
            w = _to_tensor(w, self.device)
            if w.ndim == 2 and w.shape[0] == 1:
                w = w[0]
            if w.shape != (self.w_dim,):
                raise ValueError(f"anchor w must be [{self.w_dim}], got {list(w.shape)}")
            anchor = w.expand(self.num_ws, -1)
        elif ws is not None:
            ws = _to_tensor(ws, self.device)
            if ws.ndim == 3 and ws.shape[0] == 1:
                ws = ws[0]
            if ws.shape != (self.num_ws, self.w_dim):
                raise ValueError(f"anchor ws must be [{self.num_ws}, {self.w_dim}], got {list(ws.shape)}")
            anchor = ws
        else:
            if G is None:
                raise ValueError("set_anchor(z=...) needs the generator G to map z")
            z = torch.as_tensor(np.asarray(z) if isinstance(z, np.ndarray) else z)
            if z.ndim == 1:
                z = z[None]
            if z.shape != (1, G.z_dim):
                raise ValueError(f"anchor z must be [{G.z_dim}] or [1, {G.z_dim}], got {list(z.shape)}")
            if G.num_ws != self.num_ws:
                raise ValueError(f"G has num_ws = {G.num_ws}, this path {self.num_ws}")
            with torch.inference_mode():
                anchor = G.mapping(z.to(device=G.mapping.w_avg.device, dtype=torch.float32),
                                   truncation_psi=truncation_psi,
                                   truncation_cutoff=getattr(G.config, "truncation_cutoff", None))[0]
            anchor = anchor.to(self.device, torch.float32)
        if not torch.isfinite(anchor).all():
            raise ValueError("anchor contains NaN or infinity")
        self.anchor_ws = anchor.contiguous().clone()

    def clamp(self, x) -> torch.Tensor:
        """x as a float32 [B, n_components] tensor on the path's device, clamped to ±clamp_sigma."""
        x = _to_tensor(x, self.device)
        if x.ndim == 1:
            x = x[None]
        if x.ndim != 2 or x.shape[1] != self.n_components:
            raise ValueError(f"x must be [B, {self.n_components}] (or [{self.n_components}]), got {list(x.shape)}")
        x = torch.nan_to_num(x, nan=0.0)
        if self.clamp_sigma is not None:
            x = x.clamp(-self.clamp_sigma, self.clamp_sigma)
        return x

    def __call__(self, x) -> torch.Tensor:
        """ws [B, num_ws, w_dim] float32 for control vectors x [B, n_components] (or [n_components])."""
        if self.anchor_ws is None:
            raise RuntimeError("LatentPath has no anchor: call set_anchor() first")
        x = self.clamp(x)
        # [B, n] × [n, L] per-layer weights, then Σ_i over directions: [B, L, w_dim]
        offsets = torch.einsum("bi,il,id->bld", x, self.layer_masks, self.scaled_directions)
        return self.anchor_ws.unsqueeze(0) + offsets
