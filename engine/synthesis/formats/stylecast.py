"""StyleCast's own format: a safetensors file whose header metadata holds the
:class:`GeneratorConfig` as JSON under ``"stylecast_config"``, plus a human-readable sidecar
``<name>.json`` (used when the metadata is missing). Any float dtype; loaded as float32."""
from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import safe_open

from engine.synthesis.formats.common import (
    FORMAT_STYLECAST,
    METADATA_CONFIG_KEY,
    METADATA_FORMAT_KEY,
    STYLECAST_FORMAT_VERSION,
    Checkpoint,
    CheckpointError,
    first_line,
    gather,
    sidecar_path,
)
from engine.synthesis.integrity import METADATA_TENSORS_SHA256, tensors_sha256
from engine.synthesis.networks import Generator, GeneratorConfig
from engine.weights_io import save_with_sidecar

__all__ = ["read_stylecast", "save_generator"]


def read_stylecast(path: Path) -> Checkpoint:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            metadata = f.metadata() or {}
            raw = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as exc:  # SafetensorError, OSError on truncated data, ...
        raise CheckpointError(f"{path}: truncated or corrupt safetensors file ({first_line(exc)})") from None

    config_json = metadata.get(METADATA_CONFIG_KEY)
    origin = "header metadata"
    if config_json is None:
        side = sidecar_path(path)
        origin = side.name
        try:
            config_json = json.dumps(json.loads(side.read_text())["config"])
        except FileNotFoundError:
            raise CheckpointError(
                f"{path}: safetensors file without a StyleCast config (no '{METADATA_CONFIG_KEY}' metadata "
                f"and no sidecar {side.name})"
            ) from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"{path}: unreadable sidecar {side.name} ({first_line(exc)})") from None
    try:
        config = GeneratorConfig.from_dict(json.loads(config_json))
    except (ValueError, TypeError) as exc:
        raise CheckpointError(f"{path}: invalid StyleCast config in {origin} ({first_line(exc)})") from None
    recorded = metadata.get(METADATA_TENSORS_SHA256)
    if recorded is not None and tensors_sha256(raw) != recorded:
        raise CheckpointError(f"{path}: the tensors do not match the sha256 recorded in the file "
                              "(damaged or altered after it was written)")
    state = gather(path, config, raw)
    return Checkpoint(path=path, format=FORMAT_STYLECAST, config=config, state=state)


def save_generator(
    G: Generator,
    path: str | os.PathLike,
    *,
    dtype: torch.dtype = torch.float32,
    source: str | None = None,
) -> Path:
    """Write ``G`` in the StyleCast format: ``path`` (safetensors) and the sidecar ``<stem>.json``.

    ``dtype`` is the on-disk float type (``torch.float16`` halves the size; loading always gives
    float32). ``source`` is an optional provenance note stored in both files. Writes are atomic
    (temporary file + rename). Returns the safetensors path.
    """
    if dtype not in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        raise ValueError(f"dtype must be a float type, got {dtype}")
    path = Path(path)
    side = sidecar_path(path)
    if side == path:
        raise ValueError(f"{path}: the checkpoint must not be a .json file (the sidecar is {side.name})")
    config_json = json.dumps(G.config.to_dict(), sort_keys=True)
    tensors = {k: v.detach().to("cpu", dtype).contiguous() for k, v in G.state_dict().items()}
    for k, v in tensors.items():
        if not bool(torch.isfinite(v).all()):
            raise ValueError(f"{path}: tensor '{k}' is not finite as {str(dtype).removeprefix('torch.')} "
                             f"(max |x| = {float(G.state_dict()[k].abs().max()):g})")
    metadata = {
        METADATA_FORMAT_KEY: STYLECAST_FORMAT_VERSION,
        METADATA_CONFIG_KEY: config_json,
        "dtype": str(dtype).removeprefix("torch."),
        METADATA_TENSORS_SHA256: tensors_sha256(tensors),
    }
    if source is not None:
        metadata["source"] = str(source)
    sidecar = {
        "format": "stylecast-generator",
        "format_version": int(STYLECAST_FORMAT_VERSION),
        "weights": path.name,
        "dtype": metadata["dtype"],
        "source": source,
        "config": G.config.to_dict(),
        "num_parameters": int(sum(t.numel() for t in tensors.values())),
        "tensors": {k: list(v.shape) for k, v in tensors.items()},
    }
    return save_with_sidecar(tensors, path, side, metadata, sidecar)
