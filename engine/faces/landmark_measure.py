"""The face measure as a direction-discovery measure (the interface of :mod:`engine.latent.discover`).

``LandmarkMeasure(images)`` gives the landmark numbers per motion role, ``embed`` dlib's 128-D
identity embedding (distance 0.6 = another person), ``detected`` whether dlib's *detector* found
the face (a reading in the aligned box alone does not count: an image without a face still gives
landmarks there, so discovery counts faces by the detector). One batch is read once: ``__call__``,
``embed`` and ``detected`` on the same array share the readings, and the embedding is computed
only when asked for.
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from .measure import KEYS, ROLES, FaceMeasure

__all__ = ["LandmarkMeasure", "SCALES"]

#: a full motion per key, in the measure's units: inner-lip gap 0 → 0.5 inter-ocular distances,
#: mouth width ±0.15, eyes open → closed (blink 0 → 1), head ±30° yaw / ±20° pitch and roll
SCALES = {"mouth_open": 0.5, "jaw": 0.3, "blink": 1.0, "head_yaw": 60.0, "head_pitch": 40.0, "head_roll": 40.0}


class LandmarkMeasure:
    """A :class:`FaceMeasure` (HOG detector; the aligned box ``aligned`` where it misses: ``"auto"``
    = FFHQ's, ``"demo"``, a box, or False) for discovery."""

    name = "landmarks"
    identity_scale = 0.6

    def __init__(self, measure: Optional[FaceMeasure] = None, *, aligned="auto"):
        self.measure = measure if measure is not None else FaceMeasure(aligned=aligned, embed=False)
        self.roles = dict(ROLES)
        self.scales = {k: SCALES[k] for k in self.roles}
        self._batch: Optional[np.ndarray] = None
        self._readings: list = []

    def _read(self, images: np.ndarray) -> list:
        if self._batch is not images:                     # the batch object is held, so `is` is safe
            self._batch, self._readings = images, self.measure.read_batch(images, embed=False)
        return self._readings

    def __call__(self, images: np.ndarray) -> dict[str, np.ndarray]:
        readings = self._read(images)
        return {k: np.array([r.values()[k] for r in readings], dtype=np.float64) for k in KEYS}

    def detected(self, images: np.ndarray) -> np.ndarray:
        return np.array([r.found and r.source == "detector" for r in self._read(images)], dtype=bool)

    def embed(self, images: np.ndarray) -> np.ndarray:
        readings = self._read(images)
        dlib = self.measure.models.dlib
        out = np.full((len(readings), 128), np.nan, dtype=np.float64)
        for i, (img, r) in enumerate(zip(images, readings)):
            if r.found:
                if r.embedding is None:
                    rect = dlib.rectangle(*(int(round(v)) for v in r.box))
                    r.embedding = self.measure._descriptor(np.ascontiguousarray(img), rect)
                out[i] = r.embedding
        return out
