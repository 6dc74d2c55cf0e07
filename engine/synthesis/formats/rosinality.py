"""rosinality stylegan2-pytorch ``.pt`` files (torch zip or legacy torch format): converted ones
(``g_ema``, ``latent_avg``) and training checkpoints of its ``train.py`` (``g``, ``d``, ``g_ema``,
``g_optim``, ``d_optim``, ``args``, ``ada_aug_p``). Read with ``torch.load(weights_only=True)``;
``argparse.Namespace`` is the only extra global allowed."""
from __future__ import annotations

import argparse
import os
import pickle
import re
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from engine.synthesis import safe_pickle
from engine.synthesis.formats.common import (
    FORMAT_ROSINALITY,
    RESAMPLE_FILTER,
    ZIP_MAGIC,
    Checkpoint,
    CheckpointError,
    Slot,
    first_line,
    fmt_shape,
    gather,
    make_generator,
    read_head,
)
from engine.synthesis.networks import GeneratorConfig
from engine.synthesis.pickle_scan import PickleLimitError, scan_torch_file

__all__ = ["read_rosinality"]


def _torch_load(path: Path) -> Any:
    head, _ = read_head(path, 4)
    if head.startswith(ZIP_MAGIC):
        try:
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
        except (zipfile.BadZipFile, OSError, ValueError) as exc:
            raise CheckpointError(f"{path}: truncated or corrupt zip archive ({first_line(exc)})") from None
        if not any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
            raise CheckpointError(f"{path}: zip archive is not a torch checkpoint (no data.pkl inside)")
    try:
        with open(path, "rb") as f:      # bound its pickles before torch builds anything
            scan_torch_file(f, os.fstat(f.fileno()).st_size, what="torch file")
    except PickleLimitError as exc:
        raise CheckpointError(f"{path}: {exc}") from None
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"{path}: truncated or corrupt torch file ({first_line(exc)})") from None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with torch.serialization.safe_globals([argparse.Namespace]):
                return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        named = safe_pickle.forbidden_global_from_torch_error(exc)
        if named is not None:
            raise CheckpointError(f"{path}: {named}") from None
        raise CheckpointError(f"{path}: corrupt torch file ({first_line(exc)})") from None
    except Exception as exc:  # RuntimeError from the zip reader, EOFError, ...
        raise CheckpointError(f"{path}: truncated or corrupt torch file ({first_line(exc)})") from None


def read_rosinality(path: Path) -> Checkpoint:
    ckpt = _torch_load(path)
    if isinstance(ckpt, dict) and "input.input" in ckpt and "g_ema" not in ckpt:
        ckpt = {"g_ema": ckpt}  # a bare g_ema.state_dict()
    if not isinstance(ckpt, dict) or "g_ema" not in ckpt:
        keys = ", ".join(repr(k) for k in list(ckpt)[:8]) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CheckpointError(f"{path}: torch file has no 'g_ema' generator (found: {keys or 'nothing'})")
    g = ckpt["g_ema"]
    if not isinstance(g, dict):
        raise CheckpointError(f"{path}: 'g_ema' is a {type(g).__name__}, not a state dict")
    args = ckpt.get("args")
    arch = getattr(args, "arch", "stylegan2")
    if arch != "stylegan2":
        raise CheckpointError(f"{path}: rosinality architecture '{arch}' is not supported (only 'stylegan2')")

    config = _rosinality_config(path, g, args)
    slots = _rosinality_slots(config)
    raw = {k: v for k, v in g.items()}
    notes: list[str] = []
    latent_avg = ckpt.get("latent_avg")
    compute_w_avg = latent_avg is None
    if latent_avg is not None:
        if not isinstance(latent_avg, torch.Tensor):
            raise CheckpointError(f"{path}: 'latent_avg' is a {type(latent_avg).__name__}, not a tensor")
        if latent_avg.ndim == 2 and latent_avg.shape[0] == 1:
            latent_avg = latent_avg[0]
        raw["latent_avg"] = latent_avg
    else:
        raw["latent_avg"] = torch.zeros(config.w_dim)
    ignore = {k for k in g if k.endswith(".blur.kernel") or k.endswith(".upsample.kernel")}
    for key in sorted(ignore):
        _check_rosinality_kernel(path, key, g[key])
    state = gather(path, config, raw, slots, ignore=ignore)
    if compute_w_avg:
        msg = "no 'latent_avg' in the checkpoint; w_avg set to the mean of 10,000 mapped z (seed 0)"
        warnings.warn(f"{path}: {msg}", stacklevel=3)
        notes.append(msg)
        G = make_generator(path, config)
        G.load_state_dict(state, strict=True)
        z = torch.from_numpy(np.random.RandomState(0).randn(10_000, config.z_dim).astype(np.float32))
        with torch.no_grad():
            state["mapping.w_avg"] = G.mapping.forward_w(z).mean(dim=0)
    return Checkpoint(path=path, format=FORMAT_ROSINALITY, config=config, state=state, notes=notes)


def _check_rosinality_kernel(path: Path, key: str, t: Any) -> None:
    ok = isinstance(t, torch.Tensor) and tuple(t.shape) == (4, 4) and t.is_floating_point()
    if not ok or not torch.allclose(t.float() / t.float().sum(), RESAMPLE_FILTER, atol=1e-6):
        raise CheckpointError(f"{path}: tensor '{key}' is not the [1, 3, 3, 1] blur kernel; other kernels are not supported")


def _rosinality_config(path: Path, g: dict, args: Any) -> GeneratorConfig:
    def shape_of(key: str) -> tuple:
        t = g.get(key)
        if not isinstance(t, torch.Tensor):
            raise CheckpointError(f"{path}: missing tensor '{key}'")
        return tuple(t.shape)

    mlp = sorted(int(m.group(1)) for k in g if (m := re.fullmatch(r"style\.(\d+)\.weight", k)))
    if not mlp:
        raise CheckpointError(f"{path}: missing tensor 'style.1.weight'")
    n_mlp = len(mlp)
    w_shape = shape_of("style.1.weight")
    if len(w_shape) != 2:
        raise CheckpointError(f"{path}: tensor 'style.1.weight' has shape {fmt_shape(w_shape)}, expected 2 dimensions")
    style_dim = int(w_shape[1])
    n_rgb = len({m.group(1) for k in g if (m := re.fullmatch(r"to_rgbs\.(\d+)\..*", k))})
    size = 2 ** (n_rgb + 2)
    channel_multiplier = getattr(args, "channel_multiplier", 2)
    if size >= 64:
        c64 = shape_of("convs.6.conv.weight")  # first (up-sampling) conv of the 64 px block
        if len(c64) != 5 or c64[1] % 256:
            raise CheckpointError(
                f"{path}: tensor 'convs.6.conv.weight' has shape {fmt_shape(c64)}, which fits no channel_multiplier"
            )
        channel_multiplier = c64[1] // 256
    if args is not None:
        for name, ours in (("size", size), ("latent", style_dim), ("n_mlp", n_mlp)):
            theirs = getattr(args, name, ours)
            if theirs != ours:
                raise CheckpointError(f"{path}: args.{name}={theirs} but the g_ema tensors imply {ours}")
    try:
        return GeneratorConfig.rosinality(
            size=size, style_dim=style_dim, n_mlp=n_mlp,
            channel_multiplier=int(channel_multiplier), lr_mlp=float(getattr(args, "lr_mlp", 0.01)),
        )
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: unsupported network: {exc}") from None


def _lead1(shape: tuple) -> tuple:
    return (1, *shape)


def _rosinality_slots(config: GeneratorConfig) -> dict[str, Slot]:
    """Our tensor name → rosinality g_ema name and shape (see API_SPEC: rosinality naming)."""
    slots: dict[str, Slot] = {}
    for i in range(config.mapping_layers):
        slots[f"mapping.fc{i}.weight"] = Slot(f"style.{i + 1}.weight")
        slots[f"mapping.fc{i}.bias"] = Slot(f"style.{i + 1}.bias")
    slots["mapping.w_avg"] = Slot("latent_avg")
    slots["synthesis.b4.const"] = Slot("input.input", _lead1)

    def styled(ours: str, theirs: str, noise: str | None) -> None:
        slots[f"{ours}.weight"] = Slot(f"{theirs}.conv.weight", _lead1)
        slots[f"{ours}.affine.weight"] = Slot(f"{theirs}.conv.modulation.weight")
        slots[f"{ours}.affine.bias"] = Slot(f"{theirs}.conv.modulation.bias")
        slots[f"{ours}.bias"] = Slot(f"{theirs}.activate.bias")
        slots[f"{ours}.noise_strength"] = Slot(f"{theirs}.noise.weight", lambda s: (1,))
        if noise is not None:
            slots[f"{ours}.noise_const"] = Slot(noise, lambda s: (1, 1, *s))

    def to_rgb(ours: str, theirs: str) -> None:
        slots[f"{ours}.weight"] = Slot(f"{theirs}.conv.weight", _lead1)
        slots[f"{ours}.affine.weight"] = Slot(f"{theirs}.conv.modulation.weight")
        slots[f"{ours}.affine.bias"] = Slot(f"{theirs}.conv.modulation.bias")
        slots[f"{ours}.bias"] = Slot(f"{theirs}.bias", lambda s: (1, *s, 1, 1))

    styled("synthesis.b4.conv1", "conv1", "noises.noise_0")
    to_rgb("synthesis.b4.torgb", "to_rgb1")
    for k, res in enumerate(config.resolutions[1:]):
        styled(f"synthesis.b{res}.conv0", f"convs.{2 * k}", f"noises.noise_{2 * k + 1}")
        styled(f"synthesis.b{res}.conv1", f"convs.{2 * k + 1}", f"noises.noise_{2 * k + 2}")
        to_rgb(f"synthesis.b{res}.torgb", f"to_rgbs.{k}")
    return slots
