"""Frame sinks: where a session's frames go.

A :class:`FrameSink` takes :class:`~engine.frames.Frame` objects in order (``write``) and is
closed once (``close``; also a context manager). Three kinds ship:

* :class:`CallbackSink` — hands each frame to a function (bots, tests, custom outputs);
* :class:`Mp4Sink` — H.264 (libx264, yuv420p) + AAC mono in an MP4 (``engine.render``);
* ``streaming.sinks.WebRTCSink`` — the newest frame to the aiortc video track, its audio to the
  audio track (the server; lives in ``streaming/`` with the rest of aiortc).

Images reach every sink as uint8 RGB through :func:`engine.frames.frame_rgb` (the one
quantisation), whatever the session's ``output``.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import replace
from fractions import Fraction
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from engine.frames import Frame, frame_rgb

__all__ = ["FrameSink", "CallbackSink", "Mp4Sink"]


class FrameSink(ABC):
    """Consumes frames in order; ``close`` finishes the output (idempotent)."""

    frames = 0

    @abstractmethod
    def write(self, frame: Frame) -> None:
        ...

    def close(self) -> None:
        pass

    def __enter__(self) -> "FrameSink":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class CallbackSink(FrameSink):
    """``fn(frame)`` for every frame (``rgb=True``: the frame's image as uint8 RGB first)."""

    def __init__(self, fn: Callable[[Frame], None], *, rgb: bool = False):
        self.fn, self.rgb, self.frames = fn, bool(rgb), 0

    def write(self, frame: Frame) -> None:
        if self.rgb and not isinstance(frame.image, np.ndarray):
            frame = replace(frame, image=frame_rgb(frame))
        self.fn(frame)
        self.frames += 1


class Mp4Sink(FrameSink):
    """H.264 (libx264, yuv420p, ``crf``) + AAC mono in an MP4, with PyAV (the ``serve`` extra).

    Video pts = frame index (time base 1/fps), audio pts = sample count at ``audio_rate`` (the
    frames' ``audio``; frames without audio add none). ``size`` must be even (yuv420p)."""

    def __init__(self, path: Path, *, size: int, fps: float, crf: int = 18, preset: str = "veryfast",
                 audio_rate: Optional[int] = 48000):
        import av

        if size % 2:
            raise ValueError(f"an MP4 (yuv420p) needs an even frame size, got {size}")
        self._av = av
        self.container = av.open(str(path), "w", format="mp4")
        rate = Fraction(fps).limit_denominator(1001)
        self.video = self.container.add_stream("libx264", rate=rate)
        self.video.width = self.video.height = int(size)
        self.video.pix_fmt = "yuv420p"
        self.video.codec_context.time_base = 1 / rate
        self.video.options = {"crf": str(crf), "preset": preset}
        self.audio_rate = audio_rate
        self.audio = None
        if audio_rate:
            self.audio = self.container.add_stream("aac", rate=int(audio_rate))
            self.audio.layout = "mono"
        self.frames = 0
        self.samples = 0
        self._closed = False

    def write(self, frame: Frame) -> None:
        video = self._av.VideoFrame.from_ndarray(np.ascontiguousarray(frame_rgb(frame)), format="rgb24")
        video.pts = frame.index
        self.container.mux(self.video.encode(video))
        self.frames += 1
        if self.audio is not None and frame.audio is not None and frame.audio.size:
            if frame.audio_rate is not None and frame.audio_rate != self.audio_rate:
                raise ValueError(f"frame audio at {frame.audio_rate} Hz, the MP4's track is {self.audio_rate} Hz")
            pcm = np.ascontiguousarray(frame.audio, dtype=np.int16)[None]
            audio = self._av.AudioFrame.from_ndarray(pcm, format="s16", layout="mono")
            audio.sample_rate = self.audio_rate
            audio.pts = self.samples
            self.samples += pcm.shape[1]
            self.container.mux(self.audio.encode(audio))

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.container.mux(self.video.encode(None))
        if self.audio is not None:
            self.container.mux(self.audio.encode(None))
        self.container.close()

    def abort(self) -> None:
        """Close the file without finishing the streams (the caller deletes it)."""
        if not self._closed:
            self._closed = True
            try:
                self.container.close()
            except Exception:  # already failing
                pass
