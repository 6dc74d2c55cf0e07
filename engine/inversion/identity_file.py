"""The ``.npz`` an inversion writes, and reading it back for one generator.

Keys (plain arrays, read with ``allow_pickle=False``):

* ``ws`` float32 [1, num_ws, w_dim]: the identity; ``w`` float32 [1, w_dim]: the W stage's pivot.
* ``noise:<layer>`` float32 [R, R]: the projected noise map of each synthesis layer (optional).
* ``meta``: one JSON string: ``format`` (``"stylecast-identity"``), ``version``, ``generator_hash``
  (:func:`engine.synthesis.fingerprint.generator_hash` of the checkpoint inverted into),
  ``num_ws``, ``w_dim``, ``space``, ``transform`` (the aligned crop's geometry), ``report``
  (losses, identity distance, settings, timings), ``tuned`` (null, or the PTI-tuned synthesis
  weights written beside it: ``{"file", "sha256", "tensors", "generator_hash"}``, the last being
  the hash of the checkpoint with those weights and the identity's noise maps in it).

The tuned weights are a safetensors file (``me.npz`` → ``me.tuned.safetensors``, float32, one
tensor per synthesis parameter by its ``state_dict`` name). It is written before the ``.npz``
that names it, and read back only when its SHA-256 is the one recorded.

:func:`read_identity` refuses a file made for another checkpoint, with a one-line error naming both.
"""
from __future__ import annotations

import hashlib
import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

__all__ = ["IdentityFile", "IdentityFileError", "write_identity", "read_identity", "is_identity_file",
           "FORMAT", "VERSION"]

FORMAT, VERSION = "stylecast-identity", 1


class IdentityFileError(ValueError):
    """A .npz identity that cannot be used here (one line, naming the file)."""


@dataclass
class IdentityFile:
    ws: np.ndarray
    w: Optional[np.ndarray] = None
    noise: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)
    #: the aligned crop and its reconstruction (uint8 [R, R, 3]) when it was just made; not written
    crop: Optional[np.ndarray] = field(default=None, repr=False)
    reconstruction: Optional[np.ndarray] = field(default=None, repr=False)
    #: PTI-tuned synthesis weights (name → float32 array), or None
    tuned: Optional[dict[str, np.ndarray]] = field(default=None, repr=False)


def tuned_path(path) -> Path:
    """Where the tuned weights of identity ``path`` live: ``me.npz`` → ``me.tuned.safetensors``."""
    path = Path(path)
    return path.with_name(path.stem + ".tuned.safetensors")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def is_identity_file(path) -> bool:
    return isinstance(path, (str, os.PathLike)) and str(path).lower().endswith(".npz")


def write_identity(path, ident: IdentityFile) -> Path:
    """Write atomically (a temporary file renamed into place: nothing half-written is left)."""
    path = Path(path)
    meta = {"format": FORMAT, "version": VERSION, **ident.meta}
    if ident.tuned is not None:
        from safetensors.numpy import save

        weights = tuned_path(path)
        part = weights.with_name(weights.name + ".part")
        blob = save({k: np.ascontiguousarray(v, np.float32) for k, v in ident.tuned.items()},
                    metadata={"format": "stylecast-tuned", "base_hash": str(meta.get("generator_hash"))})
        with open(part, "wb") as f:
            f.write(blob)
        os.replace(part, weights)
        meta["tuned"] = ident.meta["tuned"] = {**(meta.get("tuned") or {}), "file": weights.name,
                                                "sha256": hashlib.sha256(blob).hexdigest(), "tensors": len(ident.tuned)}
    arrays = {"ws": np.asarray(ident.ws, np.float32), "meta": np.array(json.dumps(meta))}
    if ident.w is not None:
        arrays["w"] = np.asarray(ident.w, np.float32)
    for name, t in ident.noise.items():
        arrays[f"noise:{name}"] = np.asarray(t, np.float32)
    tmp = path.with_name(path.name + ".part")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)
    return path


def read_identity(path, *, generator_hash: Optional[str] = None, num_ws: Optional[int] = None,
                  w_dim: Optional[int] = None) -> IdentityFile:
    """Read and check an identity ``.npz`` (for the generator with this hash and shape)."""
    path = Path(path)
    if not path.is_file():
        raise IdentityFileError(f"{path}: no such file" if not path.exists() else f"{path}: not a regular file")
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError) as exc:
        raise IdentityFileError(f"{path}: not a readable .npz ({exc})") from None
    if "ws" not in data or "meta" not in data:
        raise IdentityFileError(f"{path}: not a StyleCast identity (no 'ws' and 'meta'; a plain latent goes in a .npy)")
    try:
        meta = json.loads(str(data["meta"]))
    except ValueError:
        raise IdentityFileError(f"{path}: its 'meta' is not JSON") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise IdentityFileError(f"{path}: not a StyleCast identity (format {meta.get('format') if isinstance(meta, dict) else None!r})")
    ws = data["ws"]
    if ws.dtype != np.float32 or ws.ndim != 3 or ws.shape[0] != 1 or not np.isfinite(ws).all():
        raise IdentityFileError(f"{path}: 'ws' must be finite float32 [1, num_ws, w_dim], got {ws.dtype} {ws.shape}")
    if generator_hash is not None and meta.get("generator_hash") != generator_hash:
        raise IdentityFileError(f"{path}: made for checkpoint {str(meta.get('generator_hash'))[:12]}, this generator "
                                f"is {generator_hash[:12]}: invert the photo again with this generator")
    if (num_ws is not None and ws.shape[1] != num_ws) or (w_dim is not None and ws.shape[2] != w_dim):
        raise IdentityFileError(f"{path}: ws is {list(ws.shape)}, this generator needs [1, {num_ws}, {w_dim}]")
    noise = {k.split(":", 1)[1]: v for k, v in data.items() if k.startswith("noise:")}
    if any(v.dtype != np.float32 or v.ndim != 2 or not np.isfinite(v).all() for v in noise.values()):
        raise IdentityFileError(f"{path}: a noise map is not finite float32 [R, R]")
    return IdentityFile(ws=ws, w=data.get("w"), noise=noise, meta=meta, tuned=_read_tuned(path, meta.get("tuned")))


def _read_tuned(path: Path, info) -> Optional[dict[str, np.ndarray]]:
    if info is None:
        return None
    if not isinstance(info, dict) or not isinstance(info.get("file"), str) or not isinstance(info.get("sha256"), str):
        raise IdentityFileError(f"{path}: its 'tuned' entry is not a file name and a SHA-256")
    weights = path.with_name(Path(info["file"]).name)      # beside the .npz, never elsewhere
    if not weights.is_file():
        raise IdentityFileError(f"{path}: its tuned weights {weights.name} are missing (keep the two files together)")
    if _sha256(weights) != info["sha256"]:
        raise IdentityFileError(f"{path}: its tuned weights {weights.name} do not match the recorded SHA-256 "
                                "(changed or from another inversion)")
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise IdentityFileError(f"{path}: its tuned weights {weights.name} are unreadable ({exc})") from None
    if any(v.dtype != np.float32 or not np.isfinite(v).all() for v in tensors.values()):
        raise IdentityFileError(f"{path}: its tuned weights {weights.name} are not finite float32")
    return tensors
