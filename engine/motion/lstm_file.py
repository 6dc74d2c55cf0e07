"""The motion model's file: float32 safetensors with its config in the header metadata, plus a
human-readable ``<stem>.json`` sidecar; every failure is a :class:`MotionModelError` naming the file."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Union

import torch
from safetensors import safe_open

from engine.weights_io import save_with_sidecar, sidecar_path

if TYPE_CHECKING:  # pragma: no cover - typing only
    pass

from .lstm import (
    FORMAT_VERSION,
    METADATA_CONFIG_KEY,
    METADATA_FORMAT_KEY,
    AudioLSTMConfig,
    AudioMotionModel,
    MotionModelError,
)

__all__ = ["save_motion_model", "load_motion_model"]


def save_motion_model(model: AudioMotionModel, path: Union[str, os.PathLike]) -> Path:
    """Write ``model`` as float32 safetensors (config JSON in the metadata) + sidecar ``<stem>.json``.
    Atomic (temporary files + rename). Returns the safetensors path."""
    path = Path(path)
    side = sidecar_path(path)
    if side == path:
        raise MotionModelError(f"{path}: the model file must not be a .json file (the sidecar is {side.name})")
    cfg = model.config.to_dict()
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous().clone() for k, v in model.state_dict().items()}
    for k, v in tensors.items():
        if not bool(torch.isfinite(v).all()):
            raise MotionModelError(f"{path}: tensor '{k}' is not finite")
    metadata = {METADATA_FORMAT_KEY: FORMAT_VERSION, METADATA_CONFIG_KEY: json.dumps(cfg, sort_keys=True)}
    sidecar = {"format": "stylecast-motion-lstm", "format_version": int(FORMAT_VERSION), "weights": path.name,
               "config": cfg, "num_parameters": int(sum(t.numel() for t in tensors.values())),
               "tensors": {k: list(v.shape) for k, v in tensors.items()}}
    return save_with_sidecar(tensors, path, side, metadata, sidecar)


def load_motion_model(path: Union[str, os.PathLike], *, device: Union[str, torch.device] = "cpu"
                      ) -> AudioMotionModel:
    """Read a file written by :func:`save_motion_model` (config from the metadata, else from the
    sidecar). Returns the model in eval mode. Raises :class:`MotionModelError` naming the file."""
    path = Path(path)
    name = str(path)
    if not path.is_file():
        raise MotionModelError(f"{name}: no such file")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # safetensors raises several types for truncated / foreign files
        raise MotionModelError(f"{name}: not a readable safetensors motion model ({type(exc).__name__}: {exc})") from None
    raw = metadata.get(METADATA_CONFIG_KEY)
    try:
        if raw is not None:
            cfg_dict = json.loads(raw)
        else:
            side = sidecar_path(path)
            if not side.is_file():
                raise MotionModelError(f"{name}: no '{METADATA_CONFIG_KEY}' in the metadata and no sidecar {side.name}")
            cfg_dict = json.loads(side.read_text()).get("config")
        config = AudioLSTMConfig.from_dict(cfg_dict)
    except MotionModelError:
        raise
    except (ValueError, TypeError, AttributeError) as exc:
        raise MotionModelError(f"{name}: bad motion model config ({exc})") from None
    model = AudioMotionModel(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if missing or extra:
        raise MotionModelError(f"{name}: tensors do not match the config (missing: {missing or 'none'}, "
                               f"unexpected: {extra or 'none'})")
    for k, v in tensors.items():
        if tuple(v.shape) != tuple(expected[k].shape):
            raise MotionModelError(f"{name}: tensor '{k}' has shape {tuple(v.shape)}, expected {tuple(expected[k].shape)}")
        if not v.is_floating_point() or not bool(torch.isfinite(v).all()):
            raise MotionModelError(f"{name}: tensor '{k}' is not finite float data")
    model.load_state_dict({k: v.to(torch.float32) for k, v in tensors.items()}, strict=True)
    return model.to(device).eval()


