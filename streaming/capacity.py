"""Admission by capacity: the server admits a session only if every stream keeps its frame rate.

Cost model (CPU): one stream at ``fps`` costs ``fps × c`` core-seconds per second, ``c`` the CPU
time of one frame through the whole path. At start :meth:`Capacity.probe` measures ``c`` by
making frames with a real session and VP8-encoding them (times ``OVERHEAD`` for what the probe
does not run: RTP, audio, the event loop). While streams run, :meth:`Capacity.sample` replaces the
estimate with the live one: the process's CPU time per second, less the idle baseline, divided by
the streams; what other processes on the machine use (``/proc/stat`` less this process) is taken
off the budget. A session is admitted when ``(n + 1) × per_session ≤ cores × headroom - idle -
others`` and
no running stream is below ``min_fps`` (it is already overloaded). On CUDA the probe's wall time
per frame counts against one GPU instead (not measured live; unverified on a GPU here).

CPU time is not the only limit: one Python process also serialises on its interpreter lock and
event loop, which no CPU counter shows. So the outcome is watched too: when, with n >= 2 streams
running, a stream stays more than 1 fps under ``min_fps`` for 5 s (not counting a join's first
4 s), the newest session is closed
("server at capacity") and n - 1 becomes the ceiling for the next ``ceiling_s`` (120 s).
"""
from __future__ import annotations

import math
import os
import time
from typing import Any, Optional

import av
import numpy as np
from aiortc.codecs.vpx import Vp8Encoder

from engine.runtime import usable_cores
from engine.session import AvatarSession

__all__ = ["Capacity", "OVERHEAD"]

#: the probe runs synthesis + uint8 + VP8 encode; the stream also pays RTP/SRTP, Opus decode,
#: features and the event loop (measured on the 2-core VM: live cost / probe cost ≈ 1.3)
OVERHEAD = 1.3


def _machine_busy() -> Optional[float]:
    """Core-seconds the whole machine has been busy (Linux ``/proc/stat``; None elsewhere)."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)          # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


class Capacity:
    """How many streams fit, and whether one more does.

    Args:
        fps: the streams' frame rate.
        cores: CPU cores the server may use (default: its affinity).
        headroom: share of the cores streams may take (the rest: the loop, bursts).
        min_fps: a running stream below this makes the server refuse new ones (default 96 % of fps).
    """

    def __init__(self, fps: float, *, cores: Optional[int] = None, headroom: float = 0.85,
                 min_fps: Optional[float] = None, device: str = "cpu") -> None:
        self.fps = float(fps)
        self.gpu = str(device).startswith("cuda")
        self.cores = 1 if self.gpu else int(cores or usable_cores())
        self.budget = self.cores * float(headroom)
        self.min_fps = float(min_fps) if min_fps is not None else 0.96 * self.fps
        self.per_session: Optional[float] = None     # core-seconds per second one stream costs
        self.idle = 0.0                              # core-seconds per second with no stream
        self.other = 0.0                             # ... that other processes on the machine use
        self.source = "none"
        #: a ceiling learned from a real slowdown (streams under ``min_fps`` with n running): n - 1,
        #: held for ``ceiling_s`` and then tried again
        self.ceiling: Optional[int] = None
        self.ceiling_s = 120.0
        self._ceiling_until = 0.0
        self._mark: Optional[tuple[float, float, Optional[float]]] = None

    # -- measuring ------------------------------------------------------------------------------
    def probe(self, engine: Any, frames: int = 12) -> float:
        """Cost of one stream from ``frames`` frames made and VP8-encoded (blocking; run it while the
        process is otherwise idle: it counts the whole process's CPU time)."""
        session = AvatarSession(engine, fps=self.fps)
        encoder = Vp8Encoder()
        # process CPU time: torch runs its intra-op work on pool threads (the server is idle at start)
        clock = time.perf_counter if self.gpu else time.process_time
        costs = []
        try:
            for i in range(frames + 2):
                t0 = clock()
                frame = session.next_frame(fill_silence=True)
                video = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame.image), format="rgb24")
                video = video.reformat(format="yuv420p")
                video.pts = i
                encoder.encode(video)
                if i >= 2:                                  # the first frames warm caches up
                    costs.append(clock() - t0)
        finally:
            session.close()
        per_frame = float(np.median(costs))
        self.per_session = self.fps * per_frame * OVERHEAD
        self.source = "probe"
        return self.per_session

    def sample(self, streaming: int, now: Optional[float] = None) -> None:
        """Call about once a second with the number of running streams: updates the estimate
        from the process's CPU time (CPU only)."""
        now = time.monotonic() if now is None else now
        cpu, busy = time.process_time(), _machine_busy()
        if self._mark is None or self.gpu:
            self._mark = (now, cpu, busy)
            return
        t_prev, cpu_prev, busy_prev = self._mark
        if now - t_prev < 0.5:
            return
        self._mark = (now, cpu, busy)
        used = (cpu - cpu_prev) / (now - t_prev)
        if busy is not None and busy_prev is not None:   # co-located load shrinks what streams may use
            others = max(0.0, (busy - busy_prev) / (now - t_prev) - used)
            self.other = 0.7 * self.other + 0.3 * others
        if streaming <= 0:
            self.idle = 0.8 * self.idle + 0.2 * used
            return
        live = max(0.0, used - self.idle) / streaming
        if self.per_session is None or self.source != "live":
            self.per_session = live
        else:
            self.per_session = 0.7 * self.per_session + 0.3 * live
        self.source = "live"

    # -- deciding -------------------------------------------------------------------------------
    def learn_ceiling(self, n: int, now: Optional[float] = None) -> None:
        """``n`` streams is what this machine really keeps at ``min_fps`` (it slowed with n + 1)."""
        now = time.monotonic() if now is None else now
        self.ceiling = max(1, int(n))
        self._ceiling_until = now + self.ceiling_s

    def fits(self, now: Optional[float] = None) -> int:
        """How many streams fit (at least 1; unknown cost: 1)."""
        now = time.monotonic() if now is None else now
        if self.ceiling is not None and now >= self._ceiling_until:
            self.ceiling = None
        model = self._model_fits()
        return model if self.ceiling is None else min(model, self.ceiling)

    def _model_fits(self) -> int:
        if not self.per_session or self.per_session <= 0:
            return 1
        return max(1, int(math.floor((self.budget - self.idle - self.other) / self.per_session + 1e-9)))

    def refusal(self, running: int, stream_fps: list) -> Optional[str]:
        """None if one more stream fits, else why not (for the 503)."""
        slow = [f for f in stream_fps if f is not None and 0 < f < self.min_fps]
        if slow:
            return (f"server at capacity: a running stream is at {min(slow):.1f} fps, below {self.min_fps:.0f}; "
                    "no new session until it recovers")
        if self.ceiling is not None and running + 1 > self.ceiling and running + 1 <= self._model_fits():
            return (f"server at capacity: the streams slowed below {self.min_fps:.0f} fps with {self.ceiling + 1} "
                    f"sessions a moment ago, so at most {self.ceiling} are admitted for now; try again later")
        if running + 1 > self.fits():
            unit = "GPU" if self.gpu else "cores"
            return (f"server at capacity: {running} session(s) use about {running * (self.per_session or 0):.2f} of "
                    f"{self.budget - self.other:.2f} {unit} available to streams (other processes use "
                    f"{self.other:.2f}); one more would drop every stream below {self.min_fps:.0f} fps")
        return None

    def slow(self, stream_fps: list) -> bool:
        """Is any running stream clearly under its frame rate (1 fps below ``min_fps``)?"""
        return any(f is not None and 0 < f < self.min_fps - 1.0 for f in stream_fps)

    def describe(self) -> str:
        unit = "GPU" if self.gpu else "cores"
        cost = f"{self.per_session:.2f}" if self.per_session else "?"
        return f"capacity: {self.fits()} stream(s) at {self.fps:g} fps ({cost} {unit} each, {self.source}; {self.budget:.2f} {unit} for streams)"
