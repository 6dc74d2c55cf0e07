"""aiortc media tracks for avatar streams, the latest-wins slot between synthesis and sender, and
a no-wait audio jitter buffer for the receive side.

Time: video pts are in 1/90000 s units taken from the frame index (``pts = round(k * 90000 / fps)``),
audio pts in samples at the output rate (1/48000 s); both tracks release item ``n`` no earlier than
its wall-clock deadline ``t0 + time(n)`` of the owning :class:`~streaming.sessions.StreamSession`,
so the two streams leave in step and pacing error never accumulates.
"""
from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from fractions import Fraction
from typing import TYPE_CHECKING, Generic, Optional, TypeVar

import av
import numpy as np
from aiortc.jitterbuffer import JitterFrame
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

if TYPE_CHECKING:  # pragma: no cover
    from aiortc import RTCRtpReceiver
    from aiortc.rtp import RtpPacket

    from .sessions import StreamSession

__all__ = [
    "VIDEO_CLOCK_RATE", "LatestSlot", "AudioOutBuffer", "AvatarVideoTrack", "AvatarAudioTrack",
    "NoWaitAudioJitterBuffer", "install_no_wait_audio", "stamp_index", "read_stamp", "PcmTrack",
]

VIDEO_CLOCK_RATE = 90000
VIDEO_TIME_BASE = Fraction(1, VIDEO_CLOCK_RATE)
AUDIO_PTIME = 0.020           # one Opus packet per 20 ms audio frame
PCM_RATE = 48000
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
        self.put_count = 0
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
            self.put_count += 1
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


# -- frame stamps (tests and benchmarks identify frames after a lossy codec) --------------------

STAMP_BITS = 16


def _stamp_geometry(width: int, height: int) -> tuple[int, int]:
    block = max(4, width // STAMP_BITS)
    return block, height - block


def stamp_index(image: np.ndarray, index: int) -> np.ndarray:
    """Write ``index`` (16 bits) as black/white blocks along the bottom edge of an RGB image (copy)."""
    img = np.array(image, copy=True)
    h, w = img.shape[:2]
    block, top = _stamp_geometry(w, h)
    for bit in range(STAMP_BITS):
        value = 255 if (int(index) >> bit) & 1 else 0
        img[top:top + block, bit * block:(bit + 1) * block] = value
    return img


def read_stamp(image: np.ndarray) -> int:
    """Read the index written by :func:`stamp_index` from a decoded RGB (or gray) image."""
    img = np.asarray(image)
    if img.ndim == 3:
        img = img.mean(axis=2)
    h, w = img.shape
    block, top = _stamp_geometry(w, h)
    q = max(1, block // 4)
    value = 0
    for bit in range(STAMP_BITS):
        cell = img[top + q:top + block - q, bit * block + q:(bit + 1) * block - q]
        if cell.mean() > 127:
            value |= 1 << bit
    return value


# -- tracks --------------------------------------------------------------------------------------

class AvatarVideoTrack(MediaStreamTrack):
    """Video out of a :class:`StreamSession`: newest synthesized frame, paced on absolute deadlines.

    ``recv()`` waits for the latest-wins slot, then for frame k's deadline ``t0 + k/fps`` (no wait
    when the frame is already late, which is the normal case for live audio), and returns an
    ``av.VideoFrame`` with ``pts = round(k * 90000 / fps)``, ``time_base = 1/90000``.
    """

    kind = "video"

    def __init__(self, stream: "StreamSession") -> None:
        super().__init__()
        self._stream = stream
        self.frames_sent = 0
        self.last_index = -1

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        self._stream.ensure_started()
        item = await self._stream.video_slot.get()
        index, frame = item
        delay = self._stream.deadline(index / self._stream.fps) - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        self.frames_sent += 1
        self.last_index = index
        self._stream.note_sent(index)
        return frame


class AvatarAudioTrack(MediaStreamTrack):
    """Audio out of a :class:`StreamSession`: the driving audio, aligned with the video frames.

    Returns 20 ms int16 mono ``av.AudioFrame``s at the session's output rate; chunk n (pts
    ``n * 20 ms`` in samples) leaves no earlier than ``t0 + n * 20 ms`` and as soon as the worker
    has published the frame that covers it. If the video side stalls for longer than
    ``max_wait_s`` past the deadline the chunk is sent as silence so the stream stays continuous.
    """

    kind = "audio"

    def __init__(self, stream: "StreamSession", max_wait_s: float = 0.25) -> None:
        super().__init__()
        self._stream = stream
        self._buffer = stream.audio_out
        self._n = 0
        self._max_wait = max_wait_s
        self.chunks_sent = 0
        self.silent_chunks = 0

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        self._stream.ensure_started()
        rate = self._buffer.rate
        size = int(round(rate * AUDIO_PTIME))
        position = self._n * size
        deadline = self._stream.deadline(position / rate)
        while True:
            if self.readyState != "live" or self._stream.stopped:
                raise MediaStreamError
            now = time.monotonic()
            pcm = None
            if now >= deadline:
                pcm = self._buffer.read(position, size)
                if pcm is None and now >= deadline + self._max_wait:
                    pcm = self._buffer.read(position, size, force=True)
                    self.silent_chunks += 1
            if pcm is not None:
                break
            if now < deadline:
                await asyncio.sleep(deadline - now)
            else:   # due but not written yet: wake on the worker's next write (or give up in time)
                await self._buffer.wait_written(min(0.05, deadline + self._max_wait - now))
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = rate
        frame.pts = position
        frame.time_base = Fraction(1, rate)
        self._n += 1
        self.chunks_sent += 1
        return frame


class PcmTrack(MediaStreamTrack):
    """A live audio track playing int16 mono PCM at 48 kHz in 20 ms frames (a stand-in microphone
    for tests, benchmarks and bots with a whole utterance at hand). Frame n is released at
    ``start + n·20 ms`` (absolute deadlines); after the end it sends silence, or ends the track
    when ``end=True``. ``sent_at[n]`` records when frame n was handed to the sender."""

    kind = "audio"

    def __init__(self, pcm: Optional[np.ndarray] = None, *, end: bool = False) -> None:
        super().__init__()
        self.pcm = np.zeros(0, np.int16) if pcm is None else np.asarray(pcm, np.int16).reshape(-1)
        self.end = end
        self.n = 0
        self.start: Optional[float] = None
        self.sent_at: list[float] = []

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        size = int(PCM_RATE * AUDIO_PTIME)
        if self.start is None:
            self.start = time.monotonic()
        lo = self.n * size
        if self.end and lo >= self.pcm.size:
            self.stop()
            raise MediaStreamError
        delay = self.start + self.n * AUDIO_PTIME - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        chunk = np.zeros(size, np.int16)
        part = self.pcm[lo:lo + size]
        chunk[:part.size] = part
        frame = av.AudioFrame.from_ndarray(chunk.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = PCM_RATE
        frame.pts = lo
        frame.time_base = Fraction(1, PCM_RATE)
        self.n += 1
        self.sent_at.append(time.monotonic())
        return frame


# -- receive side --------------------------------------------------------------------------------

class NoWaitAudioJitterBuffer:
    """Drop-in for aiortc's audio ``JitterBuffer`` that releases each packet as it arrives.

    aiortc's receiver builds ``JitterBuffer(capacity=16, prefetch=4)`` for audio: a packet is only
    released once four later packets have arrived (80 ms at 20 ms/packet) and the next one always
    has to arrive first to mark the end of a frame. An Opus RTP packet is a complete frame, so this
    buffer hands every packet newer than the last one released straight to the decoder, drops
    duplicates and late packets, and never waits: 0 ms of hold instead of 80 ms.
    """

    def __init__(self) -> None:
        self._last: Optional[int] = None
        self.released = 0
        self.late = 0

    @property
    def capacity(self) -> int:
        return 16

    def add(self, packet: "RtpPacket") -> tuple[bool, Optional[JitterFrame]]:
        seq = packet.sequence_number
        if self._last is not None:
            delta = (seq - self._last) & 0xFFFF
            if delta == 0 or delta >= 0x8000:   # duplicate or older than the last one released
                self.late += 1
                return False, None
        self._last = seq
        self.released += 1
        return False, JitterFrame(data=getattr(packet, "_data", b""), timestamp=packet.timestamp)

    def remove(self, count: int) -> None:  # pragma: no cover - interface parity
        pass


def install_no_wait_audio(receiver: "RTCRtpReceiver") -> bool:
    """Replace an audio receiver's jitter buffer by :class:`NoWaitAudioJitterBuffer`.

    Call it from the peer connection's ``track`` event (before RTP flows). Returns False (and
    leaves the receiver alone) when aiortc's internals differ from the 1.x layout this targets.
    """
    attr = "_RTCRtpReceiver__jitter_buffer"
    if getattr(receiver, "_RTCRtpReceiver__kind", None) != "audio" or not hasattr(receiver, attr):
        return False
    setattr(receiver, attr, NoWaitAudioJitterBuffer())
    return True
