"""Embedding API: an avatar as two aiortc tracks for any RTCPeerConnection (bots, agents, relays).

::

    from engine.session import AvatarEngine
    from streaming.embed import AvatarTracks

    engine = AvatarEngine("demo")
    tracks = AvatarTracks(engine, tts_chunks())      # async iterator of (pcm, rate) / av.AudioFrame
    pc.addTrack(tracks.video)                        # VP8/H.264, whatever the peer negotiates
    pc.addTrack(tracks.audio)                        # the driving audio, aligned with the video
    ...
    await tracks.aclose()

``source`` is an async iterator (or iterable) of ``(pcm ndarray, sample_rate)`` /
``(pcm, sample_rate, channels)`` tuples or ``av.AudioFrame``s, or an aiortc ``MediaStreamTrack``
of kind audio (e.g. a remote participant's track). Iterator sources are *pulled* no faster than
real time (plus the motion lookahead), so a TTS engine that yields faster than real time is
paced here, not buffered without bound; a track is consumed live. When the source pauses or
ends the face keeps idling on silence. ``.audio`` sends ``Frame.audio`` (the audio that drove
each video frame) so audio and video leave together: audio sample ``round(k·rate/fps)`` and
video frame k carry the same media time and the same wall-clock deadline.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, AsyncIterator, Iterable, Optional, Union

import av
import numpy as np
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from engine.session import AvatarEngine, AvatarSession

from .sessions import StreamSession
from .tracks import AvatarAudioTrack, AvatarVideoTrack

__all__ = ["AvatarTracks", "audio_frame_to_pcm"]

log = logging.getLogger("stylecast.embed")


def audio_frame_to_pcm(frame: av.AudioFrame) -> tuple[np.ndarray, int, int]:
    """``(interleaved int16/float32 samples, sample_rate, channels)`` of a PyAV audio frame."""
    channels = len(frame.layout.channels)
    fmt = frame.format.name
    a = frame.to_ndarray()
    if frame.format.is_planar:            # [channels, n] -> interleaved
        a = a.T
    a = np.ascontiguousarray(a).reshape(-1)
    if fmt.startswith("s16"):
        pcm = a.astype(np.int16, copy=False)
    elif fmt.startswith("flt") or fmt.startswith("dbl"):
        pcm = a.astype(np.float32, copy=False)
    elif fmt.startswith("s32"):
        pcm = (a.astype(np.float64) / 2**31).astype(np.float32)
    else:
        raise ValueError(f"unsupported audio frame format {fmt!r}")
    return pcm, int(frame.sample_rate), channels


def _to_pcm(item: Any) -> tuple[np.ndarray, int, int]:
    if isinstance(item, av.AudioFrame):
        return audio_frame_to_pcm(item)
    if isinstance(item, tuple) and len(item) in (2, 3):
        pcm, rate = np.asarray(item[0]), item[1]
        channels = int(item[2]) if len(item) == 3 else (pcm.shape[1] if pcm.ndim == 2 else 1)
        if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)):
            raise ValueError(f"sample rate must be an int, got {rate!r}")
        return pcm.reshape(-1), int(rate), channels
    raise ValueError(f"expected (pcm, rate), (pcm, rate, channels) or av.AudioFrame, got {type(item).__name__}")


class AvatarTracks:
    """``.video`` and ``.audio`` aiortc tracks of one avatar driven by ``source``.

    Args:
        engine_or_session: an ``AvatarEngine`` (a session is made with ``fps``, ``identity``,
            ``driver``, ``audio_out=True``) or an ``AvatarSession`` (give it ``audio_out=True`` to
            use ``.audio``; AvatarTracks owns and closes it).
        source: see the module docstring.
        realtime: override the pacing mode (default: True for a track, False for an iterator).
        stamp: write the frame index into each image (tests).
    The worker starts with the first ``recv()`` of either track; :meth:`aclose` (or
    :meth:`stop`) ends the feed, the worker and both tracks.
    """

    def __init__(self, engine_or_session: Any, source: Union[MediaStreamTrack, AsyncIterator, Iterable],
                 *, fps: float = 25.0, identity: Any = 0, driver: Any = "idle", audio_out_rate: int = 48000,
                 realtime: Optional[bool] = None, grace_s: float = 0.06, stamp: bool = False) -> None:
        if isinstance(engine_or_session, AvatarSession):
            session = engine_or_session
        elif isinstance(engine_or_session, AvatarEngine):
            session = AvatarSession(engine_or_session, fps=fps, identity=identity, driver=driver,
                                    audio_out=True, audio_out_rate=audio_out_rate)
        else:
            raise TypeError(f"expected an AvatarEngine or AvatarSession, got {type(engine_or_session).__name__}")
        is_track = isinstance(source, MediaStreamTrack)
        if is_track and source.kind != "audio":
            raise ValueError(f"source track must be of kind 'audio', got {source.kind!r}")
        if not is_track and not (hasattr(source, "__aiter__") or hasattr(source, "__iter__")):
            raise TypeError("source must be an audio MediaStreamTrack or an (async) iterator of audio chunks")
        self.session = session
        self.source = source
        self.realtime = is_track if realtime is None else bool(realtime)
        self.stream = StreamSession(session, realtime=self.realtime, grace_s=grace_s, stamp=stamp,
                                    audio_out=bool(getattr(session, "audio_out", False)),
                                    audio_out_rate=int(getattr(session, "audio_out_rate", audio_out_rate)))
        self.stream.on_start.append(self._start_feed)
        self.video = AvatarVideoTrack(self.stream)
        # a pulled source's speech is never replaced by silence when the worker stalls: it goes late
        self._audio = (AvatarAudioTrack(self.stream, max_wait_s=0.25 if self.realtime else None)
                       if self.stream.audio_out is not None else None)
        self._feed: Optional[asyncio.Task] = None
        self.source_done = asyncio.Event() if _has_loop() else None
        self.chunks_in = 0
        self.bad_chunks = 0

    @property
    def audio(self) -> AvatarAudioTrack:
        if self._audio is None:
            raise AttributeError("this AvatarSession was made without audio_out=True: no audio track")
        return self._audio

    @property
    def lead_s(self) -> float:
        """How far ahead of the wall clock a pulled source is fed: resampler lag + lookahead + 1 frame."""
        return float(self.session.latency_ms) / 1000.0 + 1.0 / self.stream.fps + 0.02

    def _start_feed(self) -> None:
        if self._feed is None:
            if self.source_done is None:
                self.source_done = asyncio.Event()
            self._feed = asyncio.ensure_future(self._run_feed())

    async def _run_feed(self) -> None:
        self.stream.source_waiting(False)
        if not self.realtime:
            self.stream.fill_ahead_s = self.lead_s
        try:
            if isinstance(self.source, MediaStreamTrack):
                await self._feed_track(self.source)
            else:
                await self._feed_iter(self.source)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("audio source failed; the avatar idles on silence")
        finally:
            self.stream.source_waiting(True)
            if self.source_done is not None:
                self.source_done.set()

    async def _feed_track(self, track: MediaStreamTrack) -> None:
        while True:
            self.stream.source_waiting(True)
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            self.stream.source_waiting(False)
            self._push(frame, arrival=time.monotonic())

    async def _feed_iter(self, source) -> None:
        end = object()
        if hasattr(source, "__aiter__"):
            it = source.__aiter__()

            async def next_item():
                try:
                    return await it.__anext__()
                except StopAsyncIteration:
                    return end
        else:
            sync_it = iter(source)

            async def next_item():
                return next(sync_it, end)
        while not self.stream.stopped:
            lead = self.lead_s
            self.stream.fill_ahead_s = lead
            ahead = self.stream.ahead_seconds() - lead
            if ahead > 0:
                await asyncio.sleep(min(ahead, 0.05))
                continue
            self.stream.source_waiting(True)
            item = await next_item()
            if item is end:
                return
            self.stream.source_waiting(False)
            self._push(item, arrival=time.monotonic() if self.realtime else None)

    def _push(self, item: Any, arrival: Optional[float]) -> None:
        try:
            pcm, rate, channels = _to_pcm(item)
        except ValueError as exc:
            self.bad_chunks += 1
            log.warning("dropped a source chunk: %s", exc)
            return
        self.chunks_in += 1
        self.stream.push_audio(pcm, rate, channels, arrival=arrival)

    def stats(self) -> dict:
        """:meth:`StreamSession.stats` plus ``audio_silenced_chunks`` (20 ms chunks sent as silence
        because their frame was more than 250 ms late; live sources only)."""
        out = self.stream.stats()
        out["audio_silenced_chunks"] = self._audio.silenced_chunks if self._audio is not None else 0
        return out

    async def interrupt(self) -> None:
        """Barge-in: audio not yet shown is dropped (``StreamSession.interrupt``) and the next frame
        is made at once with the mouth at rest; the source keeps being read."""
        await asyncio.wrap_future(self.stream.interrupt())

    async def set_identity(self, identity: Any, *, truncation_psi: Optional[float] = None) -> None:
        """Change the face between two frames (``AvatarSession.set_identity``); ValueError on bad input."""
        await asyncio.wrap_future(self.stream.submit(
            lambda s: s.set_identity(identity, truncation_psi=truncation_psi)))

    async def aclose(self) -> None:
        """Stop feeding, stop the worker, end both tracks (idempotent)."""
        if self._feed is not None:
            self._feed.cancel()
            await asyncio.gather(self._feed, return_exceptions=True)
        self.video.stop()
        if self._audio is not None:
            self._audio.stop()
        await self.stream.aclose()

    def stop(self) -> None:
        """Synchronous :meth:`aclose` for teardown code without a running loop."""
        if self._feed is not None:
            self._feed.cancel()
        self.video.stop()
        if self._audio is not None:
            self._audio.stop()
        self.stream.stop()


def _has_loop() -> bool:
    try:
        asyncio.get_running_loop()
        return True
    except RuntimeError:
        return False
