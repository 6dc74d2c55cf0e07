"""Named latent directions: a small JSON "direction set" the motion drivers read.

A :class:`Direction` is one unit vector in W with the size of one "unit" of motion (``stdev``,
in W units), the layers it acts on (GANSpace-style layer range, inclusive, ``None`` = all), and
where it came from (the component index of the basis it was taken from and that basis' origin,
``"global"`` PCA or ``"local"`` Jacobian SVD). A :class:`DirectionSet` groups directions of one
generator: every direction carries the same checkpoint hash, and adding one from another
checkpoint is refused, because a W direction means nothing in another network's W.

    ds = DirectionSet.load("directions.json")            # validates names, shapes, norms, layers
    basis, masks = ds.to_path(G.num_ws, ["mouth_open", "yaw"])
    path = LatentPath(basis, G.num_ws, layer_masks=masks)  # ws = anchor + Σ mask·x·stdev·v

File format (``format: "stylecast-direction-set"``, ``version: 1``)::

    {"format": ..., "version": 1, "checkpoint_hash": "<sha256 hex>", "w_dim": 512,
     "directions": [{"name": "mouth_open", "vector": [...w_dim floats...], "stdev": 1.7,
                     "layers": [4, 7] | null, "component": 7 | null, "origin": "global",
                     "source": "basis.npz" | null}, ...]}

Vectors are written as float32 values widened to float64, so a save/load round trip is exact.
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional, Sequence

import numpy as np

from engine.latent.latent_basis import LatentBasis

__all__ = ["Direction", "DirectionSet", "FORMAT", "VERSION", "valid_name"]

FORMAT = "stylecast-direction-set"
VERSION = 1
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_.\-]{0,63}")
#: How far from 1 a stored vector's norm may be before ``load`` calls the file corrupt.
_UNIT_TOL = 1e-4


def valid_name(name: str) -> bool:
    """Direction names: a letter or ``_`` then letters, digits, ``_ . -`` (at most 64 characters)."""
    return isinstance(name, str) and _NAME_RE.fullmatch(name) is not None


def _check_layers(layers, num_ws: Optional[int] = None) -> Optional[tuple[int, int]]:
    if layers is None:
        return None
    try:
        start, end = (int(v) for v in layers)
        if any(not float(v).is_integer() for v in layers):
            raise ValueError
    except (TypeError, ValueError):
        raise ValueError(f"layer range must be two integers (start, end), got {layers!r}") from None
    if start < 0 or end < start:
        raise ValueError(f"bad layer range {start}-{end}: need 0 <= start <= end")
    if num_ws is not None and end >= num_ws:
        raise ValueError(f"layer range {start}-{end} is outside this generator's layers 0-{num_ws - 1}")
    return start, end


@dataclass
class Direction:
    """One named W direction. ``vector`` [w_dim] float32 is made unit length on construction."""

    name: str
    vector: np.ndarray
    stdev: float
    layers: Optional[tuple[int, int]] = None
    component: Optional[int] = None
    origin: str = "global"
    source: Optional[str] = None

    def __post_init__(self) -> None:
        if not valid_name(self.name):
            raise ValueError(f"bad direction name {self.name!r}: use a letter or _ then letters, digits, _ . - "
                             "(at most 64 characters)")
        v = np.asarray(self.vector, dtype=np.float64)
        if v.ndim != 1 or v.size == 0:
            raise ValueError(f"direction {self.name!r}: vector must be 1-D [w_dim], got shape {tuple(v.shape)}")
        if not np.isfinite(v).all():
            raise ValueError(f"direction {self.name!r}: vector contains NaN or infinity")
        norm = float(np.linalg.norm(v))
        if norm < 1e-12:
            raise ValueError(f"direction {self.name!r}: vector is zero")
        v32 = v.astype(np.float32)
        # Keep a float32 vector that is already unit length bit-for-bit (exact save/load round trips).
        if abs(float(np.linalg.norm(v32.astype(np.float64))) - 1.0) > 1e-6:
            v32 = (v / norm).astype(np.float32)
        self.vector = v32
        stdev = float(self.stdev)
        if not math.isfinite(stdev) or stdev <= 0:
            raise ValueError(f"direction {self.name!r}: stdev must be a positive finite number, got {self.stdev!r}")
        self.stdev = stdev
        self.layers = _check_layers(self.layers)
        if self.component is not None:
            if isinstance(self.component, bool) or int(self.component) != self.component or self.component < 0:
                raise ValueError(f"direction {self.name!r}: component must be a non-negative integer")
            self.component = int(self.component)
        if not isinstance(self.origin, str) or not self.origin:
            raise ValueError(f"direction {self.name!r}: origin must be a non-empty string")

    @property
    def w_dim(self) -> int:
        return int(self.vector.shape[0])

    def layer_mask(self, num_ws: int) -> np.ndarray:
        """[num_ws] bool: the layers this direction moves (all when ``layers`` is None)."""
        mask = np.zeros(num_ws, dtype=bool)
        if self.layers is None:
            mask[:] = True
        else:
            start, end = _check_layers(self.layers, num_ws)
            mask[start:end + 1] = True
        return mask

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "vector": [float(x) for x in self.vector],
            "stdev": self.stdev,
            "layers": list(self.layers) if self.layers is not None else None,
            "component": self.component,
            "origin": self.origin,
            "source": self.source,
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Direction":
        if not isinstance(d, dict):
            raise ValueError(f"a direction must be a JSON object, got {type(d).__name__}")
        missing = {"name", "vector", "stdev"} - set(d)
        if missing:
            raise ValueError(f"direction is missing {sorted(missing)}")
        unknown = set(d) - {"name", "vector", "stdev", "layers", "component", "origin", "source"}
        if unknown:
            raise ValueError(f"direction {d.get('name')!r} has unknown keys {sorted(unknown)}")
        vec = d["vector"]
        if not isinstance(vec, list) or not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in vec):
            raise ValueError(f"direction {d.get('name')!r}: vector must be a list of numbers")
        raw = np.asarray(vec, dtype=np.float64)
        if raw.size and np.isfinite(raw).all() and abs(float(np.linalg.norm(raw)) - 1.0) > _UNIT_TOL:
            raise ValueError(f"direction {d.get('name')!r}: stored vector is not unit length "
                             f"(norm {np.linalg.norm(raw):.6g})")
        return cls(name=d["name"], vector=raw, stdev=d["stdev"], layers=d.get("layers"),
                   component=d.get("component"), origin=d.get("origin", "global"), source=d.get("source"))


@dataclass
class DirectionSet:
    """Named directions of one generator (one ``checkpoint_hash``), kept in insertion order."""

    checkpoint_hash: Optional[str] = None
    directions: dict[str, Direction] = field(default_factory=dict)

    # -- container ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.directions)

    def __iter__(self) -> Iterator[Direction]:
        return iter(self.directions.values())

    def __contains__(self, name: str) -> bool:
        return name in self.directions

    def __getitem__(self, name: str) -> Direction:
        try:
            return self.directions[name]
        except KeyError:
            raise KeyError(f"no direction named {name!r} (have: {', '.join(self.directions) or 'none'})") from None

    @property
    def names(self) -> list[str]:
        return list(self.directions)

    @property
    def w_dim(self) -> Optional[int]:
        first = next(iter(self.directions.values()), None)
        return first.w_dim if first is not None else None

    # -- editing -----------------------------------------------------------------------------
    def add(self, direction: Direction, *, checkpoint_hash: Optional[str] = None, replace: bool = False) -> Direction:
        """Add ``direction`` (taken from the generator with ``checkpoint_hash``).

        Refuses a direction of another checkpoint than the set's, a different ``w_dim``, and an
        existing name unless ``replace``.
        """
        if checkpoint_hash is not None:
            if self.checkpoint_hash is None:
                self.checkpoint_hash = str(checkpoint_hash)
            elif str(checkpoint_hash) != self.checkpoint_hash:
                raise ValueError(f"direction {direction.name!r} comes from checkpoint {str(checkpoint_hash)[:12]}..., "
                                 f"this set holds directions of checkpoint {self.checkpoint_hash[:12]}... "
                                 "(a W direction only means something in its own generator)")
        if self.w_dim is not None and direction.w_dim != self.w_dim and not (
                replace and len(self.directions) == 1 and direction.name in self.directions):
            raise ValueError(f"direction {direction.name!r} has w_dim {direction.w_dim}, the set has {self.w_dim}")
        if direction.name in self.directions and not replace:
            raise ValueError(f"the set already has a direction named {direction.name!r} (replace it explicitly)")
        self.directions[direction.name] = direction
        return direction

    def add_from_basis(self, basis, component: int, name: str, *, layers: Optional[Sequence[int]] = None,
                       source: Optional[str] = None, replace: bool = False) -> Direction:
        """Add row ``component`` of a ``LatentBasis`` (its unit vector and stdev) under ``name``."""
        k = int(np.asarray(basis.directions).shape[0])
        if isinstance(component, bool) or not 0 <= int(component) < k:
            raise ValueError(f"component {component} is out of range: the basis has components 0-{k - 1}")
        component = int(component)
        d = Direction(name=name, vector=np.asarray(basis.directions)[component],
                      stdev=float(np.asarray(basis.stdev)[component]), layers=layers, component=component,
                      origin=str(basis.origin), source=source)
        return self.add(d, checkpoint_hash=basis.checkpoint_hash, replace=replace)

    def remove(self, name: str) -> Direction:
        d = self[name]
        del self.directions[name]
        return d

    # -- files -------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"format": FORMAT, "version": VERSION, "checkpoint_hash": self.checkpoint_hash,
                "w_dim": self.w_dim, "directions": [d.to_dict() for d in self]}

    def save(self, path: str | os.PathLike) -> Path:
        """Write the set as JSON (through a temporary file, renamed into place)."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1) + "\n", encoding="utf-8")
        os.replace(tmp, path)
        return path

    @classmethod
    def from_dict(cls, data: dict) -> "DirectionSet":
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError(f"not a StyleCast direction set (expected \"format\": \"{FORMAT}\")")
        if data.get("version") != VERSION:
            raise ValueError(f"unsupported direction-set version {data.get('version')!r} (this reader knows {VERSION})")
        ckpt = data.get("checkpoint_hash")
        if ckpt is not None and not isinstance(ckpt, str):
            raise ValueError("checkpoint_hash must be a string or null")
        entries = data.get("directions")
        if not isinstance(entries, list):
            raise ValueError("\"directions\" must be a list")
        out = cls(checkpoint_hash=ckpt)
        for entry in entries:
            d = Direction.from_dict(entry)
            if d.name in out.directions:
                raise ValueError(f"direction name {d.name!r} appears twice")
            out.add(d)
        w_dim = data.get("w_dim")
        if out.directions and w_dim is not None and w_dim != out.w_dim:
            raise ValueError(f"w_dim says {w_dim} but the vectors have {out.w_dim} entries")
        return out

    @classmethod
    def load(cls, path: str | os.PathLike, *, num_ws: Optional[int] = None, w_dim: Optional[int] = None,
             checkpoint_hash: Optional[str] = None) -> "DirectionSet":
        """Read and validate a set; optionally check it against a generator's ``num_ws``,
        ``w_dim`` and checkpoint hash. Raises ``FileNotFoundError`` or ``ValueError``."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no such file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path}: cannot read ({exc})") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: not valid JSON ({exc})") from None
        try:
            ds = cls.from_dict(data)
            ds.check(num_ws=num_ws, w_dim=w_dim, checkpoint_hash=checkpoint_hash)
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
        return ds

    def check(self, *, num_ws: Optional[int] = None, w_dim: Optional[int] = None,
              checkpoint_hash: Optional[str] = None) -> None:
        """Raise ``ValueError`` unless every direction fits a generator with these properties."""
        if checkpoint_hash is not None and self.checkpoint_hash is not None and checkpoint_hash != self.checkpoint_hash:
            raise ValueError(f"the set was made for checkpoint {self.checkpoint_hash[:12]}..., "
                             f"this generator is {checkpoint_hash[:12]}...")
        if w_dim is not None and self.w_dim is not None and w_dim != self.w_dim:
            raise ValueError(f"the set's vectors have w_dim {self.w_dim}, this generator has {w_dim}")
        if num_ws is not None:
            for d in self:
                try:
                    _check_layers(d.layers, num_ws)
                except ValueError as exc:
                    raise ValueError(f"direction {d.name!r}: {exc}") from None

    # -- use ---------------------------------------------------------------------------------
    def projector(self, num_ws: int, names: Optional[Sequence[str]] = None) -> tuple[np.ndarray, np.ndarray]:
        """``(A, pinv)`` float64: ``A`` [num_ws·w_dim, n] has as column i the flattened ws offset of
        x_i = 1 (``stdev_i · mask_i ⊗ v_i``, exactly what ``LatentPath`` adds), ``pinv`` [n, num_ws·w_dim]
        its Moore-Penrose pseudo-inverse (least-squares x of an offset)."""
        basis, masks = self.to_path(num_ws, names)
        cols = (masks.astype(np.float64)[:, :, None]
                * (basis.directions.astype(np.float64) * basis.stdev.astype(np.float64)[:, None])[:, None, :])
        A = cols.reshape(cols.shape[0], -1).T
        return A, np.linalg.pinv(A)

    def project(self, delta, num_ws: int, names: Optional[Sequence[str]] = None) -> tuple[np.ndarray, float]:
        """Least-squares control vectors of latent offsets: ``delta`` [T, w_dim] (the same offset on
        every layer) or [T, num_ws, w_dim] → ``(x [T, n] float32, dropped)`` with
        Δ ≈ Σ_i x_i · stdev_i · mask_i ⊗ v_i (unclamped) and ``dropped`` the fraction of Σ‖Δ‖²
        outside the span of the chosen directions (0 when Δ is all zero)."""
        delta = np.asarray(delta, dtype=np.float64)
        w_dim = self.w_dim
        if delta.ndim == 2 and delta.shape[1] == w_dim:
            delta = np.broadcast_to(delta[:, None, :], (delta.shape[0], int(num_ws), w_dim))
        if delta.ndim != 3 or delta.shape[1:] != (int(num_ws), w_dim):
            raise ValueError(f"offsets must be [T, {w_dim}] or [T, {int(num_ws)}, {w_dim}], got {list(delta.shape)}")
        A, pinv = self.projector(num_ws, names)
        flat = delta.reshape(delta.shape[0], -1)
        x = flat @ pinv.T
        energy = float((flat ** 2).sum())
        dropped = float(((flat - x @ A.T) ** 2).sum()) / energy if energy > 0 else 0.0
        return x.astype(np.float32), dropped

    def to_path(self, num_ws: int, names: Optional[Sequence[str]] = None):
        """``(basis, layer_masks)`` for :class:`engine.latent.path.LatentPath`.

        ``basis`` is a ``LatentBasis`` whose rows are the chosen directions (in ``names`` order,
        default all in insertion order) with their stdevs and a zero mean; ``layer_masks`` is
        [n, num_ws] bool. Rows of different components are orthonormal; directions picked from
        different bases need not be, and LatentPath adds them as given.
        """
        chosen = [self[n] for n in (names if names is not None else self.names)]
        if not chosen:
            raise ValueError("no directions to build a path from")
        self.check(num_ws=num_ws)
        V = np.stack([d.vector for d in chosen]).astype(np.float32)
        stdev = np.array([d.stdev for d in chosen], dtype=np.float32)
        masks = np.stack([d.layer_mask(num_ws) for d in chosen])
        origins = {d.origin for d in chosen}
        # LatentBasis knows only "global" and "local"; a set drawn from both is labelled "global"
        # and the per-direction origins are kept in meta["origins"].
        origin = origins.pop() if len(origins) == 1 else "global"
        if origin not in ("global", "local"):
            origin = "global"
        basis = LatentBasis(
            directions=V, stdev=stdev, mean=np.zeros(V.shape[1], dtype=np.float32),
            explained_variance=stdev.astype(np.float64) ** 2,
            origin=origin,
            checkpoint_hash=self.checkpoint_hash or "",
            meta={"direction_set": [d.name for d in chosen], "components": [d.component for d in chosen],
                  "origins": [d.origin for d in chosen],
                  "layers": [list(d.layers) if d.layers else None for d in chosen]},
        )
        return basis, masks
