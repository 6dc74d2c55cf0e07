"""The core every voice-agent integration shares: TTS audio in, talking and idle frames out.

A :class:`TurnStream` owns one ``AvatarSession(audio_out=True)``. The framework adapter hands it
TTS audio (:meth:`push`, any rate and layout) and segment ends (:meth:`end_segment`, a marker of
the adapter's own: pipecat's ``TTSStoppedFrame``, LiveKit's ``AudioSegmentEnd``), and awaits
:meth:`next`, which returns, in order:

* ``Out("frame", frame, talking=True)``: a frame made from pushed audio, ``frame.audio`` exactly
  the audio that drove it (send it right after the image);
* ``Out("frame", frame, talking=False)``: an idle frame on silence, made when its wall-clock time
  has come (no TTS audio waiting);
* ``Out("end", marker=...)``: once every frame of the segment before it has been returned.

Talking frames are made up to ``lead_s`` ahead of the wall clock; the TTS audio waits here (at
most ``max_buffer_s`` seconds; more is dropped, said once, counted), not in the session, and goes
into it only as needed. :meth:`interrupt` drops every waiting sample and the session's unshown
audio, brings the mouth to rest, and makes sure no frame made across it is returned. Synthesis
runs in a worker thread (``asyncio.to_thread``), never on the event loop.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Optional

import numpy as np

from engine.frames import Frame
from engine.session import AvatarSession

__all__ = ["TurnStream", "Out", "TurnStats", "check_buffering"]

log = logging.getLogger("stylecast.integrations")


def check_buffering(lead_s: float, max_buffer_s: float) -> None:
    """ValueError unless 0 < ``lead_s`` <= 10 and 0 < ``max_buffer_s`` <= 3600 (seconds)."""
    if not (0 < float(lead_s) <= 10) or not (0 < float(max_buffer_s) <= 3600):
        raise ValueError("lead_s must be in (0, 10] and max_buffer_s in (0, 3600] seconds")


@dataclass
class Out:
    kind: str                               # "frame" or "end"
    frame: Optional[Frame] = None
    talking: bool = False
    marker: Any = None
    late: bool = False                      # a talking frame returned after its wall-clock time
    stats: Optional["TurnStats"] = None     # with "end": the segment's figures


@dataclass
class TurnStats:
    """One segment of TTS audio: when its first audio came and its first frame went (time.time),
    frames (talking / idle / late), seconds dropped because the buffer was full, synthesis ms."""
    first_audio: Optional[float] = None
    first_frame: Optional[float] = None
    frames: int = 0
    idle: int = 0
    late: int = 0
    dropped_audio_s: float = 0.0
    synthesis_ms: list = field(default_factory=list)
    reported: bool = False                  # the adapter has sent its time to first frame

    def summary(self) -> dict:
        syn = np.asarray(self.synthesis_ms, np.float64)
        return {"frames": self.frames, "idle": self.idle, "late": self.late,
                "dropped_audio_s": round(self.dropped_audio_s, 3),
                "first_frame_s": (None if self.first_frame is None or self.first_audio is None
                                  else self.first_frame - self.first_audio),
                "synthesis_p50_ms": float(np.percentile(syn, 50)) if syn.size else None,
                "synthesis_p95_ms": float(np.percentile(syn, 95)) if syn.size else None}


@dataclass
class _End:
    marker: Any
    flushed: bool = False      # the lookahead's silence after the segment's audio is pushed
    stats: Optional[TurnStats] = None


class TurnStream:
    """TTS audio and segment ends in, frames and the segment ends out (module doc)."""

    def __init__(self, session: AvatarSession, *, lead_s: float = 0.2, max_buffer_s: float = 120.0):
        if not session.audio_out:
            raise ValueError("TurnStream needs an AvatarSession(audio_out=True)")
        check_buffering(lead_s, max_buffer_s)
        self.session, self.fps = session, session.fps
        self.lead_s, self.max_buffer_s = float(lead_s), float(max_buffer_s)
        self._queue: deque = deque()            # (pcm, rate, channels) chunks and _End markers
        self._queued_s = 0.0
        self._wake = asyncio.Event()
        self._sent = 0                          # frames returned since the clock was last anchored
        self._t0 = time.perf_counter()          # wall time of frame 0 of the anchor
        self.turn: Optional[TurnStats] = None   # the segment being received
        self._warned_full = False
        self._epoch = 0                         # +1 per interruption: a frame made across one is dropped

    # -- in ----------------------------------------------------------------------------------
    @property
    def waiting_s(self) -> float:
        """Seconds of TTS audio waiting here (not yet in the session)."""
        return self._queued_s

    def busy(self) -> bool:
        """Audio or a segment end is waiting, or the session has frames ready."""
        return bool(self._queue) or self.session.frames_ready() > 0

    def push(self, pcm: np.ndarray, rate: int, channels: int = 1) -> bool:
        """Queue TTS audio (int16 or float, interleaved); False when dropped (the buffer is full)."""
        pcm = np.asarray(pcm).reshape(-1)
        seconds = pcm.size / max(1, channels) / rate
        turn = self._turn()
        if self._queued_s + seconds > self.max_buffer_s:
            if not self._warned_full:
                log.warning("stylecast: more than %.0f s of TTS audio waiting: dropping the newest (said once)",
                            self.max_buffer_s)
                self._warned_full = True
            turn.dropped_audio_s += seconds
            return False
        if turn.first_audio is None:
            turn.first_audio = time.time()
        self._queue.append((pcm, int(rate), int(channels)))
        self._queued_s += seconds
        self._wake.set()
        return True

    def end_segment(self, marker: Any) -> None:
        """The segment's audio is all in: ``marker`` comes out of :meth:`next` after its frames."""
        self._queue.append(_End(marker, flushed=self.turn is None, stats=self.turn))
        self.turn = None
        self._wake.set()

    def interrupt(self) -> float:
        """Drop the waiting audio and the session's unshown audio, mouth to rest (the session's
        ``interrupt``); segment ends already queued still come out, at once. Returns the seconds of
        audio dropped."""
        ends = [_End(item.marker, flushed=True, stats=item.stats) for item in self._queue if isinstance(item, _End)]
        dropped = self._queued_s
        self._queue.clear()
        self._queue.extend(ends)
        self._queued_s = 0.0
        self._epoch += 1
        dropped += self.session.interrupt()
        self._anchor()
        self.turn = None
        self._wake.set()
        return dropped

    def _turn(self) -> TurnStats:
        if self.turn is None:
            self.turn = TurnStats()
        return self.turn

    def _anchor(self) -> None:
        self._t0, self._sent = time.perf_counter(), 0

    # -- out ---------------------------------------------------------------------------------
    def _feed(self) -> Optional[_End]:
        """Move queued audio into the session until ``lead_s`` of frames are ready; an end marker
        at the head pushes the lookahead's silence once, and is returned when no frame is left."""
        s = self.session
        want = max(1, int(round(self.lead_s * self.fps)))
        while self._queue and s.frames_ready() < want:
            head = self._queue[0]
            if isinstance(head, _End):
                if not head.flushed:               # the segment's last frames become ready
                    s.push_silence(1.0 / self.fps + s.latency_ms / 1000.0)
                    head.flushed = True
                    continue
                if s.frames_ready() == 0:
                    return self._queue.popleft()
                return None
            pcm, rate, channels = self._queue.popleft()
            self._queued_s = max(0.0, self._queued_s - pcm.size / channels / rate)
            s.push_audio(pcm, rate, channels)
        return None

    def _midturn(self) -> bool:
        return bool(self._queue) or (self.turn is not None and self.turn.first_audio is not None)

    async def next(self) -> Out:
        """The next thing to send (module doc). Cancel-safe between frames."""
        period = 1.0 / self.fps
        while True:
            s = self.session
            end = self._feed()
            if end is not None:
                return Out("end", marker=end.marker, stats=end.stats)
            ahead = self._sent * period - (time.perf_counter() - self._t0)
            talking = s.frames_ready() > 0
            # mid-turn (audio still coming) an idle frame waits up to lead_s for it: zeros filled
            # into a half-arrived frame would cut a gap into the voice
            grace = self.lead_s if self._midturn() else 0.0
            epoch = self._epoch
            if talking and ahead < self.lead_s:
                frame = await asyncio.to_thread(s.next_frame)
            elif not talking and ahead <= -grace:
                frame = await asyncio.to_thread(s.next_frame, fill_silence=True)
            else:
                self._wake.clear()
                wait = ahead - self.lead_s if talking else ahead + grace
                try:
                    await asyncio.wait_for(self._wake.wait(), max(wait, 0.001))
                except asyncio.TimeoutError:
                    pass
                continue
            if frame is None or epoch != self._epoch:
                continue                           # made from audio an interruption dropped
            self._sent += 1 + frame.dropped
            if ahead < -1.0:                       # a second behind the wall clock: start again from now
                self._anchor()
            late = talking and ahead < -period
            turn = self.current_stats() if talking or self.turn is not None else None
            if turn is not None:
                if talking:
                    turn.frames += 1
                    turn.late += int(late)
                    turn.synthesis_ms.append(frame.timings.get("synthesis", 0.0))
                    if turn.first_frame is None and turn.first_audio is not None:
                        turn.first_frame = time.time()
                else:
                    turn.idle += 1
            return Out("frame", frame, talking=talking, late=late)

    def current_stats(self) -> Optional[TurnStats]:
        """The figures of the segment whose frames are going out now (None between segments)."""
        return self.turn if self.turn is not None else self._last_stats()

    def _last_stats(self) -> Optional[TurnStats]:
        """The stats of the ended segment whose frames are still going out."""
        for item in self._queue:
            if isinstance(item, _End):
                return item.stats
        return None

    @property
    def epoch(self) -> int:
        """Interruptions so far: read it before sending a frame's image, and pass it to
        :meth:`audio_after` (an adapter awaits between the image and the audio)."""
        return self._epoch

    def audio_after(self, out: Out, epoch: int) -> Optional[np.ndarray]:
        """The audio to send after ``out``'s image: its frame's audio if it is a talking frame
        and no interruption came since ``epoch``; else None."""
        audio = out.frame.audio if out.frame is not None else None
        if out.talking and audio is not None and audio.size and epoch == self._epoch:
            return audio
        return None
