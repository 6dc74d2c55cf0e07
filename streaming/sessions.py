"""StreamSession: one avatar stream driven on its own worker thread.

The asyncio side only routes: received PCM goes into a bounded inbox, commands into a bounded
queue, and finished frames come back through a :class:`~streaming.slots.LatestSlot`. Everything
that touches the :class:`engine.session.AvatarSession` (push_audio, next_frame, set_identity, ...)
runs on the worker thread, so synthesis never blocks the event loop and the session needs no lock.

Clock: the timeline is the session's own 16 kHz count of pushed audio
(``AvatarSession.pushed_samples``, silence and resampler contents included), read by the worker
after each change and kept beside the inbox under one lock, so readers on other threads see both
at once; an interrupt that rewinds the session rewinds the stream with it. Wall time enters only at
the edges: ``t0`` (``time.monotonic()`` seconds) is the wall time of audio sample 0 of that
timeline; the audio of time ``s`` is due at ``t0 + s`` and video frame k leaves no earlier than
``t0 + k/fps``. For live audio (``realtime=True``: a microphone, a remote track) ``t0`` follows the
audio clock: each arrival at wall time ``a`` ending at timeline position ``p`` gives the estimate
``a - p`` and ``t0`` keeps the earliest one, so frames are made as soon as their audio is in and
the deadlines never hold them back. When rendering every ready frame would bring the newest one
out more than ``max_behind_frames`` (2) frame intervals after its audio allowed (a frame costs
what the last frames cost), only the newest is synthesized (the others are stepped and dropped):
an overloaded stream drops frames instead of queueing them. An interrupt drops the audio that is
waiting and synthesizes the next frame at once (its audio filled with silence), so the mouth is
at rest in the next frame that leaves. Pulled sources (a bot's TTS iterator, ``realtime=False``) are fed no
faster than the wall clock plus the motion lookahead, so their frames come out on time.
When no audio arrives the worker pushes silence so that the timeline stays at least ``grace_s``
behind the wall clock: the face keeps idling without a microphone.
"""
from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import itertools
import logging
import threading
import time
from typing import Any, Callable, Optional

from .slots import AudioOutBuffer, LatestSlot
from .stream_input import StreamInput
from .stream_stats import StreamStats
from .webrtc_sink import WebRTCSink

__all__ = ["StreamSession"]

log = logging.getLogger("stylecast.streaming")
_ids = itertools.count(1)


class StreamSession(StreamInput):
    """Drive one ``AvatarSession`` on a worker thread and publish frames for the aiortc tracks.

    Args:
        session: an :class:`engine.session.AvatarSession` (``output="uint8"``; ``audio_out=True``
            when ``audio_out`` is wanted). The StreamSession owns it and closes it.
        realtime: audio arrives live (mic, remote track): ``t0`` follows the arrival times.
        grace_s: how far the timeline may fall behind the wall clock before silence is pushed.
        max_audio_s: bound of the received-audio inbox (oldest audio dropped beyond it).
        stamp: write the frame index into each image's bottom edge (tests, benchmarks).
        audio_out: publish ``Frame.audio`` into :attr:`audio_out` for an :class:`AvatarAudioTrack`.
        max_behind_frames: how late (in frame intervals, against the audio schedule) the newest
            ready frame may come out before older ready frames are skipped; absorbs arrival
            jitter without dropping.
    """

    def __init__(self, session: Any, *, realtime: bool = True, grace_s: float = 0.06,
                 max_audio_s: float = 1.0, stamp: bool = False, audio_out: bool = False,
                 audio_out_rate: int = 48000, max_behind_frames: float = 2.0,
                 name: Optional[str] = None) -> None:
        self.session = session
        self.fps = float(session.fps)
        self.name = name or f"stream-{next(_ids)}"
        self.realtime = realtime
        self.grace_s = float(grace_s)
        self.max_behind_frames = float(max_behind_frames)
        self.max_audio_s = float(max_audio_s)
        self.video_slot: LatestSlot = LatestSlot()
        self.audio_out: Optional[AudioOutBuffer] = AudioOutBuffer(audio_out_rate) if audio_out else None
        self.sink = WebRTCSink(self.fps, self.video_slot, self.audio_out, stamp=stamp)
        self._lock = threading.Lock()
        self._inbox: collections.deque = collections.deque()
        self._inbox_s = 0.0          # seconds of received audio waiting in the inbox
        self._inflight_s = 0.0       # ... and of the chunk the worker is pushing right now
        self._timeline = 0.0         # session.pushed_samples (16 kHz) as of the worker's last change
        self._commands: collections.deque = collections.deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._t0: Optional[float] = None
        self._closed = False
        self.fill_ahead_s = 0.0      # pulled sources run ahead of the clock; silence keeps that lead
        self._source_waiting_since: Optional[float] = time.monotonic()   # see source_waiting()
        self._catch_up = False       # the first fill after a hold may not wait for an empty inbox
        self._rest_now = False       # an interrupt asks for the next frame at once
        self._frame_cost = 0.0       # seconds one frame took to make, smoothed (see _behind)
        self.resumed_at: Optional[float] = None      # when the last hold ended (time.monotonic)
        self.held_s = 0.0            # seconds spent held
        self._held_since: Optional[float] = None     # when the hold began (None: not held; see hold())
        self.on_start: list[Callable[[], None]] = []   # called (in the event loop) when the worker starts
        # stats
        self.engine_dropped = 0      # frames stepped but not synthesized (Frame.dropped)
        self.audio_dropped_s = 0.0   # received audio dropped because the inbox was full
        self.audio_errors = 0
        self.frame_errors = 0
        self.last_error: Optional[str] = None
        self.silence_s = 0.0
        self.last_index = -1         # the last published frame
        self.measured = StreamStats()

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def frames(self) -> int:
        """Frames published so far (the sink's count)."""
        return self.sink.frames

    @property
    def started(self) -> bool:
        return self._thread is not None

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    @property
    def t0(self) -> Optional[float]:
        return self._t0

    def ensure_started(self) -> None:
        """Start the worker (first call only; called by the tracks' first ``recv``)."""
        if self._thread is not None or self._stop.is_set():
            return
        try:
            loop = asyncio.get_running_loop()
            self.video_slot.bind(loop)
            if self.audio_out is not None:
                self.audio_out.bind(loop)
        except RuntimeError:
            pass
        with self._lock:
            self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._run, name=f"stylecast-stream-{self.name}", daemon=True)
        self._thread.start()
        for callback in self.on_start:
            callback()

    def deadline(self, seconds: float) -> float:
        """Wall-clock (``time.monotonic``) time at which timeline time ``seconds`` is due."""
        t0 = self._t0 if self._t0 is not None else time.monotonic()
        return t0 + seconds

    def stop(self, timeout: float = 5.0) -> bool:
        """Stop the worker, close the slot and the session (blocking; use :meth:`aclose` in async code).

        Returns False if the worker thread did not finish within ``timeout`` (it is a daemon thread
        and exits after its current frame).
        """
        self._stop.set()
        self._wake.set()
        self.video_slot.close()
        finished = True
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)
            finished = not self._thread.is_alive()
        if finished:
            self._close_session()
        return finished

    def _close_session(self) -> None:
        """Close the AvatarSession once (the worker does it on exit; :meth:`stop` if it never ran)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            self.session.close()
        except Exception:  # closing must never raise into teardown
            log.exception("%s: session.close failed", self.name)

    async def aclose(self, timeout: float = 5.0) -> bool:
        """Stop without blocking the event loop (the join runs in the default executor)."""
        self._stop.set()
        self._wake.set()
        self.video_slot.close()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self.stop, timeout)

    def submit(self, fn: Callable[[Any], Any]) -> concurrent.futures.Future:
        """Run ``fn(session)`` on the worker thread between frames; returns a Future.

        At most 16 commands wait; more raise RuntimeError ("busy").
        """
        fut: concurrent.futures.Future = concurrent.futures.Future()
        with self._lock:
            if self._stop.is_set():
                fut.set_exception(RuntimeError("stream closed"))
                return fut
            if len(self._commands) >= 16:
                raise RuntimeError("too many pending commands")
            self._commands.append((fn, fut))
        self._wake.set()
        if self._thread is None:          # not started: nothing else touches the session yet
            self._run_commands()
        return fut

    def interrupt(self) -> concurrent.futures.Future:
        """Barge-in, on the worker: the received audio still waiting is dropped,
        ``session.interrupt()`` (mouth ramped to rest, pushed audio dropped; the stream's timeline
        is the session's, so it rewinds with it), and the next frame is made at once with its
        audio filled with silence. The future's result: the seconds of audio dropped."""
        def run(session) -> float:
            with self._lock:
                waiting, self._inbox_s = self._inbox_s, 0.0
                self._inbox.clear()
            dropped = session.interrupt()
            self._rest_now = True
            return dropped + waiting
        return self.submit(run)

    @property
    def held(self) -> bool:
        return self._held_since is not None

    def hold(self, on: bool) -> None:
        """Stop (True) or restart (False) making frames while a live source has gone quiet (its
        client's packets stopped: gone, or a network outage). Held, the timeline is not filled with
        silence, so no frame is synthesized for nobody; released, the timeline jumps to the wall
        clock in one step (the skipped interval is stepped, not rendered) and the audio that comes
        in next lands at its own time."""
        now = time.monotonic()
        with self._lock:
            if bool(on) == self.held:
                return
            if on:
                self._held_since = now
            else:
                self.held_s += now - self._held_since
                self._held_since, self.resumed_at, self._catch_up = None, now, True
        self._wake.set()

    def note_sent(self, index: int) -> None:
        self.measured.note_sent(index)

    # -- worker ---------------------------------------------------------------------------------

    def _run_commands(self) -> None:
        while True:
            with self._lock:
                if not self._commands:
                    return
                fn, fut = self._commands.popleft()
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                result = fn(self.session)
            except BaseException as exc:  # reported to the caller through the future
                self._sync_timeline()
                fut.set_exception(exc)
            else:
                self._sync_timeline()     # a command may move the clock (interrupt rewinds it)
                fut.set_result(result)

    def _run(self) -> None:
        try:
            self._loop()
        finally:
            self.video_slot.close()
            if self._stop.is_set():
                self._close_session()

    def _loop(self) -> None:
        poll = 0.5 / self.fps
        failures = 0
        while not self._stop.is_set():
            self._wake.clear()     # a wake-up set from here on ends the next wait early
            try:
                self._run_commands()
                if self._catch_up:       # back from a hold: the timeline first jumps to now
                    self._fill_silence()
                if self._rest_now and not self.held:
                    self._rest_now = False
                    self._make_frame(lambda: self.session.next_frame(fill_silence=True))
                    self._sync_timeline()
                    continue
                self._drain_audio()
                self._fill_silence()
                ready = self.session.frames_ready()
                early = self.deadline((self.last_index + 1 - 0.5) / self.fps) - time.monotonic()
                if ready > 0 and early > 0:
                    # audio fed ahead of the clock (a bot's source): synthesize at most half a frame
                    # before the deadline, so the sender never finds two frames waiting
                    self._wake.wait(min(early, poll))
                    continue
                if ready > 0:
                    latest = ready > 1 and self._behind(ready)
                    if self._make_frame(lambda: self.session.next_frame(latest=latest)):
                        failures = 0
                        continue
                self._wake.wait(poll)
            except Exception as exc:  # a bad frame must not kill the stream
                failures += 1
                self.frame_errors += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("%s: frame failed", self.name)
                if failures >= 5:
                    log.error("%s: 5 failures in a row, stopping the stream", self.name)
                    self._stop.set()
                    return
                self._stop.wait(0.1)

    def _make_frame(self, make: Callable[[], Any]) -> bool:
        """Make one frame with ``make()`` and publish it; keeps the smoothed cost of a frame."""
        t = time.monotonic()
        frame = make()
        if frame is None:
            return False
        cost = time.monotonic() - t
        self._frame_cost = cost if self._frame_cost == 0.0 else 0.8 * self._frame_cost + 0.2 * cost
        self._publish(frame)
        return True

    def _behind(self, ready: int) -> bool:
        """True when rendering all ``ready`` frames (at the smoothed cost of a frame each) would
        bring the newest one out more than ``max_behind_frames`` intervals later than it could be
        at best (its audio's end + the session's resampler/lookahead lag): then only the newest is
        synthesized (``latest=True``). Frames that became ready together on time (two frames
        completed by one audio chunk, a bot's source fed ahead) are all rendered."""
        k = self.last_index + ready
        best = self.deadline((k + 1) / self.fps) + float(self.session.latency_ms) / 1000.0
        finish = time.monotonic() + ready * self._frame_cost
        return finish - best > self.max_behind_frames / self.fps

    def _publish(self, frame: Any) -> None:
        t_start = time.monotonic()
        self.sink.write(frame)      # the slot's put wakes the track: the stats below are this frame's
        self.engine_dropped += int(getattr(frame, "dropped", 0) or 0)
        self.last_index = frame.index
        timings = dict(getattr(frame, "timings", {}) or {})
        timings["publish"] = (time.monotonic() - t_start) * 1e3
        self.measured.note_frame(frame.index, self.fps, timings, getattr(frame, "latency_ms", None))

    # -- stats ----------------------------------------------------------------------------------

    def stats(self) -> dict:
        """Counters, and per-stage p50/p95 (ms) over the last 250 frames (:class:`StreamStats`)."""
        measured = self.measured.summary()
        return {
            "frames": self.frames,
            "sent_index": measured["sent_index"],
            "fps": measured["fps"],
            "dropped": self.engine_dropped + self.video_slot.dropped,
            "engine_dropped": self.engine_dropped,
            "slot_dropped": self.video_slot.dropped,
            "audio_dropped_s": self.audio_dropped_s,
            "audio_errors": self.audio_errors,
            "frame_errors": self.frame_errors,
            "silence_s": self.silence_s,
            "held": self.held,
            "held_s": self.held_s,
            "latency_ms": measured["latency_ms"],
            "arrival_to_frame_ms": measured["arrival_to_frame_ms"],
            "stages_ms": measured["stages_ms"],
            "last_error": self.last_error,
        }
