"""Two aiortc peers in one process on 127.0.0.1 (part of ``python -m benchmarks.loopback``):

* :func:`audio_hold` — the audio receive hold of aiortc's stock jitter buffer vs the no-wait one
  the server installs (``streaming.jitter.install_no_wait_audio``);
* :func:`bot_sync` — the audio/video offset of ``streaming.embed.AvatarTracks`` fed by a pulled
  source with tone clicks (media time and arrival at the viewer).
"""
from __future__ import annotations

import asyncio
import time
from typing import Any, Optional

import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.mediastreams import MediaStreamError

from engine.motion.base import MotionDriver
from engine.session import AvatarEngine
from streaming.embed import AvatarTracks, audio_frame_to_pcm
from streaming.jitter import install_marker_video, install_no_wait_audio
from streaming.stamps import read_stamp
from streaming.tracks import PcmTrack

__all__ = ["audio_hold", "bot_sync", "connect_pair", "drain", "pct", "moved", "tone", "MIN_MOVED", "BLOCK", "RATE"]

RATE = 48000


def tone(seconds: float, freq: float = 220.0, level: float = 0.4) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (np.sin(2 * np.pi * freq * t) * level * 32767).astype(np.int16)


#: side of the blocks a frame difference is averaged over: a mouth opening is a coherent blob,
#: codec noise is not
BLOCK = 8
#: the least block difference (grey levels) that counts as the mouth moving: VP8 noise at 128 px
#: reads ~9 against the uncompressed silent face, the demo's mouth opening on a tone burst 28-35
MIN_MOVED = 15.0


def moved(a: np.ndarray, b: np.ndarray, block: int = BLOCK) -> float:
    """The largest mean |difference| over ``block``×``block`` blocks of two RGB images: a mouth
    opening shows on a few hundred pixels, which a whole-image mean hides (~2 grey levels for an
    open mouth at 128 px, below the codec's noise)."""
    d = np.abs(a.astype(np.float32) - b.astype(np.float32)).mean(axis=-1)
    h, w = (d.shape[0] // block) * block, (d.shape[1] // block) * block
    return float(d[:h, :w].reshape(h // block, block, w // block, block).mean(axis=(1, 3)).max())


def pct(values, q) -> Optional[float]:
    return None if len(values) == 0 else float(np.percentile(np.asarray(values, np.float64), q))


def drain(track, sink) -> "asyncio.Task":
    """A task that receives ``track``'s frames until it ends, calling ``sink(frame)`` for each."""
    async def consume():
        while True:
            try:
                f = await track.recv()
            except MediaStreamError:
                return
            sink(f)
    return asyncio.ensure_future(consume())


# -- audio receive hold ---------------------------------------------------------------------------

async def audio_hold(seconds: float) -> dict[str, Any]:
    """p50/p95 ms from handing a 20 ms packet to the sender to the receiver's decoded frame,
    aiortc's stock audio jitter buffer vs ``NoWaitAudioJitterBuffer``."""
    out = {}
    for mode in ("stock", "no_wait"):
        sender = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        receiver = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        src = PcmTrack(tone(seconds))
        sender.addTrack(src)
        got: list[tuple[int, float]] = []
        tasks = []

        @receiver.on("track")
        def on_track(track, mode=mode, got=got, tasks=tasks):
            if mode == "no_wait":
                for tr in receiver.getTransceivers():
                    if tr.receiver.track is track:
                        install_no_wait_audio(tr.receiver)
            tasks.append(drain(track, lambda f: got.append((int(f.pts), time.monotonic()))))

        await sender.setLocalDescription(await sender.createOffer())
        await receiver.setRemoteDescription(sender.localDescription)
        await receiver.setLocalDescription(await receiver.createAnswer())
        await sender.setRemoteDescription(receiver.localDescription)
        t_end = time.monotonic() + seconds + 10
        while len(got) < int(seconds / 0.02) - 10 and time.monotonic() < t_end:
            await asyncio.sleep(0.05)
        # received pts count from the first packet the receiver saw; the sender starts at n = 0
        delays = []
        first_sent = len(src.sent_at) - 1
        if got:
            # align on the sender's index: the receiver's first packet is the sender's first one
            for pts, t in got[5:]:
                n = pts // 960
                if 0 <= n < len(src.sent_at):
                    delays.append((t - src.sent_at[n]) * 1e3)
        for t in tasks:
            t.cancel()
        await sender.close()
        await receiver.close()
        out[mode] = {"p50_ms": pct(delays, 50), "p95_ms": pct(delays, 95), "n": len(delays),
                     "sent": first_sent + 1}
    stock, nowait = out["stock"]["p50_ms"], out["no_wait"]["p50_ms"]
    out["hold_saved_ms"] = None if stock is None or nowait is None else stock - nowait
    return out


async def connect_pair(tracks) -> tuple:
    """A bot pc sending ``tracks``' video + audio to a viewer pc on 127.0.0.1 (the viewer's audio
    jitter buffer bypassed, its video frames released on their marker packet, as a browser does);
    returns (bot, viewer, got, tasks), ``got[kind]`` = [(arrival, frame)]."""
    bot = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    viewer = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    bot.addTrack(tracks.video)
    bot.addTrack(tracks.audio)
    got: dict[str, list] = {"video": [], "audio": []}
    tasks: list = []

    @viewer.on("track")
    def on_track(track):
        for tr in viewer.getTransceivers():
            if tr.receiver.track is track:
                (install_no_wait_audio if track.kind == "audio" else install_marker_video)(tr.receiver)
        tasks.append(drain(track, lambda f, kind=track.kind: got[kind].append((time.monotonic(), f))))

    await bot.setLocalDescription(await bot.createOffer())
    await viewer.setRemoteDescription(bot.localDescription)
    await viewer.setLocalDescription(await viewer.createAnswer())
    await bot.setRemoteDescription(viewer.localDescription)
    return bot, viewer, got, tasks


# -- bot: audio/video offset of AvatarTracks ---------------------------------------------------------

async def bot_sync(args, clicks: int = 5, period: float = 1.2) -> dict[str, Any]:
    """AvatarTracks fed by a pulled source with tone clicks; a viewer pc receives both tracks.
    For each click: media-time offset (start of the first received open-mouth frame minus the
    click's onset in the received audio) and arrival offset (wall clock at the viewer, whose audio
    jitter buffer is bypassed and whose video frames leave on their marker packet)."""
    class ClickDriver(MotionDriver):
        def __init__(self, names, fps):
            self.names, self.fps = list(names), fps

        def reset(self, anchor=None):
            pass

        def step(self, features):
            x = np.zeros(len(self.names), np.float32)
            x[0] = 3.0 if features is not None and features.rms > 0.02 else 0.0
            return x

        def flush(self):
            pass

    engine = AvatarEngine(args.generator, device=args.device, resolution=args.resolution)
    total = clicks * period + 1.0
    pcm = np.zeros(int(total * RATE), np.int16)
    onsets = [0.5 + j * period + 0.013 * j for j in range(clicks)]     # different phases in a frame
    for t in onsets:
        b = tone(0.25, freq=300.0, level=0.5)
        pcm[int(t * RATE):int(t * RATE) + b.size] = b

    async def source():
        for i in range(0, pcm.size, 960):
            yield pcm[i:i + 960], RATE

    tracks = AvatarTracks(engine, source(), fps=args.fps, driver=ClickDriver(engine.directions.names, args.fps),
                          stamp=True)
    bot, viewer, got, tasks = await connect_pair(tracks)
    t_end = time.monotonic() + total + 20
    while (len(got["audio"]) * 0.02 < total or len(got["video"]) < total * args.fps * 0.5) \
            and time.monotonic() < t_end:
        await asyncio.sleep(0.05)
    for t in tasks:
        t.cancel()
    await tracks.aclose()
    await bot.close()
    await viewer.close()

    # audio: onsets (media time, arrival) of loud runs in the received stream
    audio_on = []
    prev_loud = False
    for arrival, f in got["audio"]:
        x, rate, ch = audio_frame_to_pcm(f)
        mono = np.abs(x.reshape(-1, ch)[:, 0].astype(np.float32))
        loud = np.flatnonzero(mono > 0.1 * 32768)
        if loud.size and not prev_loud:
            audio_on.append((float(f.pts * f.time_base) + loud[0] / rate, arrival))
        prev_loud = bool(mono[-200:].max() > 0.05 * 32768)
    # video: mouth open/closed per received frame, against the first (closed) frame
    ref = None
    video_on = []
    was_open = False
    for arrival, f in got["video"]:
        img = f.to_ndarray(format="rgb24")
        body = img[:-8]
        if ref is None:
            ref = body
        is_open = moved(body, ref) > MIN_MOVED
        if is_open and not was_open:
            video_on.append((read_stamp(img) / args.fps, arrival))
        was_open = is_open
    media, arrival_off, frame_lag, residual = [], [], [], []
    for (ta, aa), (tv, av_), t_sent in zip(audio_on, video_on, onsets):
        media.append(float(tv - ta) * 1e3)
        arrival_off.append((av_ - aa) * 1e3)
        # which frame opened the mouth, counted from the frame whose interval holds the click
        frame_lag.append(int(round(tv * args.fps)) - int(np.floor(t_sent * args.fps)))
        residual.append(float(ta - t_sent) * 1e3)      # where the click landed in the received audio
    return {"clicks": clicks, "audio_onsets": len(audio_on), "video_onsets": len(video_on),
            "mouth_frame_lag": frame_lag, "audio_onset_shift_ms": [round(r, 1) for r in residual],
            "media_offset_ms": [round(m, 1) for m in media],
            "arrival_offset_ms": [round(a, 1) for a in arrival_off],
            "frame_interval_ms": 1000 / args.fps, "bot_stats": {k: v for k, v in tracks.stats().items()
                                                                if k in ("frames", "dropped", "fps")}}
