"""The content hash of a generator: what every cache and record keys a network on.

Directions, bases, ONNX graphs and TensorRT engines all record the hash of the generator they
were made from, so one is never applied to a different network by accident.
"""
from __future__ import annotations

import hashlib
import json

import torch

__all__ = ["generator_hash"]


def _state_key(G: torch.nn.Module) -> tuple:
    """Cheap identity of every tensor's storage and in-place version: changes when weights do."""
    return tuple((name, t.data_ptr(), t._version, t.dtype, tuple(t.shape))
                 for name, t in sorted(G.state_dict(keep_vars=True).items()))


def generator_hash(G: torch.nn.Module) -> str:
    """SHA-256 (hex) of a generator's content: sorted state_dict names, each tensor's float32
    little-endian bytes, and the config as sorted JSON.

    Independent of device and storage dtype (a float16 or CUDA copy hashes as its float32 CPU
    values would). The result is cached on the module and recomputed when any tensor is
    replaced or modified in place.
    """
    key = _state_key(G)
    cached = getattr(G, "_stylecast_hash", None)
    if cached is not None and cached[0] == key:
        return cached[1]
    h = hashlib.sha256()
    config = getattr(G, "config", None)
    if config is not None and hasattr(config, "to_dict"):
        h.update(json.dumps(config.to_dict(), sort_keys=True).encode())
    h.update(b"\0state\0")
    for name, t in sorted(G.state_dict().items()):
        arr = t.detach().to(device="cpu", dtype=torch.float32).contiguous().numpy()
        h.update(name.encode() + b"\0" + str(list(arr.shape)).encode() + b"\0")
        h.update(arr.astype("<f4", copy=False).tobytes())
    digest = h.hexdigest()
    object.__setattr__(G, "_stylecast_hash", (key, digest))  # plain attribute, not a submodule/buffer
    return digest
