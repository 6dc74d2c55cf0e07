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
``python -m streaming.livekit_worker``.
"""
from __future__ import annotations

from typing import AsyncIterator, Optional, Union

import numpy as np
from livekit import rtc
from livekit.agents.voice.avatar import AudioSegmentEnd, AvatarOptions, VideoGenerator

from engine.avatar import AvatarEngine
from engine.session import AvatarSession

from .turns import TurnStream

__all__ = ["StyleCastVideoGenerator"]


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
            audio = out.frame.audio
            if out.talking and audio is not None and audio.size and epoch == stream.epoch:
                yield rtc.AudioFrame(audio.tobytes(), self.sample_rate, 1, int(audio.size))

    async def aclose(self) -> None:
        self.session.close()
