"""The demo world's probes as a face measure (the interface of :mod:`engine.latent.discover`).

The probes read every motion field and every identity field of the demo world from an image.
As a measure they give the motion fields under the motion roles' names (``mouth_width`` → ``jaw``,
``yaw`` → ``head_yaw``, ...) and the identity fields as the identity embedding: each field scaled
by its range (0..1), so the distance between two faces is the RMS change of their identity fields
in fractions of the fields' ranges. The probes read any image (no detector): every sample counts
as a face.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np

from .name_directions import ROLE_OF
from .params import IDENTITY_FIELDS, IDENTITY_RANGES, MOTION_RANGES
from .probes import Probes, load_probes

__all__ = ["ProbeMeasure", "DEMO_PROBES", "IDENTITY_SCALE"]

DEMO_PROBES = Path(__file__).resolve().parent.parent / "assets" / "demo_probes.safetensors"
#: identity distance that counts as "another face": an RMS change of 10% of the fields' ranges
IDENTITY_SCALE = 0.1


class ProbeMeasure:
    """``measure(images uint8 [B, H, W, 3]) -> {probe motion field: [B]}``, ``roles`` (probe field →
    motion role), ``embed(images) -> [B, n_identity_fields]`` (range-scaled identity fields)."""

    name = "probes"
    identity_scale = IDENTITY_SCALE

    def __init__(self, probes: Union[Probes, str, os.PathLike, None] = None,
                 roles: Optional[Sequence[str]] = None):
        self.probes = probes if isinstance(probes, Probes) else load_probes(probes or DEMO_PROBES)
        have = set(self.probes.names)
        keys = [k for k in ROLE_OF if k in have] if roles is None else list(roles)
        self.roles = {k: ROLE_OF[k] for k in keys}
        #: a full motion per key: the field's range (mouth 0..1, yaw -1..1, ...)
        self.scales = {k: float(MOTION_RANGES[k][1] - MOTION_RANGES[k][0]) for k in keys}
        self._ident = [f for f in IDENTITY_FIELDS if f in have]
        lo = np.array([IDENTITY_RANGES[f][0] for f in self._ident], np.float64)
        hi = np.array([IDENTITY_RANGES[f][1] for f in self._ident], np.float64)
        self._lo, self._span = lo, np.maximum(hi - lo, 1e-9)
        self._cache: tuple[np.ndarray, dict] | None = None

    def _predict(self, images: np.ndarray) -> dict:
        # __call__ then embed on the same batch object: one pass (the batch is held, so `is` is safe)
        if self._cache is None or self._cache[0] is not images:
            self._cache = (images, self.probes.predict(np.asarray(images)))
        return self._cache[1]

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        pred = self._predict(images)
        return {k: pred[k].astype(np.float64) for k in self.roles}

    def embed(self, images: np.ndarray) -> np.ndarray:
        pred = self._predict(images)
        if not self._ident:
            return np.zeros((len(images), 0))
        v = np.stack([pred[f].astype(np.float64) for f in self._ident], axis=1)
        return (v - self._lo) / self._span / np.sqrt(len(self._ident))
