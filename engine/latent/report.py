"""Reading a latent basis: near-zero singular values, explained variance, the dw/dz spectrum plot
and the grid of images along its directions (what ``python -m engine.basis`` and the latent
benchmark print and draw)."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from tqdm import tqdm

from engine.frames import images_to_uint8

from .path import LatentPath

__all__ = ["ZERO_RTOL", "near_zero_count", "variance_summary", "plot_spectrum", "render_grid"]

#: A singular value counts as "~0" below this fraction of the largest one.
ZERO_RTOL = 1e-3


def near_zero_count(singular_values: np.ndarray, rtol: float = ZERO_RTOL) -> tuple[int, float]:
    """(how many singular values are < rtol x the largest, that threshold)."""
    s = np.asarray(singular_values, dtype=np.float64)
    threshold = float(rtol * s.max()) if s.size else 0.0
    return int(np.sum(s < threshold)), threshold


def variance_summary(basis) -> str:
    ratio = np.asarray(basis.explained_variance_ratio, dtype=np.float64)
    cum = np.cumsum(ratio)
    lines = [f"{'comp':>5} {'stdev':>10} {'var ratio':>10} {'cumulative':>11}"]
    for i in range(min(10, basis.k)):
        lines.append(f"{i:>5} {basis.stdev[i]:>10.4g} {ratio[i]:>10.2%} {cum[i]:>11.2%}")
    reach = []
    for target in (0.5, 0.8, 0.9, 0.99):
        n = int(np.searchsorted(cum, target - 1e-12) + 1)
        reach.append(f"{target:.0%}: {n if n <= basis.k else f'>{basis.k}'}")
    lines.append("components needed for  " + ", ".join(reach) + f"  (of {basis.k}, w_dim {basis.w_dim})")
    return "\n".join(lines)


def plot_spectrum(spectra: np.ndarray, seeds: Sequence[int], threshold_rtol: float, path: Path, title: str) -> None:
    """Sorted singular values of dw/dz, one curve per seed, log y (cf. MoCoGAN-HD Figure 8)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for s, seed in zip(spectra, seeds):
        s = np.asarray(s, dtype=np.float64)
        ax.plot(np.arange(len(s)), np.maximum(s, 1e-30), label=f"seed {seed}", lw=1.2)
        ax.axhline(threshold_rtol * s.max(), color="grey", lw=0.6, ls=":")
    ax.set_yscale("log")
    ax.set_xlabel("index (sorted, descending)")
    ax.set_ylabel("singular value of dw/dz")
    ax.set_title(title + f"\n(dotted: {threshold_rtol:g} x largest, the '~0' threshold)", fontsize=9)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def render_grid(G, basis, ws_anchor: torch.Tensor, components: Sequence[int], steps: int, sigma: float,
                layers: Optional[tuple[int, int]] = None, progress: bool = True) -> np.ndarray:
    """[rows*R, cols*R, 3] uint8: row r moves along ``components[r]``, columns x = linspace(-sigma, sigma)."""
    n = len(components)
    masks = None
    if layers is not None:
        masks = np.repeat(LatentPath.layer_range_mask(G.num_ws, *layers)[None], n, axis=0)
    path = LatentPath(basis, G.num_ws, components=list(components), layer_masks=masks, clamp_sigma=None,
                      device=ws_anchor.device)
    path.set_anchor(ws=ws_anchor)
    xs = np.linspace(-sigma, sigma, steps)
    R = G.img_resolution
    grid = np.zeros((n * R, steps * R, 3), dtype=np.uint8)
    mid = steps // 2
    others = [c for c in range(steps) if c != mid]
    with torch.inference_mode():
        # The identity column is the same ws in every row: render it once, alone (batch 1), so it is
        # bit-identical to a plain single render of the seed (batched convs may round differently).
        identity = images_to_uint8(G.synthesis(path(np.zeros((1, n), np.float32)).to(ws_anchor.device),
                                               noise_mode="const"))[0]
        for r in tqdm(range(n), desc="show", unit="row", disable=not progress):
            grid[r * R:(r + 1) * R, mid * R:(mid + 1) * R] = identity
            if not others:
                continue
            x = np.zeros((len(others), n), dtype=np.float32)
            x[:, r] = xs[others]
            img = images_to_uint8(G.synthesis(path(x).to(ws_anchor.device), noise_mode="const"))
            for j, c in enumerate(others):
                grid[r * R:(r + 1) * R, c * R:(c + 1) * R] = img[j]
    return grid
