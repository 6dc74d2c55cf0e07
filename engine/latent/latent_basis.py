"""A set of W-space directions with their scales: what PCA and the Jacobian SVD both produce.

A :class:`LatentBasis` holds orthonormal rows ``V`` [k, w_dim] and, per row, the size of one
"unit" of motion along it in W units (``stdev``). Control vectors ``x`` are measured in those
units, so ``w = mean + (x * stdev) @ V`` and ``coords`` is its inverse on the span of ``V``.

``origin`` says where the basis came from:

* ``"global"``: PCA of many mapped w (``engine.latent.pca``); ``stdev = sqrt(eigenvalue)``,
  ``mean`` the sample mean of w.
* ``"local"``: SVD of the mapping network's Jacobian dw/dz at one z (``engine.latent.local``);
  ``stdev = sigma_i`` (W displacement per unit z step along the i-th right singular vector),
  ``mean = m(z)``, and ``z_directions`` the right singular vectors.

Every basis records the content hash of the generator it was computed from
(:func:`generator_hash`) so a basis is never applied to a different network by accident.
"""
from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from engine.synthesis.fingerprint import generator_hash

__all__ = ["LatentBasis", "generator_hash", "atomic_write_npz", "ORIGINS"]

ORIGINS = ("global", "local")
_FORMAT = "stylecast-latent-basis"
_FORMAT_VERSION = 1


def atomic_write_npz(path: Path, arrays: dict) -> Path:
    """Write ``arrays`` to ``path`` (.npz, no pickles) through a temporary file and a rename, so a
    reader never sees a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    return path


@dataclass
class LatentBasis:
    """Orthonormal W-space directions with per-direction scale; see the module docstring."""

    directions: np.ndarray          # V [k, w_dim] float32, orthonormal rows
    stdev: np.ndarray               # [k] float32, W units per unit of x
    mean: np.ndarray                # [w_dim] float32
    explained_variance: np.ndarray  # [k] float64 (global: eigenvalues; local: sigma**2)
    origin: str                     # "global" | "local"
    checkpoint_hash: str
    meta: dict = field(default_factory=dict)
    z_directions: Optional[np.ndarray] = None  # local only: [k, z_dim] right singular vectors

    def __post_init__(self) -> None:
        self.directions = np.asarray(self.directions, dtype=np.float32)
        self.stdev = np.asarray(self.stdev, dtype=np.float32).reshape(-1)
        self.mean = np.asarray(self.mean, dtype=np.float32).reshape(-1)
        self.explained_variance = np.asarray(self.explained_variance, dtype=np.float64).reshape(-1)
        if self.directions.ndim != 2:
            raise ValueError(f"directions must be [k, w_dim], got shape {self.directions.shape}")
        k, w_dim = self.directions.shape
        if self.stdev.shape != (k,) or self.explained_variance.shape != (k,):
            raise ValueError(f"stdev and explained_variance must have {k} entries, got "
                             f"{self.stdev.shape[0]} and {self.explained_variance.shape[0]}")
        if self.mean.shape != (w_dim,):
            raise ValueError(f"mean must have w_dim = {w_dim} entries, got {self.mean.shape[0]}")
        if self.origin not in ORIGINS:
            raise ValueError(f"origin must be one of {ORIGINS}, got {self.origin!r}")
        if self.z_directions is not None:
            self.z_directions = np.asarray(self.z_directions, dtype=np.float32)
            if self.z_directions.ndim != 2 or self.z_directions.shape[0] != k:
                raise ValueError(f"z_directions must be [{k}, z_dim], got shape {self.z_directions.shape}")
        self.checkpoint_hash = str(self.checkpoint_hash)
        self.meta = dict(self.meta)

    @property
    def k(self) -> int:
        return int(self.directions.shape[0])

    @property
    def w_dim(self) -> int:
        return int(self.directions.shape[1])

    @property
    def explained_variance_ratio(self) -> np.ndarray:
        """Each direction's share of the total variance.

        Global: of the total variance of w (``meta["total_variance"]``, the trace of the
        covariance, so ratios of a truncated basis sum to < 1); local: of the sum of all
        squared singular values (``meta["singular_values"]``).
        """
        total = self.meta.get("total_variance")
        if total is None and "singular_values" in self.meta:
            total = float(np.sum(np.square(np.asarray(self.meta["singular_values"], dtype=np.float64))))
        if total is None:
            total = float(self.explained_variance.sum())
        return self.explained_variance / total if total > 0 else np.zeros_like(self.explained_variance)

    def coords(self, w) -> np.ndarray:
        """x = (w - mean) @ V.T / stdev for w [..., w_dim] (ndarray or tensor) → x [..., k] float32."""
        if isinstance(w, torch.Tensor):
            w = w.detach().cpu().numpy()
        w = np.asarray(w, dtype=np.float64)
        if w.shape[-1] != self.w_dim:
            raise ValueError(f"w must end in w_dim = {self.w_dim}, got shape {w.shape}")
        x = (w - self.mean) @ self.directions.T.astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            x = x / self.stdev.astype(np.float64)
        return x.astype(np.float32)

    # ---------------------------------------------------------------------------------------
    # Files

    def save(self, path) -> Path:
        """Write the basis as an .npz (no pickles; ``meta`` as a JSON string), atomically."""
        arrays = dict(
            format=np.array(_FORMAT), format_version=np.array(_FORMAT_VERSION),
            directions=self.directions, stdev=self.stdev, mean=self.mean,
            explained_variance=self.explained_variance, origin=np.array(self.origin),
            checkpoint_hash=np.array(self.checkpoint_hash), meta=np.array(json.dumps(self.meta, sort_keys=True)),
        )
        if self.z_directions is not None:
            arrays["z_directions"] = self.z_directions
        return atomic_write_npz(Path(path), arrays)

    @classmethod
    def load(cls, path) -> "LatentBasis":
        """Read a basis written by :meth:`save`; ValueError (naming the file) if it is not one."""
        path = Path(path)
        try:
            f = np.load(path, allow_pickle=False)
            if not isinstance(f, np.lib.npyio.NpzFile):
                raise ValueError("a single .npy array, not an .npz archive")
            with f:
                data = {name: f[name] for name in f.files}
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no such file") from None
        except (ValueError, OSError, EOFError) as exc:
            raise ValueError(f"{path}: not a readable latent basis .npz ({exc})") from None
        if str(data.get("format", "")) != _FORMAT:
            raise ValueError(f"{path}: not a StyleCast latent basis (no '{_FORMAT}' marker)")
        if int(data["format_version"]) > _FORMAT_VERSION:
            raise ValueError(f"{path}: basis format version {int(data['format_version'])} is newer than "
                             f"this StyleCast reads ({_FORMAT_VERSION})")
        missing = [n for n in ("directions", "stdev", "mean", "explained_variance", "origin",
                               "checkpoint_hash", "meta") if n not in data]
        if missing:
            raise ValueError(f"{path}: latent basis is missing {missing}")
        try:
            meta = json.loads(str(data["meta"]))
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: latent basis meta is not JSON ({exc})") from None
        try:
            return cls(directions=data["directions"], stdev=data["stdev"], mean=data["mean"],
                       explained_variance=data["explained_variance"], origin=str(data["origin"]),
                       checkpoint_hash=str(data["checkpoint_hash"]), meta=meta,
                       z_directions=data.get("z_directions"))
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None

    def check_generator(self, G: torch.nn.Module) -> None:
        """ValueError unless this basis was computed from ``G`` (same content hash)."""
        h = generator_hash(G)
        if h != self.checkpoint_hash:
            raise ValueError(f"basis was computed for generator {self.checkpoint_hash[:12]}…, "
                             f"not this one ({h[:12]}…)")
