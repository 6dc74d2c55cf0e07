"""The adversarial pieces of the demo trainer: G's balanced adversarial gradient on top of a
reconstruction loss, and D's logistic step with StyleGAN2's lazy R1."""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["adversarial_backward", "discriminator_step"]


def adversarial_backward(D, img: torch.Tensor, loss: torch.Tensor, weight: float, rec: dict) -> None:
    """Backpropagate G's gradient: the reconstruction ``loss``'s plus the non-saturating adversarial
    loss's, the latter scaled at the image ``img`` so that its norm is ``weight`` times the former's.

    Balancing at the image (as VQGAN balances at G's last layer) keeps the adversarial pull a
    fixed share of the reconstruction's as both shrink, without a weight tuned to the losses'
    scales; the reconstruction keeps G a decoder of z, the adversarial term sharpens what an
    L1 averages out. D's parameters get no gradient."""
    (g_rec,) = torch.autograd.grad(loss, img, retain_graph=True)
    D.requires_grad_(False)
    loss_adv = F.softplus(-D(img)).mean()
    (g_adv,) = torch.autograd.grad(loss_adv, img, retain_graph=True)
    D.requires_grad_(True)
    scale = weight * g_rec.norm() / g_adv.norm().clamp_min(1e-12)
    img.backward(g_rec + scale * g_adv)
    rec.update(loss_adv=float(loss_adv.detach()), adv_scale=float(scale))


def discriminator_step(D, opt, fakes: torch.Tensor, reals: torch.Tensor, rec: dict, *,
                       gamma: float = 0.0, r1_interval: int = 1) -> None:
    """D (logistic) on ``reals`` (the renders, or the data's images) against G's images; then, when
    ``gamma`` > 0 (the caller passes it on every ``r1_interval``-th step), lazy R1 on the reals,
    scaled by the interval, as its own D step."""
    fake_logits = D(fakes)
    real_logits = D(reals)
    loss_D = F.softplus(fake_logits).mean() + F.softplus(-real_logits).mean()
    opt.zero_grad(set_to_none=True)
    loss_D.backward()
    opt.step()
    rec.update(loss_D=float(loss_D.detach()), score_real=float(real_logits.detach().mean()),
               score_fake=float(fake_logits.detach().mean()))
    if gamma > 0:
        x = reals.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(D(x).sum(), x, create_graph=True)
        penalty = grad.square().sum(dim=[1, 2, 3])
        loss_r1 = (penalty * (gamma / 2)).mean() * r1_interval
        opt.zero_grad(set_to_none=True)
        loss_r1.backward()
        opt.step()
        rec["r1_penalty"] = float(penalty.detach().mean())
