"""Writing StyleCast's weight files: safetensors + a human-readable JSON sidecar, atomically."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Mapping

import torch
from safetensors.torch import save_file


def sidecar_path(path: str | os.PathLike) -> Path:
    """``OUT.safetensors`` → ``OUT.json`` (the human-readable config next to the weights)."""
    path = Path(path)
    return path.with_suffix(".json") if path.suffix else path.with_name(path.name + ".json")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def save_with_sidecar(tensors: Mapping[str, torch.Tensor], path: Path, side: Path,
                      metadata: Mapping[str, str], sidecar: dict) -> Path:
    """Write ``tensors`` to ``path`` (safetensors, ``metadata`` in its header) and ``sidecar`` as
    JSON to ``side``. Both go to temporary files first and are renamed into place, so a reader
    never sees a half-written file. Returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp_side = side.with_name(f".{side.name}.{os.getpid()}.tmp")
    try:
        save_file(dict(tensors), str(tmp), metadata=dict(metadata))
        os.chmod(tmp, 0o666 & ~_umask())  # safetensors creates it 0600; give it the usual mode
        tmp_side.write_text(json.dumps(sidecar, indent=2) + "\n")
        os.replace(tmp, path)
        os.replace(tmp_side, side)
    finally:
        tmp.unlink(missing_ok=True)
        tmp_side.unlink(missing_ok=True)
    return path


def atomic_torch_save(obj, path: Path) -> None:
    """``torch.save(obj, path)`` through a temporary file and a rename: a reader (a resume) never
    sees a half-written state, and a failed write leaves the old one."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
