"""A bot's avatar in 50 lines: AvatarTracks on one RTCPeerConnection, a viewer on another (127.0.0.1).

    python examples/bot_loopback.py            # ~5 s; prints what the viewer received
"""
import asyncio

import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection
from aiortc.mediastreams import MediaStreamError

from engine.session import AvatarEngine
from streaming.embed import AvatarTracks
from streaming.ice import loopback_candidates


async def tts(seconds=3.0, rate=24000):
    """Stand-in for a TTS stream: 20 ms chunks of a warbling tone, as fast as it is asked for."""
    t = np.arange(int(seconds * rate)) / rate
    pcm = (0.3 * np.sin(2 * np.pi * (180 + 40 * np.sin(2 * np.pi * 3 * t)) * t) * (t % 1.0 < 0.6)).astype(np.float32)
    for i in range(0, pcm.size, rate // 50):
        yield pcm[i:i + rate // 50], rate


async def main():
    tracks = AvatarTracks(AvatarEngine("demo"), tts())          # .video + .audio, in sync
    bot, viewer = (RTCPeerConnection(RTCConfiguration(iceServers=[])) for _ in range(2))
    bot.addTrack(tracks.video)
    bot.addTrack(tracks.audio)
    received = {"video": 0, "audio": 0}

    @viewer.on("track")
    def on_track(track):
        async def count():
            while True:
                try:
                    await track.recv()
                except MediaStreamError:      # the bot hung up
                    return
                received[track.kind] += 1
        asyncio.ensure_future(count())

    await bot.setLocalDescription(await bot.createOffer())
    await viewer.setRemoteDescription(bot.localDescription)
    await viewer.setLocalDescription(await viewer.createAnswer())
    await bot.setRemoteDescription(viewer.localDescription)
    await asyncio.sleep(4)
    print(f"viewer got {received['video']} video frames, {received['audio']} audio frames (20 ms)")
    print({k: v for k, v in tracks.stats().items() if k in ("frames", "fps", "dropped", "latency_ms")})
    await tracks.aclose()
    await bot.close()
    await viewer.close()


if __name__ == "__main__":
    with loopback_candidates():
        asyncio.run(main())
