"""Pipecat: StyleCast as a video service in a voice agent's pipeline (``pip install 'stylecast[pipecat]'``).

::

    from streaming.integrations.pipecat import StyleCastVideoService

    avatar = StyleCastVideoService(fps=25, size=256)          # the demo face, no download
    pipeline = Pipeline([transport.input(), stt, llm, tts, avatar, transport.output()])

Put it right after the TTS service. It takes the ``TTSAudioRawFrame``s (any sample rate) and in
their place sends, per video frame, one ``OutputImageRawFrame`` (``sync_with_audio=True``) and
then exactly the audio that drove that frame as a ``TTSAudioRawFrame`` at the output transport's
rate. The transport plays its audio queue in order, so it shows frame k as frame k's audio
starts playing: lips and voice leave together by construction, whatever the TTS's chunking or
pace. Between turns it sends idle frames at ``fps`` on the wall clock (blinks, rest mouth; no
audio: the transport fills silence). ``TTSStartedFrame`` passes at once; ``TTSStoppedFrame``
waits until the turn's last frame has been sent. An ``InterruptionFrame`` drops the audio not yet
shown, brings the mouth back to rest (``AvatarSession.interrupt``) and then passes on, so the
output transport clears what it had queued too.

Synthesis runs in a worker thread, never on the event loop. The TTS audio waits here, not in the
session, and goes into the session only ``lead_s`` ahead of what has been sent; at most
``max_buffer_s`` seconds wait (more is dropped, said once, counted).

Metrics (with ``PipelineParams(enable_metrics=True)``): TTFB per turn, from its first TTS chunk
to its first talking frame sent; ``ProcessingMetricsData`` per turn, the mean synthesis time of
a frame; and an ``AvatarMetricsData`` per turn: frames, idle frames, late frames, dropped audio
seconds, synthesis p50/p95 ms.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass
from typing import Optional

import numpy as np
from pipecat.frames.frames import (
    CancelFrame,
    EndFrame,
    Frame,
    InterruptionFrame,
    MetricsFrame,
    OutputImageRawFrame,
    StartFrame,
    TTSAudioRawFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
)
from pipecat.metrics.metrics import MetricsData, ProcessingMetricsData
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.ai_service import AIService
from pipecat.services.settings import ServiceSettings

from engine.avatar import AvatarEngine
from engine.session import AvatarSession

__all__ = ["StyleCastVideoService", "AvatarMetricsData"]

log = logging.getLogger("stylecast.pipecat")



@dataclass
class _Stop:
    """In the audio queue: the turn's TTSStoppedFrame, sent once the turn's frames are out."""
    frame: TTSStoppedFrame
    flushed: bool = False       # the lookahead's silence after the turn's audio is pushed


class AvatarMetricsData(MetricsData):
    """One turn of the avatar: frames sent (``idle`` of them on silence), frames sent later than
    their wall-clock time (``late``), seconds of TTS audio dropped (buffer full), synthesis ms."""
    frames: int
    idle: int
    late: int
    dropped_audio_s: float
    synthesis_p50_ms: float
    synthesis_p95_ms: float


@dataclass
class StyleCastVideoSettings(ServiceSettings):
    """The service has nothing to change while running (identity and driver: the constructor)."""


class StyleCastVideoService(AIService):
    """A talking face from the TTS audio: images plus the audio that drove them (module doc).

    Args:
        engine: a shared ``AvatarEngine`` (None: one made from ``generator``, ``directions``,
            ``size``, ``device`` when the pipeline starts).
        generator, directions, size, device: the engine's settings (``size``: output pixels,
            None the generator's; match the transport's ``video_out_width``/``height``).
        identity: the face: a seed, a W/W+ array or a path (``AvatarSession.set_identity``).
        fps: video frames per second; match the transport's ``video_out_framerate``.
        driver, seed: the motion (``AvatarSession``'s).
        audio_out_rate: the rate of the audio sent on (None: the pipeline's output rate).
        lead_s: how far ahead of the wall clock frames are made while audio is waiting.
        max_buffer_s: most seconds of TTS audio kept waiting.
    """

    Settings = StyleCastVideoSettings

    def __init__(self, *, engine: Optional[AvatarEngine] = None, generator="demo", directions=None,
                 size: Optional[int] = None, device: str = "cpu", identity=0, fps: float = 25.0,
                 driver="default", seed: int = 0, audio_out_rate: Optional[int] = None,
                 lead_s: float = 0.2, max_buffer_s: float = 120.0, **kwargs):
        super().__init__(settings=StyleCastVideoSettings(model=None), **kwargs)
        if not (0 < float(fps) <= 120):
            raise ValueError(f"fps must be in (0, 120], got {fps!r}")
        if not (0 < float(lead_s) <= 10) or not (0 < float(max_buffer_s) <= 3600):
            raise ValueError("lead_s must be in (0, 10] and max_buffer_s in (0, 3600] seconds")
        self._engine = engine
        self._engine_args = dict(generator=generator, directions=directions, resolution=size, device=device)
        self._identity, self._driver_spec, self._seed = identity, driver, int(seed)
        self.fps, self.lead_s, self.max_buffer_s = float(fps), float(lead_s), float(max_buffer_s)
        self._out_rate = audio_out_rate
        self.session: Optional[AvatarSession] = None
        self._queue: deque = deque()            # (pcm, rate, channels) chunks and _Stop markers
        self._queued_s = 0.0
        self._wake = asyncio.Event()
        self._task: Optional[asyncio.Task] = None
        self._sent = 0                          # frames sent since the clock was last anchored
        self._t0 = 0.0                          # wall time of frame 0 of the anchor
        self._turn: Optional[dict] = None
        self._warned_full = False
        self._epoch = 0                         # +1 per interruption: a frame made across one is dropped

    def can_generate_metrics(self) -> bool:
        return True

    # -- lifecycle ---------------------------------------------------------------------------
    async def start(self, frame: StartFrame):
        await super().start(frame)
        rate = int(self._out_rate or getattr(self.processor_setup, "audio_out_sample_rate", 0) or 24000)
        self._out_rate = rate
        if self._engine is None:
            self._engine = await asyncio.to_thread(AvatarEngine, **self._engine_args)
        self.session = await asyncio.to_thread(
            AvatarSession, self._engine, fps=self.fps, identity=self._identity, driver=self._driver_spec,
            seed=self._seed, audio_out=True, audio_out_rate=rate)
        self._anchor()
        self._task = self.create_task(self._run(), name="stylecast-frames")

    async def stop(self, frame: EndFrame):
        """A graceful end: the audio still waiting is shown and sent first (bounded by its length)."""
        await super().stop(frame)
        deadline = time.perf_counter() + self._queued_s + self.lead_s + 2.0
        while (self._task is not None and not self._task.done() and time.perf_counter() < deadline
               and (self._queue or (self.session is not None and self.session.frames_ready() > 0))):
            await asyncio.sleep(0.01)
        await self._shutdown()

    async def cancel(self, frame: CancelFrame):
        await super().cancel(frame)
        await self._shutdown()

    async def cleanup(self):
        await super().cleanup()
        await self._shutdown()

    async def _shutdown(self) -> None:
        if self._task is not None:
            await self.cancel_task(self._task)
            self._task = None
        if self.session is not None:
            self.session.close()
            self.session = None

    # -- frames in ---------------------------------------------------------------------------
    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, TTSAudioRawFrame):
            self._take_audio(frame)
        elif isinstance(frame, TTSStoppedFrame):    # after an interruption: no audio of its turn is left
            self._queue.append(_Stop(frame, flushed=self._turn is None))
            self._wake.set()
        elif isinstance(frame, InterruptionFrame):
            self._interrupt()
            await self.push_frame(frame, direction)
        else:
            if isinstance(frame, TTSStartedFrame):
                self._turn = None
            await self.push_frame(frame, direction)

    def _take_audio(self, frame: TTSAudioRawFrame) -> None:
        n = len(frame.audio) // (2 * max(1, frame.num_channels))
        seconds = n / frame.sample_rate
        if self._queued_s + seconds > self.max_buffer_s:
            if not self._warned_full:
                log.warning("stylecast: more than %.0f s of TTS audio waiting: dropping the newest "
                            "(said once)", self.max_buffer_s)
                self._warned_full = True
            self._turn_stats()["dropped_audio_s"] += seconds
            return
        pcm = np.frombuffer(frame.audio, dtype=np.int16)[: n * frame.num_channels]
        turn = self._turn_stats()
        if turn["first_audio"] is None:
            turn["first_audio"] = time.time()
        self._queue.append((pcm, frame.sample_rate, frame.num_channels))
        self._queued_s += seconds
        self._wake.set()

    def _turn_stats(self) -> dict:
        if self._turn is None:
            self._turn = {"first_audio": None, "first_frame": None, "frames": 0, "idle": 0, "late": 0,
                          "dropped_audio_s": 0.0, "synthesis": []}
        return self._turn

    def _interrupt(self) -> None:
        """Drop what waits here and in the session; the mouth goes to rest; idle from now on."""
        stops = [_Stop(item.frame, flushed=True) for item in self._queue if isinstance(item, _Stop)]
        self._queue.clear()
        self._queue.extend(stops)    # the turns' stops still go on (their audio is gone)
        self._queued_s = 0.0
        self._epoch += 1
        if self.session is not None:
            self.session.interrupt()
        self._anchor()
        self._turn = None
        self._wake.set()

    def _anchor(self) -> None:
        self._t0, self._sent = time.perf_counter(), 0

    # -- frames out --------------------------------------------------------------------------
    def _feed(self) -> Optional[Frame]:
        """Move queued audio into the session until ``lead_s`` of frames are ready; a stop marker
        at the head (its audio all in) pushes the lookahead's silence and returns its frame once
        the session has no ready frames left."""
        s = self.session
        want = max(1, int(round(self.lead_s * self.fps)))
        while self._queue and s.frames_ready() < want:
            head = self._queue[0]
            if isinstance(head, _Stop):
                if not head.flushed:               # first time at the head: the turn's end becomes ready
                    s.push_silence(1.0 / self.fps + s.latency_ms / 1000.0)
                    head.flushed = True
                    continue
                if s.frames_ready() == 0:
                    self._queue.popleft()
                    return head.frame
                return None
            pcm, rate, channels = self._queue.popleft()
            self._queued_s = max(0.0, self._queued_s - len(pcm) / channels / rate)
            s.push_audio(pcm, rate, channels)
        return None

    async def _run(self) -> None:
        period = 1.0 / self.fps
        while True:
            s = self.session
            stopped = self._feed()
            if stopped is not None:
                await self._finish_turn(stopped)
                continue
            ahead = self._sent * period - (time.perf_counter() - self._t0)
            talking = s.frames_ready() > 0
            # mid-turn (audio still coming) an idle frame waits up to lead_s for it: zeros filled
            # into a half-arrived frame would cut a gap into the voice
            grace = self.lead_s if self._queue or (self._turn is not None and self._turn["first_audio"]) else 0.0
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
            if frame is None or self.session is not s or epoch != self._epoch:
                continue                           # made from audio an interruption dropped
            await self._send(frame, talking, ahead, epoch)

    async def _send(self, frame, talking: bool, ahead: float, epoch: int) -> None:
        period = 1.0 / self.fps
        self._sent += 1 + frame.dropped
        if ahead < -1.0:                            # a second behind the wall clock: start again from now
            self._anchor()
        image = frame.image
        out = OutputImageRawFrame(image=image.tobytes(), size=(image.shape[1], image.shape[0]), format="RGB")
        out.sync_with_audio = True
        await self.push_frame(out)
        turn = self._turn
        if talking and frame.audio is not None and frame.audio.size and epoch == self._epoch:
            await self.push_frame(TTSAudioRawFrame(audio=frame.audio.tobytes(), sample_rate=self._out_rate,
                                                   num_channels=1))
            if turn is not None:
                turn["frames"] += 1
                turn["late"] += int(ahead < -period)
                turn["synthesis"].append(frame.timings.get("synthesis", 0.0))
                if turn["first_frame"] is None and turn["first_audio"] is not None:
                    turn["first_frame"] = time.time()
                    await self.start_ttfb_metrics(start_time=turn["first_audio"])
                    await self.stop_ttfb_metrics(end_time=turn["first_frame"])
        elif turn is not None:
            turn["idle"] += 1

    async def _finish_turn(self, stopped: TTSStoppedFrame) -> None:
        turn, self._turn = self._turn, None
        if turn is not None and self.metrics_enabled and turn["synthesis"]:
            syn = np.asarray(turn["synthesis"], np.float64)
            data = [ProcessingMetricsData(processor=self.name, value=float(syn.mean()) / 1000.0),
                    AvatarMetricsData(processor=self.name, frames=turn["frames"], idle=turn["idle"],
                                      late=turn["late"], dropped_audio_s=round(turn["dropped_audio_s"], 3),
                                      synthesis_p50_ms=float(np.percentile(syn, 50)),
                                      synthesis_p95_ms=float(np.percentile(syn, 95)))]
            await self.push_frame(MetricsFrame(data=data))
        await self.push_frame(stopped)
