"""What an inversion minimises, none of it downloaded: pixels at several scales, MS-SSIM
(``pytorch_msssim``), the checkpoint's own discriminator features where the file has one, a
prior that keeps w where the mapping puts faces, and the noise maps' regulariser.

Images are float [B, 3, R, R] in [-1, 1] (the generator's range).

* :func:`pixel_loss`: mean L1 + mean L2 at 1/1, 1/2, 1/4 ... (average-pooled) down to 16 px.
* :func:`ms_ssim_loss`: 1 − MS-SSIM, the window shrunk to fit small images (11 px down to 3 px).
* :class:`WPrior`: a Gaussian over the *Gaussianised* W (Wulff & Torralba 2020: the mapping's
  last leaky ReLU undone, where W is close to Gaussian), fitted on samples of the mapping;
  its value is the squared Mahalanobis distance per dimension (≈ 1 for a typical face). For W+
  it adds how far the layers stray from their mean.
* :func:`noise_regularizer`: the NVlabs projector's: the noise maps' autocorrelation at one-pixel
  shifts, summed over a pyramid down to 8 px (0 for white noise); :func:`normalize_noise` keeps
  each map zero-mean unit-variance after a step.
* :class:`DiscriminatorFeatures`: L2 between a discriminator's block activations for the two
  images, each block's normalised by its channel count.
"""
from __future__ import annotations

from typing import Iterable, Optional

import torch
import torch.nn.functional as F

from engine.synthesis.layers import LRELU_GAIN, LRELU_SLOPE

__all__ = ["pixel_loss", "ms_ssim_loss", "WPrior", "noise_regularizer", "normalize_noise",
           "DiscriminatorFeatures"]


def pixel_loss(x: torch.Tensor, y: torch.Tensor, min_size: int = 16) -> torch.Tensor:
    total = x.new_zeros(())
    scales = 0
    while True:
        d = x - y
        total = total + d.abs().mean() + d.square().mean()
        scales += 1
        if x.shape[-1] // 2 < min_size:
            break
        x, y = F.avg_pool2d(x, 2), F.avg_pool2d(y, 2)
    return total / scales


def _ssim_window(side: int) -> int:
    win = 11
    while win > 3 and (win - 1) * 16 >= side:
        win -= 2
    return win


def ms_ssim_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    from pytorch_msssim import ms_ssim, ssim

    a, b = (x.float() + 1) / 2, (y.float() + 1) / 2
    side = min(x.shape[-2:])
    win = _ssim_window(side)
    if (win - 1) * 16 >= side:                 # too small for five scales: one
        return 1.0 - ssim(a, b, data_range=1.0, win_size=3)
    return 1.0 - ms_ssim(a, b, data_range=1.0, win_size=win)


def _gaussianise(w: torch.Tensor) -> torch.Tensor:
    """Undo the mapping's last activation (lrelu 0.2, gain √2)."""
    u = w / LRELU_GAIN
    return torch.where(u >= 0, u, u / LRELU_SLOPE)


class WPrior:
    """A Gaussian over the Gaussianised W of ``G``'s mapping, from ``n`` samples (see module)."""

    def __init__(self, G, n: int = 10_000, seed: int = 0, eps: float = 1e-3) -> None:
        gen = torch.Generator().manual_seed(seed)
        device = G.mapping.w_avg.device
        with torch.no_grad():
            ws = torch.cat([G.mapping.forward_w(torch.randn(1000, G.z_dim, generator=gen).to(device))
                            for _ in range(max(1, n // 1000))]).double()
        self.w_std = float(ws.std(0).square().sum().sqrt())        # NVlabs' w_std: the spread's norm
        u = _gaussianise(ws)
        self.mean = u.mean(0)
        cov = torch.cov(u.T)
        evals, evecs = torch.linalg.eigh(cov)
        evals = evals.clamp_min(eps * evals.max())
        self.whiten = (evecs / evals.sqrt()).float()           # u → unit normal coordinates
        self.mean = self.mean.float()
        # the floor on the eigenvalues shrinks the readings of a low-rank W: scale so that the
        # fitting samples read 1 on average
        self.norm = 1.0
        self.norm = float(self(ws.float()))

    def to(self, device) -> "WPrior":
        for name in ("mean", "whiten"):
            setattr(self, name, getattr(self, name).to(device))
        return self

    def __call__(self, ws: torch.Tensor) -> torch.Tensor:
        """ws [B, L, w_dim] (or [B, w_dim]) → scalar: mean squared Mahalanobis distance per dim,
        plus, for L > 1, the layers' spread around their mean in the same units."""
        u = _gaussianise(ws)
        z = (u - self.mean) @ self.whiten
        value = z.square().mean()
        if ws.ndim == 3 and ws.shape[1] > 1:
            value = value + (z - z.mean(1, keepdim=True)).square().mean()
        return value / self.norm


def noise_regularizer(noises: Iterable[torch.Tensor]) -> torch.Tensor:
    total = None
    for n in noises:
        x = n.reshape(1, 1, n.shape[-2], n.shape[-1])
        while True:
            term = (x * torch.roll(x, 1, dims=3)).mean().square() + (x * torch.roll(x, 1, dims=2)).mean().square()
            total = term if total is None else total + term
            if x.shape[-1] <= 8:
                break
            x = F.avg_pool2d(x, 2)
    return total if total is not None else torch.zeros(())


@torch.no_grad()
def normalize_noise(noises: Iterable[torch.Tensor]) -> None:
    for n in noises:
        n.sub_(n.mean()).div_(n.square().mean().sub(n.mean().square()).clamp_min(1e-12).sqrt())


class DiscriminatorFeatures:
    """L2 between ``D``'s block activations (every ``b{res}`` block of a StyleGAN2 discriminator)."""

    def __init__(self, D: torch.nn.Module) -> None:
        self.D = D.eval().requires_grad_(False)
        self.blocks = [getattr(D, f"b{r}") for r in getattr(D, "block_resolutions", [])]
        if not self.blocks:
            raise ValueError("the discriminator has no blocks whose features could be compared")
        self._feats: list[torch.Tensor] = []
        for block in self.blocks:
            block.register_forward_hook(self._hook)

    def _hook(self, _module, _inputs, output) -> None:
        self._feats.append(output[0] if isinstance(output, tuple) else output)

    def features(self, img: torch.Tensor) -> list[torch.Tensor]:
        self._feats = []
        self.D(img)
        feats, self._feats = self._feats, []
        return feats

    def __call__(self, x: torch.Tensor, y_feats: Optional[list] = None, y: Optional[torch.Tensor] = None) -> torch.Tensor:
        if y_feats is None:
            with torch.no_grad():
                y_feats = self.features(y)
        total = x.new_zeros(())
        for a, b in zip(self.features(x), y_feats):
            total = total + (a - b).square().mean()
        return total / len(y_feats)
