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
import time
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
    TTSStoppedFrame,
)
from pipecat.metrics.metrics import MetricsData, ProcessingMetricsData
from pipecat.processors.frame_processor import FrameDirection
from pipecat.services.ai_service import AIService
from pipecat.services.settings import ServiceSettings

from engine.avatar import AvatarEngine
from engine.session import AvatarSession

from .turns import TurnStats, TurnStream, check_buffering

__all__ = ["StyleCastVideoService", "AvatarMetricsData"]


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
        check_buffering(lead_s, max_buffer_s)
        self._engine = engine
        self._engine_args = dict(generator=generator, directions=directions, resolution=size, device=device)
        self._identity, self._driver_spec, self._seed = identity, driver, int(seed)
        self.fps, self.lead_s, self.max_buffer_s = float(fps), float(lead_s), float(max_buffer_s)
        self._out_rate = audio_out_rate
        self.session: Optional[AvatarSession] = None
        self.stream: Optional[TurnStream] = None
        self._task: Optional[asyncio.Task] = None

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
        self.stream = TurnStream(self.session, lead_s=self.lead_s, max_buffer_s=self.max_buffer_s)
        self._task = self.create_task(self._run(), name="stylecast-frames")

    async def stop(self, frame: EndFrame):
        """A graceful end: the audio still waiting is shown and sent first (bounded by its length)."""
        await super().stop(frame)
        if self.stream is not None:
            deadline = time.perf_counter() + self.stream.waiting_s + self.lead_s + 2.0
            while (self._task is not None and not self._task.done() and time.perf_counter() < deadline
                   and self.stream.busy()):
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
            self.session = self.stream = None

    # -- frames in ---------------------------------------------------------------------------
    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, TTSAudioRawFrame):
            if self.stream is not None:
                n = len(frame.audio) // (2 * max(1, frame.num_channels))
                pcm = np.frombuffer(frame.audio, dtype=np.int16)[: n * frame.num_channels]
                self.stream.push(pcm, frame.sample_rate, frame.num_channels)
        elif isinstance(frame, TTSStoppedFrame) and self.stream is not None:
            self.stream.end_segment(frame)           # goes on after the turn's last frame
        elif isinstance(frame, InterruptionFrame):
            if self.stream is not None:
                self.stream.interrupt()
            await self.push_frame(frame, direction)
        else:
            await self.push_frame(frame, direction)

    # -- frames out --------------------------------------------------------------------------
    async def _run(self) -> None:
        stream = self.stream
        while True:
            out = await stream.next()
            if out.kind == "end":
                await self._finish_turn(out.marker, out.stats)
                continue
            epoch = stream.epoch
            image = out.frame.image
            img = OutputImageRawFrame(image=image.tobytes(), size=(image.shape[1], image.shape[0]), format="RGB")
            img.sync_with_audio = True
            await self.push_frame(img)
            audio = stream.audio_after(out, epoch)
            if audio is not None:
                await self.push_frame(TTSAudioRawFrame(audio=audio.tobytes(), sample_rate=self._out_rate,
                                                       num_channels=1))
                turn = stream.current_stats()
                if turn is not None and turn.first_frame is not None and not turn.reported:
                    turn.reported = True
                    await self.start_ttfb_metrics(start_time=turn.first_audio)
                    await self.stop_ttfb_metrics(end_time=turn.first_frame)

    async def _finish_turn(self, stopped: TTSStoppedFrame, turn: Optional[TurnStats]) -> None:
        if turn is not None and self.metrics_enabled and turn.synthesis_ms:
            syn = turn.summary()
            data = [ProcessingMetricsData(processor=self.name, value=float(np.mean(turn.synthesis_ms)) / 1000.0),
                    AvatarMetricsData(processor=self.name, frames=turn.frames, idle=turn.idle, late=turn.late,
                                      dropped_audio_s=syn["dropped_audio_s"], synthesis_p50_ms=syn["synthesis_p50_ms"],
                                      synthesis_p95_ms=syn["synthesis_p95_ms"])]
            await self.push_frame(MetricsFrame(data=data))
        await self.push_frame(stopped)
