"""LiveKit Agents: StyleCast as the ``VideoGenerator`` of an ``AvatarRunner`` (``pip install 'stylecast[livekit]'``).

::

    from livekit.agents.voice.avatar import AvatarOptions, AvatarRunner, QueueAudioOutput
    from streaming.integrations.livekit import StyleCastVideoGenerator

    gen = StyleCastVideoGenerator(fps=25)                      # the demo face
    audio = QueueAudioOutput(sample_rate=gen.sample_rate)      # in-process: the agent's own room
    session.output.audio = audio
    runner = AvatarRunner(room, audio_recv=audio, video_gen=gen, options=gen.options())
    await runner.start()

``push_audio`` takes the agent's ``rtc.AudioFrame``s (any rate) and ``AudioSegmentEnd``;
iterating yields, per video frame, an ``rtc.VideoFrame`` (RGBA) and then the ``rtc.AudioFrame``
that drove it (the runner's ``AVSynchronizer`` publishes them together), idle video frames on the
wall clock when there is no audio, and ``AudioSegmentEnd`` once a segment's last frame is out
(the runner then sends ``playback_finished``). ``clear_buffer`` (the agent was interrupted) drops
the audio not yet shown and brings the mouth to rest; the segment ends already pushed still come
out. The worker mode (a separate process joining the room with ``DataStreamAudioReceiver``) is
``python -m streaming.livekit_worker``; it runs :class:`StyleCastAvatarRunner`, which sends
exactly one ``playback_finished`` per segment the agent sent, with the seconds of it that were
played, also for segments cleared before a sample of them was shown (the stock ``AvatarRunner``
sends none for those, and an agent's ``say()`` then waits for its clear-buffer timeout).
"""
from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass
from typing import AsyncIterator, Optional, Union

import numpy as np
from livekit import rtc
from livekit.agents.voice.avatar import AudioReceiver, AudioSegmentEnd, AvatarOptions, VideoGenerator

from engine.avatar import AvatarEngine
from engine.session import AvatarSession

from .turns import TurnStream

__all__ = ["StyleCastVideoGenerator", "StyleCastAvatarRunner"]

log = logging.getLogger("stylecast.livekit")


class StyleCastVideoGenerator(VideoGenerator):
    """The avatar as LiveKit's ``VideoGenerator`` (module doc).

    Args:
        engine: a shared ``AvatarEngine`` (None: the demo engine).
        fps: video frames per second.
        identity, driver, seed: the face and its motion (``AvatarSession``'s).
        sample_rate: the rate of the audio frames yielded (the runner's ``audio_sample_rate``).
        lead_s, max_buffer_s: as :class:`streaming.integrations.turns.TurnStream`.
    """

    def __init__(self, engine: Optional[AvatarEngine] = None, *, fps: float = 25.0, identity=0,
                 driver="default", seed: int = 0, sample_rate: int = 24000, lead_s: float = 0.2,
                 max_buffer_s: float = 120.0):
        self.engine = engine if engine is not None else AvatarEngine("demo")
        self.sample_rate = int(sample_rate)
        self.session = AvatarSession(self.engine, fps=fps, identity=identity, driver=driver, seed=seed,
                                     audio_out=True, audio_out_rate=self.sample_rate)
        self.stream = TurnStream(self.session, lead_s=lead_s, max_buffer_s=max_buffer_s)
        self.fps = self.session.fps
        self.size = int(self.engine.resolution)

    def options(self) -> AvatarOptions:
        """``AvatarOptions`` matching this generator (size, fps, mono audio at ``sample_rate``)."""
        return AvatarOptions(video_width=self.size, video_height=self.size, video_fps=self.fps,
                             audio_sample_rate=self.sample_rate, audio_channels=1)

    async def push_audio(self, frame: Union[rtc.AudioFrame, AudioSegmentEnd]) -> None:
        if isinstance(frame, AudioSegmentEnd):
            self.stream.end_segment(frame)
            return
        pcm = np.frombuffer(frame.data, dtype=np.int16)[: frame.samples_per_channel * frame.num_channels]
        self.stream.push(pcm, frame.sample_rate, frame.num_channels)

    def clear_buffer(self) -> None:
        self.stream.interrupt()

    def __aiter__(self) -> AsyncIterator[Union[rtc.VideoFrame, rtc.AudioFrame, AudioSegmentEnd]]:
        return self._frames()

    async def _frames(self):
        stream = self.stream
        while True:
            out = await stream.next()
            if out.kind == "end":
                yield out.marker
                continue
            epoch = stream.epoch
            img = out.frame.image
            rgba = np.empty((img.shape[0], img.shape[1], 4), np.uint8)
            rgba[..., :3], rgba[..., 3] = img, 255
            yield rtc.VideoFrame(img.shape[1], img.shape[0], rtc.VideoBufferType.RGBA, rgba.tobytes())
            audio = stream.audio_after(out, epoch)
            if audio is not None:
                yield rtc.AudioFrame(audio.tobytes(), self.sample_rate, 1, int(audio.size))

    async def aclose(self) -> None:
        self.session.close()


@dataclass
class _Segment:
    played: float = 0.0            # seconds of its audio handed to the synchronizer
    interrupted: bool = False
    started: bool = False


class StyleCastAvatarRunner:
    """Publishes the generator's video and audio (an ``rtc.AVSynchronizer``) and answers the agent:
    ``playback_started`` at a segment's first sample, exactly one ``playback_finished`` per segment
    (``interrupted`` when a clear came while it was pending), in the order the agent sent them.

    Args:
        room: the connected ``rtc.Room`` (or anything with its ``local_participant.publish_track``).
        audio_recv: an ``AudioReceiver`` (``DataStreamAudioReceiver`` in the worker,
            ``QueueAudioOutput`` in-process).
        video_gen: a :class:`StyleCastVideoGenerator`.
    """

    def __init__(self, room, *, audio_recv: AudioReceiver, video_gen: StyleCastVideoGenerator,
                 queue_size_ms: int = 100):
        self.room, self.audio_recv, self.gen = room, audio_recv, video_gen
        opts = video_gen.options()
        self.audio_source = rtc.AudioSource(opts.audio_sample_rate, opts.audio_channels, queue_size_ms=queue_size_ms)
        self.video_source = rtc.VideoSource(opts.video_width, opts.video_height)
        self.av_sync = rtc.AVSynchronizer(audio_source=self.audio_source, video_source=self.video_source,
                                          video_fps=opts.video_fps, video_queue_size_ms=queue_size_ms)
        self._pending: deque[_Segment] = deque()    # segments sent by the agent, not yet finished
        self._receiving: Optional[_Segment] = None  # the segment whose audio is arriving
        self._closed_by_clear = False               # _receiving was closed by a clear, its end not yet seen
        self._tasks: list[asyncio.Task] = []
        self._published = False
        self.finished: list[tuple[float, bool]] = []   # (position, interrupted) as sent

    async def start(self) -> None:
        await self.audio_recv.start()
        self.audio_recv.on("clear_buffer", self._on_clear)
        self._tasks = [asyncio.ensure_future(self._read_audio()), asyncio.ensure_future(self._forward())]

    async def wait_for_complete(self) -> None:
        await asyncio.gather(*self._tasks)

    async def _publish(self) -> None:
        self._published = True
        lp = self.room.local_participant
        audio = rtc.LocalAudioTrack.create_audio_track("avatar_audio", self.audio_source)
        pub = await lp.publish_track(audio, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_MICROPHONE))
        await pub.wait_for_subscription()
        video = rtc.LocalVideoTrack.create_video_track("avatar_video", self.video_source)
        await lp.publish_track(video, rtc.TrackPublishOptions(source=rtc.TrackSource.SOURCE_CAMERA))

    async def _read_audio(self) -> None:
        async for item in self.audio_recv:
            if not isinstance(item, AudioSegmentEnd):
                self._closed_by_clear = False
            elif self._receiving is None and self._closed_by_clear:
                self._closed_by_clear = False          # that segment was closed at the clear
                continue
            if self._receiving is None:
                self._receiving = _Segment()
                self._pending.append(self._receiving)
            if isinstance(item, AudioSegmentEnd):
                self._receiving = None
            await self.gen.push_audio(item)

    async def _forward(self) -> None:
        async for item in self.gen:
            if isinstance(item, AudioSegmentEnd):
                if self._pending:
                    seg = self._pending.popleft()
                    await self._notify_finished(seg.played, seg.interrupted)
                continue
            if not self._published:
                await self._publish()
            await self.av_sync.push(item)
            if isinstance(item, rtc.AudioFrame) and self._pending:
                seg = self._pending[0]
                if not seg.started:
                    seg.started = True
                    await self._maybe_await(self.audio_recv.notify_playback_started())
                seg.played += item.duration

    def _on_clear(self) -> None:
        for seg in self._pending:
            seg.interrupted = True
        self.gen.clear_buffer()
        if self._receiving is not None:
            # its end may never come: the agent flushes and clears in one go, and QueueAudioOutput's
            # clear_buffer drops what is queued, the segment end included. Close it here; an end
            # that does come for it later is skipped.
            self._receiving = None
            self._closed_by_clear = True
            self.gen.stream.end_segment(AudioSegmentEnd())

    async def _notify_finished(self, position: float, interrupted: bool) -> None:
        self.finished.append((position, interrupted))
        await self._maybe_await(self.audio_recv.notify_playback_finished(playback_position=position,
                                                                          interrupted=interrupted))

    @staticmethod
    async def _maybe_await(result) -> None:
        if asyncio.iscoroutine(result):
            await result

    async def aclose(self) -> None:
        """Stop; every segment still pending gets its ``playback_finished`` (interrupted)."""
        for t in self._tasks:
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        while self._pending:
            seg = self._pending.popleft()
            try:
                await self._notify_finished(seg.played, True)
            except Exception as exc:            # the room is gone: nothing left to tell
                log.debug("playback_finished at close: %s", exc)
        await self.audio_recv.aclose()
        await self.av_sync.aclose()
        await self.audio_source.aclose()
        await self.video_source.aclose()
