"""The transport floor for ``benchmarks.latency``: a zero-cost server built from stock aiortc.

It answers the same ``POST /offer`` as ``streaming.server`` and receives the microphone through
aiortc's *stock* receiver (its audio jitter buffer holds four packets, 80 ms). Its video track
makes each frame when it is due (``t0 + k/fps``, the same absolute deadlines and 90 kHz
timestamps as ``streaming.tracks.AvatarVideoTrack``): a dark grey image whose centre square (a
"mouth", a quarter of the width) turns bright while the newest decoded audio frame is loud, with
the frame index stamped into it. Nothing is synthesised, so an
audio→pixels time measured against it is what Opus, the network, the two jitter buffers, VP8 and
pacing cost by themselves.

Run by ``benchmarks.latency`` as ``python -m benchmarks.latency --serve floor --port N``.
"""
from __future__ import annotations

import asyncio
import time
from fractions import Fraction

import av
import numpy as np

__all__ = ["DARK", "BRIGHT", "LOUD_RMS", "floor_frame", "run_floor_server"]

DARK, BRIGHT = 64, 200
#: RMS (full scale 1.0) above which a decoded 20 ms audio frame counts as loud: the benchmark's
#: tone bursts read ~0.28, Opus noise on silence < 0.001
LOUD_RMS = 0.05


def floor_frame(resolution: int, loud: bool = False) -> np.ndarray:
    """The floor's frame: dark grey with a fixed ±12 texture (VP8's denoiser leaves flat blocks,
    the stamp's among them, stale on some frames), its centre square bright when ``loud``."""
    img = np.full((resolution, resolution, 3), DARK, np.int16)
    img += np.random.default_rng(0).integers(-12, 13, (resolution, resolution, 1), dtype=np.int16)
    if loud:
        lo, hi = 3 * resolution // 8, 5 * resolution // 8
        img[lo:hi, lo:hi] += BRIGHT - DARK
    return np.clip(img, 0, 255).astype(np.uint8)


def _rms(frame: av.AudioFrame) -> float:
    pcm = frame.to_ndarray().astype(np.float32).reshape(-1)
    return float(np.sqrt(np.mean(np.square(pcm / 32768.0)))) if pcm.size else 0.0


def _make_track(fps: float, resolution: int, state: dict):
    from aiortc.mediastreams import MediaStreamError, MediaStreamTrack

    from streaming.stamps import stamp_index

    class FloorVideoTrack(MediaStreamTrack):
        """Frame k at ``t0 + k/fps``: dark, its centre bright while ``state["loud"]``; index stamped."""

        kind = "video"

        def __init__(self) -> None:
            super().__init__()
            self._k = 0
            self._t0 = None
            self._img = {v: floor_frame(resolution, v == BRIGHT) for v in (DARK, BRIGHT)}

        async def recv(self) -> av.VideoFrame:
            if self.readyState != "live":
                raise MediaStreamError
            if self._t0 is None:
                self._t0 = time.monotonic()
            delay = self._t0 + self._k / fps - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            img = stamp_index(self._img[BRIGHT if state["loud"] else DARK], self._k)
            frame = av.VideoFrame.from_ndarray(img, format="rgb24")
            frame.pts = int(round(self._k * 90000 / fps))
            frame.time_base = Fraction(1, 90000)
            self._k += 1
            return frame

    return FloorVideoTrack()


def run_floor_server(port: int, fps: float, resolution: int = 128) -> None:
    """Serve ``/offer``, ``/health`` and a blank same-origin page (for a browser client) on
    127.0.0.1:``port`` until killed."""
    from aiohttp import web
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
    from aiortc.mediastreams import MediaStreamError

    from streaming.ice import loopback_candidates

    pcs: set = set()

    async def offer(request: web.Request) -> web.Response:
        body = await request.json()
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pcs.add(pc)
        state = {"loud": False, "packets": 0}

        @pc.on("track")
        def on_track(track):
            if track.kind != "audio":
                return

            async def listen():
                while True:
                    try:
                        f = await track.recv()
                    except MediaStreamError:
                        return
                    state["packets"] += 1
                    state["loud"] = _rms(f) > LOUD_RMS
            asyncio.ensure_future(listen())

        @pc.on("datachannel")
        def on_channel(channel):
            @channel.on("message")
            def echo(message):          # the floor has no avatar: every command is answered as done
                channel.send(message if isinstance(message, str) else "{}")

        @pc.on("connectionstatechange")
        async def on_state():
            if pc.connectionState in ("failed", "closed"):
                pcs.discard(pc)
                await pc.close()

        await pc.setRemoteDescription(RTCSessionDescription(sdp=body["sdp"], type=body["type"]))
        pc.addTrack(_make_track(fps, resolution, state))
        await pc.setLocalDescription(await pc.createAnswer())
        return web.json_response({"sdp": pc.localDescription.sdp, "type": pc.localDescription.type})

    async def health(_request):
        return web.json_response({"ok": True, "server": "floor", "fps": fps, "resolution": resolution,
                                  "device": "none", "sessions": len(pcs)})

    async def page(_request):
        return web.Response(text="<!doctype html><title>floor</title><video id=v muted playsinline></video>",
                            content_type="text/html")

    async def close_all(_app):
        await asyncio.gather(*(pc.close() for pc in list(pcs)), return_exceptions=True)

    app = web.Application()
    app.add_routes([web.post("/offer", offer), web.get("/health", health), web.get("/", page)])
    app.on_shutdown.append(close_all)
    with loopback_candidates():
        web.run_app(app, host="127.0.0.1", port=port, print=lambda *_: None)
