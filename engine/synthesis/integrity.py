"""Integrity of checkpoint files: a file's sha256 (``--expect-sha256``, pinned presets) and the
hash of a StyleCast file's tensors, written into its safetensors metadata by ``engine.convert``
and checked on every load, so a flipped byte is refused instead of rendered."""
from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Mapping, Optional

import torch

from engine.synthesis.formats.common import CheckpointError, regular_file

__all__ = ["METADATA_TENSORS_SHA256", "file_sha256", "tensors_sha256", "check_file_sha256", "parse_sha256"]

#: safetensors metadata key holding :func:`tensors_sha256` of the file's tensors
METADATA_TENSORS_SHA256 = "stylecast_tensors_sha256"
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def parse_sha256(text: str) -> str:
    """A sha256 given by a user: 64 hex digits (any case); ValueError otherwise."""
    value = str(text).strip().lower()
    if not _HEX64.match(value):
        raise ValueError(f"a sha256 is 64 hex digits, got {text!r}")
    return value


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(chunk)
            if not block:
                return h.hexdigest()
            h.update(block)


def check_file_sha256(path: Path, expected: Optional[str], what: str = "--expect-sha256") -> None:
    """Refuse ``path`` unless its sha256 is ``expected`` (None: no check); a FIFO, device or
    directory is refused before it is opened."""
    if expected is None:
        return
    regular_file(path)
    got = file_sha256(path)
    if got != parse_sha256(expected):
        raise CheckpointError(f"{path}: sha256 {got} does not match {what} {expected} "
                              "(a damaged, truncated or different file)")


def tensors_sha256(tensors: Mapping[str, torch.Tensor]) -> str:
    """sha256 over the tensors in name order: name, dtype, shape and raw bytes of each."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        h.update(f"{name}\0{str(t.dtype).removeprefix('torch.')}\0{list(t.shape)}\0".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()
