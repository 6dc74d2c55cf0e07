"""StreamStats: what a :class:`~streaming.sessions.StreamSession` measures about its own frames —
the send rate, per-stage timings, and the wall time from the arrival of the audio that completed
a frame to that frame's publication (thread-safe; bounded windows)."""
from __future__ import annotations

import collections
import threading
import time
from typing import Optional

import numpy as np

__all__ = ["StreamStats", "percentile"]


def percentile(values, q: float) -> Optional[float]:
    if not values:
        return None
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


class StreamStats:
    """Windows: the last 64 send times, 250 frames' timings and lags, 256 audio arrivals."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.sent_index = -1
        self.latency_ms: Optional[float] = None
        self._sent_times: collections.deque = collections.deque(maxlen=64)
        self._timings: collections.deque = collections.deque(maxlen=250)
        self._arrivals: collections.deque = collections.deque(maxlen=256)   # (timeline end s, wall)
        self._pixel_lag: collections.deque = collections.deque(maxlen=250)

    def note_arrival(self, end_s: float, wall: float) -> None:
        """Live audio ending at timeline second ``end_s`` arrived at ``wall`` (``time.monotonic``)."""
        with self._lock:
            self._arrivals.append((end_s, wall))

    def note_sent(self, index: int) -> None:
        self.sent_index = index
        self._sent_times.append(time.monotonic())

    def note_frame(self, index: int, fps: float, timings: dict, latency_ms: Optional[float]) -> None:
        """Frame ``index`` was published now: its stage timings and the lag since the arrival of
        the audio that completed it (live audio only)."""
        self.latency_ms = latency_ms
        need = (index + 1) / fps
        with self._lock:
            self._timings.append(timings)
            arrival = None
            for end, wall in self._arrivals:
                if end >= need:
                    arrival = wall
                    break
            while self._arrivals and self._arrivals[0][0] < need - 1.0:
                self._arrivals.popleft()
            if arrival is not None:
                self._pixel_lag.append((time.monotonic() - arrival) * 1e3)

    def fps(self) -> float:
        """Send rate over the last 64 frames (0 before two)."""
        with self._lock:
            times = list(self._sent_times)
        return (len(times) - 1) / (times[-1] - times[0]) if len(times) >= 2 and times[-1] > times[0] else 0.0

    def summary(self) -> dict:
        """``fps`` (send rate), ``latency_ms``, ``arrival_to_frame_ms`` and ``stages_ms`` p50/p95."""
        with self._lock:
            timings = list(self._timings)
            lag = list(self._pixel_lag)
        fps = self.fps()
        stages: dict[str, dict[str, Optional[float]]] = {}
        for key in sorted({k for t in timings for k in t}):
            vals = [t[key] for t in timings if key in t]
            stages[key] = {"p50": percentile(vals, 50), "p95": percentile(vals, 95)}
        return {"sent_index": self.sent_index, "fps": fps, "latency_ms": self.latency_ms,
                "arrival_to_frame_ms": {"p50": percentile(lag, 50), "p95": percentile(lag, 95)},
                "stages_ms": stages}
