"""Cross-session batching: one synthesis call per tick serves every active session.

Each session runs in its own thread and calls ``synthesize(ws)`` for its frame, as if it had the
generator to itself. :class:`BatchingSynthesizer` gathers those calls: the first request of a
round opens a short gather window (``window_ms``); the round closes as soon as every registered
session has a request in, or the window ends, or ``max_batch`` frames are waiting. Then one
backend call runs on the concatenated ws and each caller gets its own rows back. A GPU then does
one batch-16 pass instead of sixteen batch-1 passes.

Fairness: a session that is late for a round (its request arrives after the round closed) goes
into the next round; nobody waits for it beyond the window, so a slow or stalled session costs
itself a frame and never delays the others. Requests are served first come, first served; a
round takes at most ``max_batch`` frames and leaves the rest for the next one.

The backend runs only on the batcher's own thread, so it needs no lock, and CUDA work (a
TensorRT context, a captured CUDA graph) stays on one thread. Errors raised by the backend are
re-raised in every caller of that round; the batcher keeps serving.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from typing import Callable, Optional

import torch

__all__ = ["BatchingSynthesizer"]


class _Request:
    __slots__ = ("ws", "done", "result", "error", "t_submit")

    def __init__(self, ws: torch.Tensor):
        self.ws = ws
        self.done = threading.Event()
        self.result: Optional[torch.Tensor] = None
        self.error: Optional[BaseException] = None
        self.t_submit = time.perf_counter()


class BatchingSynthesizer:
    """``synthesize(ws)`` for many threads, run as one batch per round.

    Args:
        fn: the backend, ``ws [B, num_ws, w_dim] -> img [B, 3, H, W]``.
        max_batch: most frames per backend call.
        window_ms: how long a round waits for the other registered sessions after its first
            request (0: take whatever is queued at once).
    """

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], *, max_batch: int = 16, window_ms: float = 3.0):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if not window_ms >= 0:
            raise ValueError(f"window_ms must be >= 0, got {window_ms}")
        self.fn = fn
        self.max_batch = int(max_batch)
        self.window_s = float(window_ms) / 1000.0
        self._cond = threading.Condition()
        self._queue: deque[_Request] = deque()
        self._sessions = 0
        self._closed = False
        self.batches = 0
        self.frames = 0
        self.batch_sizes: deque[int] = deque(maxlen=1000)
        self._thread = threading.Thread(target=self._run, name="stylecast-batcher", daemon=True)
        self._thread.start()

    # -- sessions ------------------------------------------------------------------------------
    def register(self) -> None:
        """A session starts using the batcher (rounds wait for up to this many requests)."""
        with self._cond:
            self._sessions += 1

    def unregister(self) -> None:
        with self._cond:
            self._sessions = max(0, self._sessions - 1)
            self._cond.notify_all()

    @property
    def sessions(self) -> int:
        return self._sessions

    # -- calls ---------------------------------------------------------------------------------
    def __call__(self, ws: torch.Tensor, timeout: Optional[float] = None) -> torch.Tensor:
        """Blocking: the images of ``ws`` [b, num_ws, w_dim] (b ≥ 1), computed in a shared batch."""
        if ws.ndim != 3 or ws.shape[0] < 1:
            raise ValueError(f"ws must be [B, num_ws, w_dim] with B >= 1, got {list(ws.shape)}")
        if ws.shape[0] > self.max_batch:
            # larger than one round: split, each part queued in order
            return torch.cat([self(part, timeout) for part in ws.split(self.max_batch)])
        req = _Request(ws)
        with self._cond:
            if self._closed:
                raise RuntimeError("the batching synthesizer is closed")
            self._queue.append(req)
            self._cond.notify_all()
        if not req.done.wait(timeout):
            raise TimeoutError("synthesis did not finish in time")
        if req.error is not None:
            raise req.error
        return req.result

    def _take_round(self) -> list[_Request]:
        """Wait for a round to close; returns its requests (empty when closing)."""
        with self._cond:
            while not self._queue and not self._closed:
                self._cond.wait()
            if self._closed and not self._queue:
                return []
            deadline = self._queue[0].t_submit + self.window_s
            while True:
                frames = sum(int(r.ws.shape[0]) for r in self._queue)
                if frames >= self.max_batch or len(self._queue) >= max(1, self._sessions) or self._closed:
                    break
                left = deadline - time.perf_counter()
                if left <= 0:
                    break
                self._cond.wait(left)
            taken, frames = [], 0
            while self._queue and frames + int(self._queue[0].ws.shape[0]) <= self.max_batch:
                r = self._queue.popleft()
                taken.append(r)
                frames += int(r.ws.shape[0])
            return taken

    def _run(self) -> None:
        while True:
            reqs = self._take_round()
            if not reqs:
                return
            try:
                ws = torch.cat([r.ws for r in reqs]) if len(reqs) > 1 else reqs[0].ws
                img = self.fn(ws)
                if img.shape[0] != ws.shape[0]:
                    raise ValueError(f"the backend returned {img.shape[0]} images for {ws.shape[0]} latents")
                i = 0
                for r in reqs:
                    n = int(r.ws.shape[0])
                    r.result = img[i:i + n] if len(reqs) > 1 else img
                    i += n
            except BaseException as exc:  # every caller of the round sees the error; the thread lives on
                for r in reqs:
                    r.error = exc
            self.batches += 1
            self.frames += int(sum(int(r.ws.shape[0]) for r in reqs))
            self.batch_sizes.append(int(sum(int(r.ws.shape[0]) for r in reqs)))
            for r in reqs:
                r.done.set()

    def stats(self) -> dict:
        sizes = list(self.batch_sizes)
        return {"batches": self.batches, "frames": self.frames, "sessions": self._sessions,
                "mean_batch": (sum(sizes) / len(sizes)) if sizes else 0.0, "max_batch": self.max_batch}

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout=5)
        for r in list(self._queue):
            r.error = RuntimeError("the batching synthesizer is closed")
            r.done.set()
