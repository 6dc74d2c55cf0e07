"""The discriminator ``D`` of an NVlabs stylegan2-ada-pytorch network pickle, as our
:class:`~engine.synthesis.discriminator.Discriminator` (the inversion's feature loss uses it).

Read with the same safe unpickler as the generator (no code from the file runs). Supported: the
unconditional residual D (``architecture='resnet'``, the StyleGAN2 default); its channel widths
are read off the tensors, the minibatch-stddev settings from ``epilogue_kwargs``. Anything else
(no ``D`` in the file, a conditional or ``skip``/``orig`` D, tensors that do not fit) is not an
error for the caller: :func:`read_discriminator` returns ``(None, why)``, and inversion goes on
without the feature loss, saying so.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import torch

from engine.synthesis import safe_pickle
from engine.synthesis.discriminator import Discriminator, DiscriminatorConfig
from engine.synthesis.formats.common import CheckpointError
from engine.synthesis.formats.nvlabs import flatten_persistent, load_pickle

__all__ = ["read_discriminator"]


def read_discriminator(path, *, data=None) -> tuple[Optional[Discriminator], str]:
    """``(D, "")`` in eval mode with its weights, or ``(None, the reason)``. ``data``: the pickle's
    contents when already read. CheckpointError only for a file that is not a readable pickle."""
    path = Path(path)
    data = load_pickle(path) if data is None else data
    D = data.get("D") if isinstance(data, dict) else None
    if not isinstance(D, safe_pickle.PersistentObject) or D.class_name != "Discriminator":
        return None, "the file holds no NVlabs discriminator"
    kw, attrs = dict(D.init_kwargs), D.state
    c_dim = kw.get("c_dim", attrs.get("c_dim", 0))
    if c_dim:
        return None, f"its discriminator is conditional (c_dim={c_dim})"
    architecture = kw.get("architecture", attrs.get("architecture", "resnet"))
    if architecture != "resnet":
        return None, f"its discriminator architecture {architecture!r} is not supported (only 'resnet')"
    try:
        tensors = flatten_persistent(path, D)
    except CheckpointError as exc:
        return None, str(exc).removeprefix(f"{path}: ")
    tensors = {k: v for k, v in tensors.items() if not k.endswith("resample_filter")}
    res = kw.get("img_resolution", attrs.get("img_resolution"))
    if not isinstance(res, int) or res < 4 or 2 ** int(math.log2(res)) != res:
        return None, f"its discriminator resolution {res!r} is not a power of two"
    channels = {}
    for r in (2 ** i for i in range(2, int(math.log2(res)) + 1)):
        t = tensors.get("b4.conv.weight" if r == 4 else f"b{r}.conv0.weight")
        if not isinstance(t, torch.Tensor) or t.ndim != 4:
            return None, f"its discriminator has no {'b4.conv' if r == 4 else f'b{r}.conv0'} weight"
        channels[r] = int(t.shape[0])
    ek = dict(kw.get("epilogue_kwargs") or {})
    try:
        config = DiscriminatorConfig(img_resolution=res, img_channels=int(kw.get("img_channels", 3)), channels=channels,
                                     mbstd_group_size=int(ek.get("mbstd_group_size") or 4),
                                     mbstd_num_channels=int(ek.get("mbstd_num_channels", 1)),
                                     conv_clamp=None if kw.get("conv_clamp") is None else float(kw["conv_clamp"]))
        net = Discriminator(config)
    except (ValueError, TypeError) as exc:
        return None, f"its discriminator settings are not supported ({exc})"
    mine = net.state_dict()
    if set(mine) != set(tensors):
        extra, missing = sorted(set(tensors) - set(mine)), sorted(set(mine) - set(tensors))
        return None, f"its discriminator's tensors do not fit (unknown {extra[:2]}, missing {missing[:2]})"
    for name, t in tensors.items():
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != tuple(mine[name].shape):
            return None, f"discriminator tensor {name!r} has shape {tuple(getattr(t, 'shape', ()))}, " \
                         f"expected {tuple(mine[name].shape)}"
        if not t.is_floating_point() or not bool(torch.isfinite(t).all()):
            return None, f"discriminator tensor {name!r} is not finite floating point"
    net.load_state_dict({k: v.float() for k, v in tensors.items()})
    return net.eval().requires_grad_(False), ""
