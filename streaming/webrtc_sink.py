"""The WebRTC frame sink: each frame as an ``av.VideoFrame`` into the latest-wins slot of the
video track, its audio into the audio track's buffer at the frame's own sample position."""
from __future__ import annotations

from typing import Optional

import av
import numpy as np

from engine.frames import Frame, frame_rgb
from engine.sinks import FrameSink

from .clock import VIDEO_CLOCK_RATE, VIDEO_TIME_BASE
from .slots import AudioOutBuffer, LatestSlot
from .stamps import stamp_index

__all__ = ["WebRTCSink"]


class WebRTCSink(FrameSink):
    """Frames → ``video_slot`` as ``(index, av.VideoFrame)`` (yuv420p, pts in 1/90000 s from the
    index) and ``Frame.audio`` → ``audio_out`` (ending at sample ``round((k+1)·rate/fps)``).
    ``stamp``: the frame index written into the image's bottom edge (tests, benchmarks)."""

    def __init__(self, fps: float, video_slot: LatestSlot, audio_out: Optional[AudioOutBuffer] = None, *,
                 stamp: bool = False):
        self.fps = float(fps)
        self.video_slot = video_slot
        self.audio_out = audio_out
        self.stamp = bool(stamp)
        self.frames = 0

    def write(self, frame: Frame) -> None:
        img = frame_rgb(frame)
        if self.stamp:
            img = stamp_index(img, frame.index)
        video = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24").reformat(format="yuv420p")
        video.pts = int(round(frame.index * VIDEO_CLOCK_RATE / self.fps))
        video.time_base = VIDEO_TIME_BASE
        if self.audio_out is not None and getattr(frame, "audio", None) is not None:
            rate = self.audio_out.rate
            pcm = np.asarray(frame.audio, dtype=np.int16).reshape(-1)
            end = int(round((frame.index + 1) * rate / self.fps))
            self.audio_out.write(end - pcm.size, pcm)
        self.frames += 1
        self.video_slot.put((frame.index, video))

    def close(self) -> None:
        self.video_slot.close()
