"""The local Pipecat voice bot (``examples/pipecat_bot.py``) over real WebRTC on 127.0.0.1: an
aiortc client speaks (espeak-ng) into pipecat's SmallWebRTCTransport; the bot greets, hears the
turn by Silero VAD, answers through espeak-ng and the avatar, and the client decodes the avatar's
video and the bot's voice. A bad offer gets a 400, a full house a 503."""
from __future__ import annotations

import asyncio
import importlib.util
import shutil
import time

import numpy as np
import pytest

pytest.importorskip("pipecat", reason="the pipecat extra is not installed (pip install 'stylecast[pipecat]')")
pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed (the bot speaks with it)")

import aiohttp  # noqa: E402
from aiohttp import web  # noqa: E402
from repo_paths import REPO  # noqa: E402
from rtc_util import Client, OfferRejected, PcmTrack  # noqa: E402

RATE = 48000


def load_bot():
    spec = importlib.util.spec_from_file_location("pipecat_bot", REPO / "examples" / "pipecat_bot.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture(scope="module")
def engine():
    import torch

    from engine.session import AvatarEngine
    torch.set_num_threads(1)
    return AvatarEngine("demo")


def speech_48k(text: str) -> np.ndarray:
    import soxr

    from engine.demo_world.speech import synthesize
    utt = synthesize(text, voice="en-us", rate_wpm=160)
    return np.clip(soxr.resample(utt.samples.astype(np.float64), utt.sample_rate, RATE), -32768, 32767).astype(np.int16)


async def serve(server):
    runner = web.AppRunner(server.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    return runner, f"http://127.0.0.1:{port}"


def rms_track(rx, t0: float) -> tuple[np.ndarray, np.ndarray]:
    """(arrival second after t0, RMS) per received audio frame (the bot's voice, decoded Opus)."""
    times, levels = [], []
    for frame, t in zip(rx.audio, rx.audio_times):
        a = frame.to_ndarray().astype(np.float64).reshape(-1)
        times.append(t - t0)
        levels.append(np.sqrt(np.mean(a ** 2)) if a.size else 0.0)
    return np.array(times), np.array(levels)


async def test_the_bot_greets_hears_a_turn_and_answers_with_face_and_voice(engine):
    bot = load_bot()
    said = speech_48k("Hello bot, this is a test of the turn taking.")
    quiet = np.zeros(int(5.0 * RATE), np.int16)                  # the greeting plays meanwhile
    mic = np.concatenate([quiet, said, np.zeros(RATE * 8, np.int16)])
    server = bot.BotServer(engine, fps=25, max_bots=1)
    runner, url = await serve(server)
    client = Client(url, PcmTrack(mic))
    try:
        t0 = time.monotonic()
        await client.connect()
        b = next(iter(server.bots.values()))
        t_end = t0 + 40
        while not b["brain"].turns and time.monotonic() < t_end:
            await asyncio.sleep(0.1)
        assert len(b["brain"].turns) == 1, "the bot did not hear the turn"
        t_turn = time.monotonic() - t0
        await asyncio.sleep(3.0)                                 # the answer: "You spoke for about ..."
        with pytest.raises(OfferRejected) as full:               # one bot at a time here
            await Client(url, PcmTrack(quiet)).connect()
        assert full.value.status == 503 and "busy" in full.value.data["error"]
    finally:
        await client.close()
        await runner.cleanup()
    spoken = len(said) / RATE
    assert abs(b["brain"].turns[0] - spoken) < 0.8, (b["brain"].turns, spoken)
    frames = client.rx.frames
    assert len(frames) > 100 and {(f.width, f.height) for f in frames} == {(128, 128)}
    images = [f.to_ndarray(format="rgb24") for f in frames[::5]]
    assert max(np.abs(a.astype(int) - images[0]).mean() for a in images) > 1.0   # the face moves
    times, level = rms_track(client.rx, t0)
    assert level.size > 100
    noise = np.percentile(level, 10)
    greeting = level[times < 5.0]
    answer = level[(times > t_turn - 0.5) & (times < t_turn + 3.0)]
    assert greeting.max() > 20 * max(noise, 1.0) and answer.max() > 20 * max(noise, 1.0), (noise, greeting.max(),
                                                                                          answer.max())


async def test_bad_offers_are_refused_with_a_reason(engine):
    bot = load_bot()
    runner, url = await serve(bot.BotServer(engine))
    try:
        async with aiohttp.ClientSession() as http:
            for body in ('{"sdp": 1}', "[", '{"sdp": "v=0", "type": "answer"}', '{"sdp": "nonsense", "type": "offer"}'):
                async with http.post(url + "/offer", data=body, headers={"Content-Type": "application/json"}) as r:
                    assert r.status == 400, (body, r.status)
                    assert "bad offer" in (await r.json())["error"]
            async with http.get(url + "/") as r:
                assert r.status == 200 and "RTCPeerConnection" in await r.text()
    finally:
        await runner.cleanup()
