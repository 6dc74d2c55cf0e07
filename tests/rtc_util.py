"""Test helpers for the WebRTC server: a real aiortc client on 127.0.0.1 and a paced PCM track.

Not a conftest: tests import what they use (``from rtc_util import ...``, as ``import formats``).
"""
from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Optional

import aiohttp
import numpy as np
from aiohttp import web
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

from benchmarks.soak import vanish
from streaming.tracks import PcmTrack  # noqa: F401  (re-exported for the tests)

RATE = 48000


@dataclass
class Received:
    """Decoded video frames and when they arrived (time.monotonic)."""
    frames: list = field(default_factory=list)        # av.VideoFrame
    times: list = field(default_factory=list)
    audio: list = field(default_factory=list)          # av.AudioFrame
    audio_times: list = field(default_factory=list)
    messages: list = field(default_factory=list)       # control channel JSON (decoded)


class Client:
    """An aiortc peer that sends ``audio`` (a MediaStreamTrack or None), receives video (and audio
    when the server sends it) and opens the "control" data channel."""

    def __init__(self, base_url: str, audio: Optional[MediaStreamTrack] = None, *,
                 keep_images: bool = True, max_frames: int = 10_000, video_codec: Optional[str] = None) -> None:
        self.base_url = base_url
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.audio = audio
        self.rx = Received()
        self.keep_images = keep_images
        self.max_frames = max_frames
        self.tasks: list[asyncio.Task] = []
        self.session_id: Optional[str] = None
        self.channel = None
        self.first_frame = asyncio.Event()
        self.video_codec = video_codec      # e.g. "video/H264": offer only that codec

    async def connect(self, identity: Optional[dict] = None, timeout: float = 20.0) -> None:
        pc = self.pc
        if self.audio is not None:
            pc.addTrack(self.audio)
        else:
            pc.addTransceiver("audio", direction="recvonly")
        video = pc.addTransceiver("video", direction="recvonly")
        if self.video_codec is not None:
            from aiortc import RTCRtpReceiver
            caps = RTCRtpReceiver.getCapabilities("video").codecs
            video.setCodecPreferences([c for c in caps if c.mimeType in (self.video_codec, "video/rtx")])
        self.channel = pc.createDataChannel("control")

        @self.channel.on("message")
        def on_message(message) -> None:
            import json
            self.rx.messages.append(json.loads(message))

        @pc.on("track")
        def on_track(track) -> None:
            self.tasks.append(asyncio.ensure_future(self._consume(track)))

        await pc.setLocalDescription(await pc.createOffer())
        body = {"sdp": pc.localDescription.sdp, "type": "offer"}
        if identity is not None:
            body["identity"] = identity
        async with aiohttp.ClientSession() as http:
            async with http.post(self.base_url + "/offer", json=body,
                                 timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
                data = await resp.json()
                if resp.status != 200:
                    raise OfferRejected(resp.status, data)
        self.session_id = data["session_id"]
        await pc.setRemoteDescription(RTCSessionDescription(sdp=data["sdp"], type=data["type"]))

    async def _consume(self, track) -> None:
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            now = time.monotonic()
            if track.kind == "video":
                if len(self.rx.frames) < self.max_frames:
                    self.rx.frames.append(frame if self.keep_images else frame.pts)
                    self.rx.times.append(now)
                self.first_frame.set()
            else:
                if len(self.rx.audio) < self.max_frames * 4:
                    self.rx.audio.append(frame)
                    self.rx.audio_times.append(now)

    async def wait_frames(self, n: int, timeout: float) -> None:
        t_end = time.monotonic() + timeout
        while len(self.rx.frames) < n:
            if time.monotonic() > t_end:
                raise AssertionError(f"received {len(self.rx.frames)} video frames, expected {n} "
                                     f"within {timeout} s")
            await asyncio.sleep(0.02)

    async def channel_open(self, timeout: float = 10.0) -> None:
        """Wait (at most ``timeout`` s) until the control data channel is open."""
        t_end = time.monotonic() + timeout
        while self.channel.readyState != "open" and time.monotonic() < t_end:
            await asyncio.sleep(0.02)

    async def close(self) -> None:
        for t in self.tasks:
            t.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.pc.close(), 5)

    def vanish(self) -> None:
        """Drop the client without a goodbye: close its UDP sockets (no DTLS close_notify, no RTCP
        BYE) and stop its tasks; the server only notices that packets stopped."""
        for t in self.tasks:
            t.cancel()
        vanish(self.pc)


class OfferRejected(Exception):
    def __init__(self, status: int, data: dict) -> None:
        super().__init__(f"HTTP {status}: {data}")
        self.status = status
        self.data = data


@contextlib.asynccontextmanager
async def running_server(config):
    """Serve ``create_app(config)`` on 127.0.0.1 on a free port; yields the base URL."""
    from streaming.server import create_app, http_options

    app = create_app(config)
    runner = web.AppRunner(app, handle_signals=False, **http_options(config))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}", app
    finally:
        await asyncio.wait_for(runner.cleanup(), 30)


async def get_json(url: str, timeout: float = 10.0):
    async with aiohttp.ClientSession() as http:
        async with http.get(url, timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
            return resp.status, await resp.json()


async def wait_sessions(base_url: str, n: int, timeout: float) -> int:
    """Poll /health until ``sessions == n``; returns the last count seen."""
    t_end = time.monotonic() + timeout
    count = -1
    while time.monotonic() < t_end:
        _, data = await get_json(base_url + "/health")
        count = data["sessions"]
        if count == n:
            return count
        await asyncio.sleep(0.1)
    return count


def tone(seconds: float, freq: float = 220.0, level: float = 0.5, rate: int = RATE) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (np.sin(2 * np.pi * freq * t) * level * 32767).astype(np.int16)
