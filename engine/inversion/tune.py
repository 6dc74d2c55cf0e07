"""Pivotal tuning (Roich et al. 2022, "PTI"): after the latent search, nudge the synthesis
weights so the pivot draws the photo, without breaking what the rest of the engine relies on.

The pivot ``ws`` (the projection's result) stays fixed; the synthesis network's parameters (not
the mapping, not the noise buffers) are optimised with Adam on

* **reconstruction**: pixel L1 + L2 at several scales and 1 − MS-SSIM of G_t(pivot) against the
  aligned photo (the projection's losses);
* **locality** (PTI's regulariser): a point w_r at a fixed distance from the pivot toward a random
  mapped face, its image under the tuned network kept equal to the original network's (pixels +
  MS-SSIM), so other identities keep their looks;
* **motion** (StyleCast's addition, the point of the engine): for each motion direction d_k at
  ± ``motion_units`` units, the image *change* it makes on the pivot,
  G_t(pivot + d_k) − G_t(pivot), kept equal to the original network's
  G_0(pivot + d_k) − G_0(pivot), relative to that change's own energy, so a small move (a blink)
  counts as much as a large one. The mouth still opens as much, in the same place, on the
  tuned face.

Every step renders the pivot, one direction move (cycling over directions and signs) and one
locality point in one batch. :func:`motion_report` measures afterwards how well each direction's
change was kept (cosine and gain of the image changes) and how far other identities moved.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import torch

from engine.inversion.losses import ms_ssim_loss, pixel_loss

__all__ = ["TuneSettings", "Tuned", "direction_offsets", "tune", "motion_report", "tunable_state", "apply_tuned"]


@dataclass
class TuneSettings:
    steps: int = 150
    lr: float = 1e-3                 # PTI uses 3e-4; 1e-3 reaches further in 150 steps
    pixel: float = 1.0
    ssim: float = 1.0
    locality: float = 1.0
    locality_radius: float = 1.0     # × the median distance of mapped faces to w_avg
    motion: float = 0.2
    motion_units: float = 2.0        # each direction is moved ± this many of its units
    seed: int = 0

    def check(self) -> "TuneSettings":
        if self.steps < 1:
            raise ValueError("tuning needs at least 1 step")
        if not (self.lr > 0 and self.motion_units > 0 and self.locality_radius > 0):
            raise ValueError("lr, motion_units and locality_radius must be positive")
        return self


@dataclass
class Tuned:
    state: dict[str, torch.Tensor]           # synthesis.<name> → tuned parameter (float32, CPU)
    history: list[dict] = field(default_factory=list)
    final: dict = field(default_factory=dict)
    image: Optional[torch.Tensor] = None     # [1, 3, R, R]: the tuned reconstruction, [-1, 1]
    generator: Optional[torch.nn.Module] = field(default=None, repr=False)   # the tuned copy (eval, no grad)


def tunable_state(G) -> dict[str, torch.Tensor]:
    """The tensors tuning changes: every synthesis parameter, by its ``G.state_dict()`` name."""
    return {f"synthesis.{k}": v for k, v in G.synthesis.named_parameters()}


def apply_tuned(G, state: dict[str, torch.Tensor]) -> None:
    """Copy tuned synthesis parameters into ``G`` (in place: captured graphs stay valid). The
    names and shapes must be exactly ``G``'s synthesis parameters."""
    mine = tunable_state(G)
    if set(state) != set(mine):
        extra, missing = sorted(set(state) - set(mine)), sorted(set(mine) - set(state))
        raise ValueError(f"tuned weights do not fit this generator (unknown {extra[:2]}, missing {missing[:2]})")
    for name, t in state.items():        # (safetensors stores a 0-d scalar as [1])
        if tuple(t.shape) != tuple(mine[name].shape) and not (t.numel() == 1 == mine[name].numel()):
            raise ValueError(f"tuned weight {name}: shape {tuple(t.shape)}, the generator's is {tuple(mine[name].shape)}")
        if not bool(torch.isfinite(t).all()):
            raise ValueError(f"tuned weight {name} contains NaN or infinity")
    with torch.no_grad():
        for name, t in state.items():
            mine[name].copy_(t.reshape(mine[name].shape).to(mine[name].device, mine[name].dtype))


def direction_offsets(directions, num_ws: int, units: float, device) -> tuple[list[str], torch.Tensor]:
    """``(labels, offsets [2K, num_ws, w_dim])``: each direction at +units and −units, on its layers,
    in its own units (stdev), as the engine's latent path applies it."""
    labels, rows = [], []
    for d in directions:
        v = torch.from_numpy(d.vector).float() * float(d.stdev)
        mask = torch.from_numpy(d.layer_mask(num_ws)).float()[:, None]
        for sign in (1.0, -1.0):
            labels.append(f"{d.name}{'+' if sign > 0 else '-'}")
            rows.append(sign * units * mask * v[None])
    if not rows:
        raise ValueError("tuning needs at least one motion direction")
    return labels, torch.stack(rows).to(device)


def _lr(base: float, t: float) -> float:
    """Short warm-up, cosine down over the last quarter (as the projector)."""
    return base * min(1.0, t / 0.05) * (0.5 - 0.5 * math.cos(min(1.0, (1.0 - t) / 0.25) * math.pi))


def tune(G, target: torch.Tensor, pivot: torch.Tensor, directions, settings: Optional[TuneSettings] = None, *,
         progress: bool = True, log_every: int = 10,
         callback: Optional[Callable[[str, int, int, dict, torch.Tensor], None]] = None) -> Tuned:
    """Tune a copy of ``G`` (noise buffers as the caller set them) so ``pivot`` [1, num_ws, w_dim]
    draws ``target`` [1, 3, R, R] in [-1, 1]; ``directions``: the motion set to keep working."""
    from tqdm.auto import tqdm

    s = (settings or TuneSettings()).check()
    device = G.mapping.w_avg.device
    G0 = copy.deepcopy(G).float().eval().requires_grad_(False)
    Gt = copy.deepcopy(G0)
    params = list(Gt.synthesis.parameters())
    for p in params:
        p.requires_grad_(True)
    pivot = pivot.detach().to(device, torch.float32)
    labels, offsets = direction_offsets(directions, G.num_ws, s.motion_units, device)
    gen = torch.Generator().manual_seed(s.seed)
    with torch.no_grad():
        base = G0.synthesis(pivot, noise_mode="const")
        ref_delta = torch.cat([G0.synthesis(pivot + o[None], noise_mode="const") for o in offsets]) - base
        energy = ref_delta.square().mean(dim=(1, 2, 3)).clamp_min(1e-6)
        w_avg = G0.mapping.w_avg.float()
        typical = G0.mapping.forward_w(torch.randn(256, G.z_dim, generator=gen).to(device)).float()
        radius = s.locality_radius * float((typical - w_avg).norm(dim=1).median())
    opt = torch.optim.Adam(params, lr=s.lr, betas=(0.9, 0.999))
    history: list[dict] = []
    bar = tqdm(total=s.steps, desc="tune", unit="step", disable=not progress, leave=False)
    try:
        for step in range(s.steps):
            for g in opt.param_groups:
                g["lr"] = _lr(s.lr, (step + 1) / s.steps)
            k = step % len(labels)
            with torch.no_grad():
                w_z = G0.mapping.forward_w(torch.randn(1, G.z_dim, generator=gen).to(device)).float()
                away = w_z - pivot.mean(1)
                w_r = (pivot.mean(1) + radius * away / away.norm().clamp_min(1e-8)).unsqueeze(1).expand(1, G.num_ws, -1)
                ref_r = G0.synthesis(w_r, noise_mode="const")
            batch = torch.cat([pivot, pivot + offsets[k][None], w_r])
            out = Gt.synthesis(batch, noise_mode="const")
            img, moved, img_r = out[:1], out[1:2], out[2:3]
            parts = {"pixel": pixel_loss(img, target), "ssim": ms_ssim_loss(img, target),
                     "locality": pixel_loss(img_r, ref_r) + ms_ssim_loss(img_r, ref_r),
                     "motion": ((moved - img) - ref_delta[k:k + 1]).square().mean() / energy[k]}
            weights = {"pixel": s.pixel, "ssim": s.ssim, "locality": s.locality, "motion": s.motion}
            total = sum(weights[n] * v for n, v in parts.items())
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()
            losses = {n: float(v.detach()) for n, v in parts.items()} | {"total": float(total.detach())}
            bar.update(1)
            bar.set_postfix(loss=f"{losses['total']:.4f}")
            if step % log_every == 0 or step == s.steps - 1:
                history.append({"stage": "tune", "step": step, **losses})
                if callback is not None:
                    callback("tune", step + 1, s.steps, losses, img.detach())
    finally:
        bar.close()
    with torch.no_grad():
        image = Gt.synthesis(pivot, noise_mode="const")
    Gt.requires_grad_(False)
    state = {k: v.detach().cpu().clone() for k, v in tunable_state(Gt).items()}
    return Tuned(state=state, history=history, final=history[-1] if history else {}, image=image, generator=Gt)


@torch.no_grad()
def motion_report(G0, Gt, pivot: torch.Tensor, directions, *, units: float = 2.0, others: int = 8,
                  seed: int = 1) -> dict:
    """How the tuned network ``Gt`` keeps ``G0``'s motion on ``pivot`` and others' looks.

    Per direction (at +units): ``cosine`` of the image changes G(pivot + d) − G(pivot) of the two
    networks and ``gain`` (the tuned change's norm over the original's). ``others_psnr_db``: the
    median PSNR between the two networks' images of ``others`` mapped faces (truncation 0.7).
    """
    device = G0.mapping.w_avg.device
    pivot = pivot.to(device, torch.float32)
    labels, offsets = direction_offsets(directions, G0.num_ws, units, device)
    out: dict = {"directions": {}}
    b0, bt = G0.synthesis(pivot, noise_mode="const"), Gt.synthesis(pivot, noise_mode="const")
    for label, o in zip(labels, offsets):
        if not label.endswith("+"):
            continue
        d0 = (G0.synthesis(pivot + o[None], noise_mode="const") - b0).flatten()
        dt = (Gt.synthesis(pivot + o[None], noise_mode="const") - bt).flatten()
        cos = float(torch.nn.functional.cosine_similarity(d0, dt, dim=0))
        out["directions"][label[:-1]] = {"cosine": round(cos, 4), "gain": round(float(dt.norm() / d0.norm().clamp_min(1e-8)), 4)}
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(others, G0.z_dim, generator=gen).to(device)
    w = G0.mapping.w_avg + 0.7 * (G0.mapping.forward_w(z) - G0.mapping.w_avg)
    ws = w.unsqueeze(1).expand(-1, G0.num_ws, -1)
    a, b = (G0.synthesis(ws, noise_mode="const") + 1) / 2, (Gt.synthesis(ws, noise_mode="const") + 1) / 2
    mse = (a.clamp(0, 1) - b.clamp(0, 1)).square().mean(dim=(1, 2, 3)).clamp_min(1e-12)
    out["others_psnr_db"] = round(float(np.median((10 * torch.log10(1.0 / mse)).cpu().numpy())), 2)
    cos = [v["cosine"] for v in out["directions"].values()]
    out["motion_cosine_min"] = round(min(cos), 4) if cos else None
    return out
