"""LayeredDriver: a model's directions over a baseline's — e.g. the trained audio LSTM's mouth on
top of the idle driver's blinks and sway, so a face driven by a mouth-only model still lives."""
from __future__ import annotations

from typing import Optional

import numpy as np

from .base import MotionDriver

__all__ = ["LayeredDriver"]


class LayeredDriver(MotionDriver):
    """``top`` drives its own directions, ``base`` everything else (``base.names`` must include
    all of ``top.names``; both step at the same fps). Feature needs (lookahead, mel window) are
    ``top``'s. ``reset`` / ``flush`` reach both; a step calls both once (O(1))."""

    def __init__(self, top: MotionDriver, base: MotionDriver):
        if abs(float(top.fps) - float(base.fps)) > 1e-9:
            raise ValueError(f"layered drivers must share the frame rate: {top.fps:g} vs {base.fps:g} fps")
        missing = [n for n in top.names if n not in base.names]
        if missing:
            raise ValueError(f"the base driver does not output {', '.join(missing)}")
        self.top, self.base = top, base
        self.names = list(base.names)
        self.fps = float(base.fps)
        self._index = np.array([self.names.index(n) for n in top.names], dtype=np.intp)

    @property
    def lookahead_ms(self) -> Optional[float]:
        return getattr(self.top, "lookahead_ms", None)

    @property
    def config(self):
        return getattr(self.top, "config", None)

    def reset(self, anchor=None) -> None:
        self.base.reset(anchor)
        self.top.reset(anchor)

    def step(self, features) -> np.ndarray:
        x = np.array(self.base.step(features), dtype=np.float32, copy=True)
        x[self._index] = self.top.step(features)
        return x

    def flush(self) -> None:
        self.base.flush()
        self.top.flush()
