"""AudioTimeline: the audio side of an avatar session, on the session's one 16 kHz clock.

::

    push(pcm, rate) ─► AudioInput (→ mono at the feature rate) ─► FeatureStream ─► ready frames (k, features)
                    └► AudioOut (the same audio at the output rate, handed out with frame k)

The feature rate is the input's own when it is 16, 32 or 48 kHz (no resampler, no resampler lag;
see :mod:`engine.audio.features`), else 16 kHz. The first pushed audio of a feature stream sets
it (the silence filled in before counts at any rate); a later input at another rate is
resampled to it, and :attr:`AudioTimeline.latency_ms` reports that resampler's lag.

Video frame k covers the audio ``[S(k), S(k+1))``, ``S(k) = round(k·16000/fps)`` (halves
rounded up, as FeatureStream does). :attr:`AudioTimeline.clock` counts the 16 kHz samples that
reached the feature stream (pushed audio that left the resampler, plus silence);
:attr:`AudioTimeline.pushed_samples` adds what still sits inside the resampler. The audio-out
copy lives on the same timeline at ``O(k) = round(k·out_rate/fps)`` (see
:mod:`engine.audio.output`).

Not thread-safe: its owner (:class:`engine.session.AvatarSession`) holds the lock.
"""
from __future__ import annotations

import time
from collections import deque
from typing import Callable, Optional

import numpy as np

from .features import NATIVE_RATES, FeatureStream, FrameFeatures, round_half_up
from .input import SAMPLE_RATE, AudioInput
from .output import AudioOut

__all__ = ["AudioTimeline"]


class AudioTimeline:
    """Pushed PCM → ready frames' features (+ their audio), one 16 kHz clock.

    Args:
        fps: video frame rate.
        lookahead_ms, window_ms: the feature stream's lookahead and mel window (None: default).
        audio_out_rate: keep the pushed audio at this rate for :meth:`take` (None: no audio out).
        max_pending_frames: most ready frames kept; beyond it the oldest go to ``on_overflow``
            (the motion driver steps through them) and are dropped, their audio released.
    """

    def __init__(self, fps: float, lookahead_ms: float, window_ms: Optional[float], *,
                 audio_out_rate: Optional[int], max_pending_frames: int,
                 on_overflow: Callable[[FrameFeatures], None]) -> None:
        self.fps = float(fps)
        self.out_rate = audio_out_rate
        self.max_pending_frames = int(max_pending_frames)
        self._on_overflow = on_overflow
        self._ai: Optional[AudioInput] = None   # current input stream
        self._ai_key = None                     # (rate, channels, dtype)
        self._queue: deque = deque()            # (k, FrameFeatures, features_ms) ready, not yet taken
        self.next_k = 0                         # next frame to hand out (or step)
        self._feat_carry_ms = 0.0               # feature time not yet attributed to a frame
        self.overflow_dropped = 0               # frames dropped since the last take
        self._out: Optional[AudioOut] = AudioOut(audio_out_rate) if audio_out_rate else None
        self._audio_from_k = 0                  # first frame whose audio was not handed out yet
        self._fs = self._new_feature_stream(lookahead_ms, window_ms, SAMPLE_RATE)
        self._heard = False                     # audio was pushed into this feature stream
        self._fs_frame0 = 0                     # the feature stream's frame 0 on the session's count
        self._fs_sample0 = 0                    # ... and its sample 0 on the clock

    # -- clock ----------------------------------------------------------------------------------
    @property
    def clock(self) -> int:
        """16 kHz samples of audio that reached the feature stream (pushed + silence-filled)."""
        return self._fs_sample0 + self._fs.samples_received

    @property
    def pushed_samples(self) -> float:
        """:attr:`clock` plus what still sits in the resampler (fractional mid-resampler)."""
        owed = float(self._ai.pending_samples) / self._per_sample if self._ai is not None else 0.0
        return self.clock + self._fs.samples_pending + owed

    @property
    def feature_rate(self) -> int:
        """The rate the feature stream reads (16, 32 or 48 kHz)."""
        return self._fs.sample_rate

    @property
    def _per_sample(self) -> int:
        """Feature-rate samples per 16 kHz sample."""
        return self._fs.sample_rate // SAMPLE_RATE

    def _rate_for(self, sample_rate) -> int:
        """The feature rate for input at ``sample_rate``: its own if native and the feature stream
        has heard no audio yet (or already reads it), else the feature stream's."""
        want = int(sample_rate) if sample_rate in NATIVE_RATES else SAMPLE_RATE
        return want if want == self._fs.sample_rate or not self._heard else self._fs.sample_rate

    @property
    def lookahead_ms(self) -> float:
        return self._fs.lookahead_ms

    @property
    def window_ms(self) -> float:
        return self._fs.window_frames * 10.0

    @property
    def window_frames(self) -> int:
        return self._fs.window_frames

    @property
    def latency_ms(self) -> float:
        """Resampler lag of the current input (0 before any audio and at a native rate) + lookahead."""
        ai_ms = float(getattr(self._ai, "latency_ms", 0.0)) if self._ai is not None else 0.0
        return ai_ms + self._fs.latency_ms

    def frame_start(self, k: int) -> int:
        """S(k) = round(k · 16000 / fps), 16 kHz samples."""
        return round_half_up(k * SAMPLE_RATE / self.fps)

    def out_at(self, k: int) -> int:
        """O(k) = round(k · out_rate / fps), samples of the audio out."""
        return round_half_up(k * (self.out_rate or 0) / self.fps)

    def is_fresh(self) -> bool:
        """Nothing pushed since the last handed-out frame (the feature stream may be rebuilt)."""
        return (not self._queue and self.clock == self.frame_start(self.next_k)
                and (self._ai is None or (self._ai.samples_in == 0 and not self._ai.pending_samples)))

    # -- audio in -------------------------------------------------------------------------------
    def push(self, pcm, sample_rate: int, channels: int, dtype: str) -> None:
        """PCM of one input stream; a new (rate, channels, dtype) flushes the old stream first.
        ValueError on bad input, with nothing changed."""
        if isinstance(sample_rate, bool) or isinstance(channels, bool):   # True == 1 would pass as a key
            raise ValueError(f"sample_rate and channels must be integers, got {sample_rate!r}, {channels!r}")
        key = (sample_rate, channels, dtype)
        t0 = time.perf_counter()
        new_ai = None
        if self._ai is None or key != self._ai_key:
            rate = self._rate_for(sample_rate)
            new_ai = AudioInput(sample_rate, channels, dtype, out_rate=rate)   # validates rate/channels
            y = new_ai.push(pcm)                                     # validates the samples
        else:
            y = self._ai.push(pcm)                                   # raises before any change
        if new_ai is not None:
            if self._ai is not None:
                self._flush_streams()
            if rate != self._fs.sample_rate:                         # only silence so far
                self._fs = self._fs.silent_at(rate)
            self._ai, self._ai_key = new_ai, (new_ai.sample_rate, new_ai.channels, dtype)
            if self._out is not None:
                self._out.start(new_ai.sample_rate, new_ai.channels, dtype)
        if self._out is not None:
            self._out.push(pcm)
        self._heard = self._heard or self._ai.samples_in > 0
        self._feed(y, t0)

    def push_silence(self, n16: int) -> None:
        """Flush the resamplers, then ``n16`` 16 kHz zeros (the silence comes after all pushed)."""
        self._flush_streams()
        self._push_zeros16(n16)

    def _new_feature_stream(self, lookahead_ms: float, window_ms: Optional[float], rate: int) -> FeatureStream:
        if window_ms is None:
            return FeatureStream(fps=self.fps, lookahead_ms=lookahead_ms, sample_rate=rate)
        return FeatureStream(fps=self.fps, lookahead_ms=lookahead_ms, window_ms=window_ms, sample_rate=rate)

    def _feed(self, y: np.ndarray, t0: float) -> None:
        """Samples at the feature rate into the feature stream; ready frames join the queue."""
        feats = self._fs.push(y) if y.size else []
        ms = (time.perf_counter() - t0) * 1000.0 + self._feat_carry_ms
        if not feats:
            self._feat_carry_ms = ms
            return
        self._feat_carry_ms = 0.0
        per = ms / len(feats)
        for f in feats:
            self._queue.append((self._fs_frame0 + f.frame_index, f, per))
        while len(self._queue) > self.max_pending_frames:
            k, f, _ = self._queue.popleft()
            self._on_overflow(f)                 # motion stays continuous
            self.overflow_dropped += 1
            self.next_k = k + 1
            self._audio_from_k = k + 1
            if self._out is not None:
                self._out.release(self.out_at(k + 1))

    def _push_zeros16(self, n: int) -> None:
        """n 16 kHz samples of zeros into the feature stream, and the matching zeros into audio out."""
        if n > 0:
            self._feed(np.zeros(n * self._per_sample, dtype=np.float32), time.perf_counter())
        if self._out is not None:
            self._out.pad_to(round_half_up(self.clock * self.out_rate / SAMPLE_RATE))

    def _flush_streams(self) -> None:
        """End the current input stream: drain both resamplers (AudioInput for the features, the
        audio-out one) and line the two timelines up again (zeros on the side that is behind)."""
        if self._ai is not None and (self._ai.samples_in or self._ai.pending_samples):
            t0 = time.perf_counter()
            self._feed(self._ai.flush(), t0)
        if self._out is not None:
            self._out.flush()
            behind = round_half_up(self._out.total * SAMPLE_RATE / self.out_rate) - self.clock
            if behind > 0:
                self._feed(np.zeros(behind * self._per_sample, dtype=np.float32), time.perf_counter())
            self._push_zeros16(0)

    # -- frames out -----------------------------------------------------------------------------
    def ready_count(self) -> int:
        """Frames whose features and (with audio out) audio are complete."""
        if self._out is None:
            return len(self._queue)
        n = 0
        total = self._out.total
        for k, _, _ in self._queue:
            if self.out_at(k + 1) > total:
                break
            n += 1
        return n

    def fill_next(self) -> None:
        """Make the next frame ready: flush the resamplers, then add exactly the missing zeros."""
        self._flush_streams()
        if self.ready_count():
            return
        if not self._queue:
            fs = self._fs
            self._push_zeros16(fs.ready_at(self.next_k - self._fs_frame0) - fs.samples_received)
        if self._out is not None and self._queue and not self.ready_count():
            # rounding between the 16 kHz and the audio-out timelines can leave the head frame's
            # audio one sample short: complete it with zeros
            self._out.pad_to(self.out_at(self._queue[0][0] + 1))

    def take(self, n: int) -> tuple[list, int, Optional[np.ndarray]]:
        """The next ``n`` ready frames ``[(k, features, features_ms)]``, how many frames were
        dropped before the last of them (the others taken and any overflow), and the audio out
        from the end of the last handed-out frame's audio to the end of the last frame's."""
        take = [self._queue.popleft() for _ in range(n)]
        k = take[-1][0]
        dropped = len(take) - 1 + self.overflow_dropped
        self.overflow_dropped = 0
        audio = None
        if self._out is not None:
            audio = self._out.take(self.out_at(self._audio_from_k), self.out_at(k + 1))
        self._audio_from_k = k + 1
        self.next_k = k + 1
        return take, dropped, audio

    # -- control --------------------------------------------------------------------------------
    def restart(self, lookahead_ms: float, window_ms: Optional[float]) -> float:
        """New feature stream starting at the next frame's audio; everything pushed after that
        point (queue, resampler, audio out) is discarded. Returns the seconds dropped."""
        before = self.pushed_samples
        k0 = self.next_k
        self._queue.clear()
        self._heard = False
        rate = self._rate_for(self._ai.sample_rate) if self._ai is not None else self._fs.sample_rate
        self._fs = self._new_feature_stream(lookahead_ms, window_ms, rate)
        self._fs_frame0 = k0
        self._fs_sample0 = self.frame_start(k0)
        self._feat_carry_ms = 0.0
        if self._ai is not None:
            self._ai = AudioInput(self._ai.sample_rate, self._ai.channels, self._ai.dtype, out_rate=rate)
        if self._out is not None:
            self._out.discard_pending()
            self._out.cut_to(self.out_at(k0))
        return max(0.0, before - self.clock) / SAMPLE_RATE

    def clear(self) -> None:
        """Drop the buffers (the session is closed)."""
        self._queue.clear()
        self._ai = None
        if self._out is not None:
            self._out.clear()
