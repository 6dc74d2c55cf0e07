"""Projecting an aligned photo into a generator: a W search, then a W+ refinement.

The recipe is NVlabs' projector (stylegan2-ada-pytorch ``projector.py``) with losses that need no
download (:mod:`engine.inversion.losses`): start at the best of ``w_avg`` and a few mapped
samples, optimise one w with Adam (learning rate ramped up then cosine-down, decaying noise added
to w so the search does not stop in the first dip), optimise the synthesis noise maps with it
(regularised toward white noise, renormalised each step), then free each layer's w (W+) with a
lower rate and the prior holding the layers together. Works on a copy of the generator: the
caller's generator and its noise buffers are never changed.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import torch

from engine.inversion.losses import (DiscriminatorFeatures, WPrior, ms_ssim_loss, noise_regularizer,
                                     normalize_noise, pixel_loss)

__all__ = ["Settings", "Projection", "project", "as_target", "noise_layers"]


@dataclass
class Settings:
    """Steps, rates and loss weights. ``space``: ``"w"`` (one w for every layer) or ``"w+"``
    (then ``wplus_steps`` more with a w per layer)."""

    steps: int = 300
    space: str = "w+"
    wplus_steps: int = 200
    lr: float = 0.05
    wplus_lr: float = 0.01
    lr_rampup: float = 0.05
    lr_rampdown: float = 0.25
    initial_noise: float = 0.05           # × w_std: the noise added to w at the start
    noise_ramp: float = 0.75              # ... decaying to 0 over this fraction of the W steps
    init_samples: int = 32                # mapped samples tried as the start (with w_avg)
    optimize_noise: bool = True
    pixel: float = 1.0
    ssim: float = 1.0
    disc: float = 0.05
    prior: float = 0.002
    noise_reg: float = 1000.0
    seed: int = 0

    def check(self) -> "Settings":
        if self.space not in ("w", "w+"):
            raise ValueError(f"space must be 'w' or 'w+', got {self.space!r}")
        if self.steps < 1 or self.wplus_steps < 0:
            raise ValueError("steps must be at least 1 (and wplus_steps at least 0)")
        return self


@dataclass
class Projection:
    ws: torch.Tensor                       # [1, num_ws, w_dim]: the result (W: every layer the same w)
    w: torch.Tensor                        # [1, w_dim]: the W stage's w (the pivot)
    noise: dict[str, torch.Tensor]         # noise map per synthesis layer (name → [R, R])
    history: list[dict] = field(default_factory=list)   # losses every ``log_every`` steps
    final: dict = field(default_factory=dict)           # the last step's losses
    image: Optional[torch.Tensor] = None   # [1, 3, R, R] the reconstruction, [-1, 1]


def noise_layers(G) -> list[tuple[str, torch.nn.Module]]:
    """The synthesis layers with a constant noise map: (name, module)."""
    return [(name, m) for name, m in G.synthesis.named_modules() if hasattr(m, "noise_const")]


def as_target(image, resolution: int, device) -> torch.Tensor:
    """uint8 [R, R, 3] (or float [3, R, R] in [-1, 1]) → float [1, 3, R, R] in [-1, 1] on ``device``."""
    if isinstance(image, torch.Tensor) and image.dtype.is_floating_point:
        t = image.float()
        t = t.unsqueeze(0) if t.ndim == 3 else t
    else:
        a = np.asarray(image)
        if a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3:
            raise ValueError(f"target must be a uint8 RGB image [R, R, 3], got {a.dtype} {a.shape}")
        t = torch.from_numpy(a.copy()).permute(2, 0, 1).unsqueeze(0).float() / 127.5 - 1.0
    if tuple(t.shape[-2:]) != (resolution, resolution) or t.shape[:2] != (1, 3):
        raise ValueError(f"target must be 1 x 3 x {resolution} x {resolution}, got {tuple(t.shape)}")
    return t.to(device)


def _lr(base: float, t: float, s: Settings) -> float:
    ramp = min(1.0, (1.0 - t) / s.lr_rampdown)
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    return base * ramp * min(1.0, t / s.lr_rampup)


def project(G, target, settings: Optional[Settings] = None, *, D=None, prior: Optional[WPrior] = None,
            progress: bool = True, log_every: int = 10,
            callback: Optional[Callable[[str, int, int, dict, torch.Tensor], None]] = None) -> Projection:
    """Invert ``target`` (an aligned uint8 RGB image at ``G``'s resolution) into ``G``.

    ``D``: the checkpoint's discriminator, for feature losses (optional). ``prior``: a fitted
    :class:`WPrior` (fitted here when None). ``callback(stage, step, steps, losses, image)`` is
    called every ``log_every`` steps (progress messages, a video of the optimisation).
    """
    from tqdm.auto import tqdm

    s = (settings or Settings()).check()
    device = G.mapping.w_avg.device
    G = copy.deepcopy(G).float().eval().requires_grad_(False)
    y = as_target(target, G.img_resolution, device)
    prior = prior or WPrior(G).to(device)
    dfeat = DiscriminatorFeatures(D) if D is not None and s.disc > 0 else None
    y_feats = None
    if dfeat is not None:
        with torch.no_grad():
            y_feats = dfeat.features(y)
    gen = torch.Generator(device="cpu").manual_seed(s.seed)

    noise = {}
    for name, m in noise_layers(G):        # projected maps start as white noise; else the generator's stay
        if s.optimize_noise:
            m.noise_const = torch.randn(m.noise_const.shape, generator=gen).to(device).requires_grad_(True)
        noise[name] = m.noise_const
    noise_list = list(noise.values())

    def losses(ws: torch.Tensor) -> tuple[torch.Tensor, dict, torch.Tensor]:
        img = G.synthesis(ws, noise_mode="const")
        parts = {"pixel": pixel_loss(img, y), "ssim": ms_ssim_loss(img, y), "prior": prior(ws)}
        if dfeat is not None:
            parts["disc"] = dfeat(img, y_feats)
        if s.optimize_noise and noise_list:
            parts["noise"] = noise_regularizer(noise_list)
        weights = {"pixel": s.pixel, "ssim": s.ssim, "prior": s.prior, "disc": s.disc, "noise": s.noise_reg}
        total = sum(weights[k] * v for k, v in parts.items())
        return total, {k: float(v.detach()) for k, v in parts.items()} | {"total": float(total.detach())}, img

    # the start: w_avg or the best of a few mapped samples
    with torch.no_grad():
        z = torch.randn(s.init_samples, G.z_dim, generator=gen).to(device)
        starts = torch.cat([G.mapping.w_avg.unsqueeze(0).float(), G.mapping.forward_w(z).float()])
        scores = [float(pixel_loss(G.synthesis(w.view(1, 1, -1).expand(1, G.num_ws, -1)), y)) for w in starts]
    w_opt = starts[int(np.argmin(scores))].clone().unsqueeze(0).requires_grad_(True)

    history: list[dict] = []
    stages = [("w", s.steps)] + ([("w+", s.wplus_steps)] if s.space == "w+" and s.wplus_steps > 0 else [])
    total_steps = sum(n for _, n in stages)
    bar = tqdm(total=total_steps, desc="invert", unit="step", disable=not progress, leave=False)
    done = 0
    ws_opt = None
    try:
        for stage, steps in stages:
            if stage == "w":
                params, base = [w_opt] + (noise_list if s.optimize_noise else []), s.lr
            else:                                # the W+ stage starts from the W stage's w
                ws_opt = w_opt.detach().unsqueeze(1).repeat(1, G.num_ws, 1).requires_grad_(True)
                params, base = [ws_opt] + (noise_list if s.optimize_noise else []), s.wplus_lr
            opt = torch.optim.Adam(params, lr=base, betas=(0.9, 0.999))
            for step in range(steps):
                t = (step + 1) / steps
                for g in opt.param_groups:
                    g["lr"] = _lr(base, t, s)
                if stage == "w":
                    scale = prior.w_std * s.initial_noise * max(0.0, 1.0 - t / s.noise_ramp) ** 2
                    w_in = w_opt + torch.randn(w_opt.shape, generator=gen).to(device) * scale
                    ws = w_in.unsqueeze(1).expand(1, G.num_ws, -1)
                else:
                    ws = ws_opt
                total, parts, img = losses(ws)
                opt.zero_grad(set_to_none=True)
                total.backward()
                opt.step()
                if s.optimize_noise:
                    normalize_noise(noise_list)
                done += 1
                bar.update(1)
                bar.set_postfix(stage=stage, loss=f"{parts['total']:.4f}")
                if step % log_every == 0 or step == steps - 1:
                    history.append({"stage": stage, "step": step, **parts})
                    if callback is not None:
                        callback(stage, done, total_steps, parts, img.detach())
    finally:
        bar.close()
    with torch.no_grad():
        final_ws = (ws_opt if ws_opt is not None else w_opt.unsqueeze(1).expand(1, G.num_ws, -1)).detach().clone()
        _, result_losses, img = losses(final_ws)
    return Projection(ws=final_ws, w=w_opt.detach().clone(), noise={k: v.detach().clone() for k, v in noise.items()},
                      history=history, final=result_losses, image=img.detach())


def apply_noise(G, noise: dict[str, torch.Tensor]) -> None:
    """Put projected noise maps into ``G``'s synthesis layers (by name; shapes must match)."""
    layers = dict(noise_layers(G))
    missing = set(noise) - set(layers)
    if missing:
        raise ValueError(f"noise maps for layers this generator does not have: {sorted(missing)[:3]}")
    for name, t in noise.items():
        buf = layers[name].noise_const
        if tuple(buf.shape) != tuple(t.shape):
            raise ValueError(f"noise map {name}: shape {tuple(t.shape)}, the generator's is {tuple(buf.shape)}")
        buf.copy_(t.to(buf.device, buf.dtype))
