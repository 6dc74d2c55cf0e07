"""The audio side of a :class:`~streaming.sessions.StreamSession`: the received-audio inbox, the
timeline it feeds, and the silence that keeps the timeline up with the wall clock.

A mixin: it works on the StreamSession's own state (``_lock``, ``_inbox``, ``_timeline``, ``_t0``,
...; see ``StreamSession.__init__``), so the clock rules of :mod:`streaming.sessions` hold across
both. ``push_audio``, ``fed_seconds``, ``ahead_seconds`` and ``source_waiting`` may be called from
any thread; the underscored methods run on the worker.
"""
from __future__ import annotations

import logging
import time
from typing import Optional

import numpy as np

from engine.audio.input import SAMPLE_RATE

__all__ = ["StreamInput"]

log = logging.getLogger("stylecast.streaming")


class StreamInput:
    """Audio in for :class:`~streaming.sessions.StreamSession` (see the module doc)."""

    def push_audio(self, pcm: np.ndarray, sample_rate: int, channels: int = 1,
                   arrival: Optional[float] = None) -> None:
        """Queue received PCM for the worker (int16/float32, interleaved when ``channels`` > 1).

        ``arrival`` (``time.monotonic()``) marks live audio: it updates ``t0`` (see the module doc).
        Audio queued before the worker starts is dropped for live sources (no video is flowing yet).
        The inbox holds at most ``max_audio_s``; older audio is dropped first.
        """
        pcm = np.asarray(pcm)
        duration = pcm.size / max(1, channels) / float(sample_rate)
        with self._lock:
            if self._stop.is_set():
                return
            if self.realtime and self._t0 is None:
                self.audio_dropped_s += duration
                return
            self._inbox.append((pcm, int(sample_rate), int(channels), duration))
            self._inbox_s += duration
            while self._inbox_s > self.max_audio_s and len(self._inbox) > 1:
                old = self._inbox.popleft()
                self._inbox_s -= old[3]
                self.audio_dropped_s += old[3]
            end = self._fed_locked()
            if arrival is not None:
                self.measured.note_arrival(end, arrival)
                if self.realtime and self._t0 is not None:
                    self._t0 = min(self._t0, arrival - end)
        self._wake.set()

    def _fed_locked(self) -> float:
        return self._timeline / SAMPLE_RATE + self._inflight_s + self._inbox_s

    def fed_seconds(self) -> float:
        """Timeline position (seconds) once everything queued so far is consumed."""
        with self._lock:
            return self._fed_locked()

    def ahead_seconds(self) -> float:
        """How far the fed audio runs ahead of the wall clock (negative: behind)."""
        if self._t0 is None:
            return self.fed_seconds()
        return self.fed_seconds() - (time.monotonic() - self._t0)

    def source_waiting(self, waiting: bool) -> None:
        """The feeder of a pulled source (``realtime=False``) says whether it is waiting on its source
        (True: paused or ended) or delivering (False). Silence fills a pulled source's timeline only
        while its source is waiting: an event loop that is merely late to pull (a busy machine) never
        puts a gap into a bot's speech. With no feeder, the source counts as waiting."""
        if not waiting:
            self._source_waiting_since = None
        elif self._source_waiting_since is None:
            self._source_waiting_since = time.monotonic()

    def _sync_timeline(self, done_s: float = 0.0) -> None:
        """Read the session's clock after the worker changed it; ``done_s``: the in-flight chunk
        is now on it (both in one step, so fed_seconds never counts it twice or not at all)."""
        pushed = self.session.pushed_samples
        with self._lock:
            self._timeline = pushed
            self._inflight_s -= done_s

    def _drain_audio(self) -> None:
        while True:
            with self._lock:
                if not self._inbox:
                    return
                pcm, rate, channels, duration = self._inbox.popleft()
                self._inbox_s -= duration
                self._inflight_s += duration
            try:
                self.session.push_audio(pcm, rate, channels)
            except ValueError as exc:
                self.audio_errors += 1
                self.last_error = f"bad audio: {exc}"
                if self.audio_errors <= 3:
                    log.warning("%s: dropped audio chunk: %s", self.name, exc)
            finally:
                self._sync_timeline(done_s=duration)

    def _fill_silence(self) -> None:
        """Push zeros so the timeline (pushed audio, counting what sits in the resampler) stays at
        most ``grace_s`` behind the wall clock (plus ``fill_ahead_s``, the lead a pulled source is
        fed with, so a pause in a bot's source does not shift its frame schedule). Live audio that
        arrives on time never triggers it, so the resampler is not flushed mid-stream. A pulled
        source is filled only while it is waiting (:meth:`source_waiting`) for 10 ms or more."""
        assert self._t0 is not None
        if self.held:
            return
        if not self.realtime:
            since = self._source_waiting_since
            if since is None or time.monotonic() - since < 0.01:
                return
        with self._lock:
            if self._inbox and not self._catch_up:
                return
            self._catch_up = False
            missing = (time.monotonic() - self._t0 + self.fill_ahead_s - self.grace_s) - self._timeline / SAMPLE_RATE
        if missing >= 0.001:
            self.session.push_silence(missing)
            self.silence_s += missing
            self._sync_timeline()
