"""What lies between the synthesis worker thread and the asyncio senders: a latest-wins slot for
video frames and a sample-addressed buffer for the audio that goes out with them."""
from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from typing import Generic, Optional, TypeVar

import numpy as np
from aiortc.mediastreams import MediaStreamError

__all__ = ["LatestSlot", "AudioOutBuffer"]

T = TypeVar("T")


class LatestSlot(Generic[T]):
    """A one-item mailbox between a producer thread and an asyncio consumer: newest wins.

    ``put`` replaces an item nobody took yet (counted in ``dropped``); ``get`` waits for an item.
    Holding at most one item is what keeps latency bounded when the consumer falls behind.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._item: Optional[T] = None
        self._closed = False
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._event: Optional[asyncio.Event] = None
        self.dropped = 0

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Attach the event loop whose coroutines call :meth:`get` (call from that loop)."""
        self._loop = loop
        self._event = asyncio.Event()
        if self._item is not None or self._closed:
            self._event.set()

    def _notify(self) -> None:
        loop, event = self._loop, self._event
        if loop is None or event is None:
            return
        try:
            loop.call_soon_threadsafe(event.set)
        except RuntimeError:  # loop closed: nobody is waiting any more
            pass

    def put(self, item: T) -> bool:
        """Store ``item`` (thread-safe); returns True when it replaced an untaken item."""
        with self._lock:
            if self._closed:
                return False
            replaced = self._item is not None
            self._item = item
            if replaced:
                self.dropped += 1
        self._notify()
        return replaced

    def take(self) -> Optional[T]:
        """The pending item or None, without waiting."""
        with self._lock:
            item, self._item = self._item, None
            return item

    def __len__(self) -> int:
        with self._lock:
            return 0 if self._item is None else 1

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._item = None
        self._notify()

    async def get(self) -> T:
        """Wait for the next item; raises :class:`MediaStreamError` once the slot is closed."""
        if self._event is None:
            self.bind(asyncio.get_running_loop())
        assert self._event is not None
        while True:
            if self._closed:
                raise MediaStreamError
            item = self.take()
            if item is not None:
                return item
            self._event.clear()
            if self._item is not None or self._closed:  # raced with a put between take and clear
                continue
            await self._event.wait()


class AudioOutBuffer:
    """Output PCM (int16 mono) addressed by absolute sample position, bounded, thread-safe.

    The worker writes each frame's audio at the frame's start sample; gaps (frames skipped under
    overload) become zeros and overlaps are trimmed, so the stream stays continuous and the audio
    of frame k always sits at sample ``round(k * rate / fps)`` — the position of frame k's video.
    """

    def __init__(self, rate: int, max_seconds: float = 2.0) -> None:
        self.rate = int(rate)
        self._max = int(max_seconds * rate)
        self._lock = threading.Lock()
        self._chunks: deque[np.ndarray] = deque()
        self._start = 0          # absolute sample position of the first buffered sample
        self._size = 0
        self.dropped_samples = 0
        self.zero_filled = 0
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        self._event: Optional[asyncio.Event] = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """Attach the event loop of the reader so :meth:`wait_written` wakes on each write."""
        self._loop = loop
        self._event = asyncio.Event()

    async def wait_written(self, timeout: float) -> None:
        """Wait (at most ``timeout`` s) for the next :meth:`write`; call ``bind`` first."""
        if self._event is None:
            self.bind(asyncio.get_running_loop())
        assert self._event is not None
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._event.wait(), max(0.0, timeout))
        self._event.clear()

    @property
    def end(self) -> int:
        with self._lock:
            return self._start + self._size

    def write(self, position: int, pcm: np.ndarray) -> None:
        pcm = np.asarray(pcm, dtype=np.int16).reshape(-1)
        with self._lock:
            end = self._start + self._size
            if position > end:
                gap = position - end
                self.zero_filled += gap
                self._append(np.zeros(gap, np.int16))
            elif position < end:
                pcm = pcm[end - position:]
            if pcm.size:
                self._append(pcm)
            if self._size > self._max:
                self.dropped_samples += self._take(self._size - self._max).size
        loop, event = self._loop, self._event
        if loop is not None and event is not None:
            with contextlib.suppress(RuntimeError):   # loop closed: no reader any more
                loop.call_soon_threadsafe(event.set)

    def _append(self, pcm: np.ndarray) -> None:
        self._chunks.append(pcm)
        self._size += pcm.size

    def _take(self, n: int) -> np.ndarray:
        """Remove up to ``n`` samples from the head and return them (lock held)."""
        parts, left = [], n
        while left > 0 and self._chunks:
            head = self._chunks[0]
            k = min(left, head.size)
            parts.append(head[:k])
            if k == head.size:
                self._chunks.popleft()
            else:
                self._chunks[0] = head[k:]
            self._start += k
            self._size -= k
            left -= k
        return np.concatenate(parts) if parts else np.zeros(0, np.int16)

    def read(self, position: int, n: int, *, force: bool = False) -> Optional[np.ndarray]:
        """Samples [position, position+n); None if not all there yet (``force``: zeros for the rest)."""
        with self._lock:
            end = self._start + self._size
            if position + n > end and not force:
                return None
            out = np.zeros(n, np.int16)
            if self._start < position:   # discard what lies before ``position``
                self._take(position - self._start)
            offset = max(0, self._start - position)    # dropped under overflow: leave zeros
            if offset < n:
                got = self._take(n - offset)
                out[offset:offset + got.size] = got
            if self._start < position + n and not self._chunks:
                self._start = position + n   # forced read past the end: the stream moves on
                self._size = 0
            return out
