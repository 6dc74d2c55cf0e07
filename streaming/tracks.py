"""aiortc media tracks for avatar streams.

Both avatar tracks read from a :class:`Producer` (in the server: a
:class:`~streaming.sessions.StreamSession`) and release item ``n`` no earlier than its wall-clock
deadline ``t0 + time(n)``, so the two streams leave in step and pacing error never accumulates;
the time bases are in :mod:`streaming.clock`. :class:`PcmTrack` is a stand-in microphone.
"""
from __future__ import annotations

import asyncio
import time
from fractions import Fraction
from typing import Optional, Protocol

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from .clock import AUDIO_PTIME, PCM_RATE
from .slots import AudioOutBuffer, LatestSlot

__all__ = ["Producer", "AvatarVideoTrack", "AvatarAudioTrack", "PcmTrack"]


class Producer(Protocol):
    """What the avatar tracks need of whatever makes their frames (the tracks know nothing else)."""

    fps: float
    video_slot: LatestSlot          # (index, av.VideoFrame), newest wins
    audio_out: AudioOutBuffer       # int16 mono at the output rate, addressed by sample

    @property
    def stopped(self) -> bool: ...

    def ensure_started(self) -> None: ...

    def deadline(self, seconds: float) -> float: ...

    def note_sent(self, index: int) -> None: ...


class AvatarVideoTrack(MediaStreamTrack):
    """Video out of a :class:`StreamSession`: newest synthesized frame, paced on absolute deadlines.

    ``recv()`` waits for the latest-wins slot, then for frame k's deadline ``t0 + k/fps`` (no wait
    when the frame is already late, which is the normal case for live audio), and returns an
    ``av.VideoFrame`` with ``pts = round(k * 90000 / fps)``, ``time_base = 1/90000``.
    """

    kind = "video"

    def __init__(self, stream: "Producer") -> None:
        super().__init__()
        self._stream = stream

    async def recv(self) -> av.VideoFrame:
        if self.readyState != "live":
            raise MediaStreamError
        self._stream.ensure_started()
        item = await self._stream.video_slot.get()
        index, frame = item
        delay = self._stream.deadline(index / self._stream.fps) - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        self._stream.note_sent(index)
        return frame


class AvatarAudioTrack(MediaStreamTrack):
    """Audio out of a :class:`StreamSession`: the driving audio, aligned with the video frames.

    Returns 20 ms int16 mono ``av.AudioFrame``s at the session's output rate; chunk n (pts
    ``n * 20 ms`` in samples) leaves no earlier than ``t0 + n * 20 ms`` and as soon as the worker
    has published the frame that covers it. If the video side stalls for longer than
    ``max_wait_s`` past the deadline the chunk is sent as silence so a live stream stays
    continuous (counted in ``silenced_chunks``; the late audio of that chunk is then dropped).
    ``max_wait_s=None`` waits for the audio as long as the stream runs: a pulled source's speech
    (a bot's TTS) is sent late after a stall, never replaced by silence.
    """

    kind = "audio"

    def __init__(self, stream: "Producer", max_wait_s: Optional[float] = 0.25) -> None:
        super().__init__()
        self._stream = stream
        self._buffer = stream.audio_out
        self._n = 0
        self._max_wait = max_wait_s
        self.silenced_chunks = 0

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        self._stream.ensure_started()
        rate = self._buffer.rate
        size = int(round(rate * AUDIO_PTIME))
        position = self._n * size
        deadline = self._stream.deadline(position / rate)
        give_up = None if self._max_wait is None else deadline + self._max_wait
        while True:
            if self.readyState != "live" or self._stream.stopped:
                raise MediaStreamError
            now = time.monotonic()
            pcm = None
            if now >= deadline:
                pcm = self._buffer.read(position, size)
                if pcm is None and give_up is not None and now >= give_up:
                    pcm = self._buffer.read(position, size, force=True)
                    self.silenced_chunks += 1
            if pcm is not None:
                break
            if now < deadline:
                await asyncio.sleep(deadline - now)
            else:   # due but not written yet: wake on the worker's next write (or give up in time)
                await self._buffer.wait_written(0.05 if give_up is None else min(0.05, give_up - now))
        frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = rate
        frame.pts = position
        frame.time_base = Fraction(1, rate)
        self._n += 1
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
