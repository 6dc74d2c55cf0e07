"""MotionDriver: one step per video frame, audio features in, control vector x_t out.

A driver owns the motion of one avatar session. Each video frame the session calls
:meth:`MotionDriver.step` once with that frame's :class:`engine.audio.features.FrameFeatures`
and gets back ``x_t`` [len(names)] float32, measured in **stdev units** of the directions named
in :attr:`MotionDriver.names` (x = 1 is one standard deviation along that direction). The order
of ``names`` is the order of a :class:`engine.latent.direction_set.DirectionSet`, so::

    basis, masks = direction_set.to_path(G.num_ws, driver.names)
    path = LatentPath(basis, G.num_ws, layer_masks=masks)     # ws_t = anchor + V·(x_t·stdev)
    ws_t = path(driver.step(features))

consumes it directly. ``step`` costs O(1) per call: a driver keeps no state that grows with t.
:meth:`MotionDriver.flush` is the interruption hook (pipecat-style): the face goes back to idle
(mouth at rest) within :data:`FLUSH_MS` (40 ms: the first frame at 25 or 30 fps, the second at
50 or 60 fps) unless a driver is given its own ``flush_frames``.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Optional, Sequence, Union

import numpy as np

if TYPE_CHECKING:  # pragma: no cover - typing only
    from engine.audio.features import FrameFeatures
    from engine.latent.direction_set import DirectionSet

__all__ = ["FLUSH_MS", "MotionDriver", "ROLES", "flush_frames_for", "resolve_names"]

#: The motions the model-free drivers know, in the words of the direction sets (issue 5, point 7).
ROLES = ("mouth_open", "jaw", "blink", "head_yaw", "head_pitch", "head_roll", "gaze_x", "gaze_y")


#: how long ``flush()`` takes by default to bring the mouth to rest: a barge-in must show at once
FLUSH_MS = 40.0


def flush_frames_for(fps: float, flush_frames: Optional[int] = None) -> int:
    """Frames of a ``flush()`` ramp: ``flush_frames`` when given, else :data:`FLUSH_MS` at ``fps``
    (at least 1: the first frame after the flush is at rest)."""
    if flush_frames is not None:
        return max(int(flush_frames), 1)
    return max(1, int(round(FLUSH_MS * float(fps) / 1000.0)))


def resolve_names(names: Union["DirectionSet", Sequence[str]]) -> list[str]:
    """The output component names: a DirectionSet's names in its order, or a list of strings."""
    if hasattr(names, "names") and not isinstance(names, (str, bytes)):
        names = names.names
    if isinstance(names, (str, bytes)):
        raise TypeError("names must be a DirectionSet or a sequence of direction names, not one string")
    out = [str(n) for n in names]
    if len(set(out)) != len(out):
        raise ValueError(f"direction names must be unique, got {out}")
    return out


class MotionDriver(ABC):
    """Abstract motion driver: ``reset`` → ``step`` once per frame → (``flush`` on interruption).

    Attributes:
        names: one name per output component, in output order (DirectionSet order).
        fps: video frame rate the driver steps at (frames per second).
    """

    names: list[str]
    fps: float

    @property
    def k(self) -> int:
        """Number of output components, ``len(names)``."""
        return len(self.names)

    @abstractmethod
    def reset(self, anchor: Optional[object] = None) -> None:
        """Start over (frame 0) for a face anchored at ``anchor`` (ws [num_ws, w_dim], or None).

        Drivers whose motion does not depend on the identity ignore ``anchor``.
        """

    @abstractmethod
    def step(self, features: Optional["FrameFeatures"]) -> np.ndarray:
        """Advance one video frame (1/fps seconds) and return x_t [k] float32 in stdev units.

        ``features`` are the audio features of this frame; ``None`` means no audio (silence).
        O(1) per call.
        """

    @abstractmethod
    def flush(self) -> None:
        """Interruption: drop pending speech motion so the face is back at idle within
        ``flush_frames`` frames (:func:`flush_frames_for`)."""
