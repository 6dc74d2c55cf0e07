"""The LiveKit Agents video generator (``streaming.integrations.livekit``) against the real
``livekit`` / ``livekit-agents`` classes: alone (video frame, then the audio that drove it; idle
frames; AudioSegmentEnd after the segment; clear_buffer), and inside the real ``AvatarRunner`` fed
by the real ``QueueAudioOutput`` (the in-process mode) on an in-process stand-in for the room,
where ``playback_finished`` must come with the true position, also after an interruption. No
LiveKit server can run here: publishing to a real room is not exercised."""
from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

pytest.importorskip("livekit.agents", reason="the livekit extra is not installed (pip install 'stylecast[livekit]')")

from livekit import rtc  # noqa: E402
from livekit.agents.voice.avatar import AudioSegmentEnd, AvatarRunner, QueueAudioOutput  # noqa: E402

from streaming.integrations.livekit import StyleCastVideoGenerator  # noqa: E402

RATE = 24000


@pytest.fixture(scope="module")
def engine():
    import torch

    from engine.session import AvatarEngine
    torch.set_num_threads(1)
    return AvatarEngine("demo")


def audio_frames(pcm: np.ndarray, rate: int = RATE, ms: int = 20) -> list:
    n = rate * ms // 1000
    return [rtc.AudioFrame(pcm[i:i + n].tobytes(), rate, 1, len(pcm[i:i + n])) for i in range(0, len(pcm), n)]


async def collect(gen, seconds: float, during=None) -> list[tuple[float, object]]:
    out, t0 = [], time.perf_counter()

    async def pull():
        async for item in gen:
            out.append((time.perf_counter() - t0, item))

    task = asyncio.ensure_future(pull())
    try:
        if during is not None:
            await during()
        await asyncio.sleep(max(0.0, seconds - (time.perf_counter() - t0)))
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    return out


async def test_each_video_frame_is_followed_by_its_audio_and_the_segment_end_after(engine):
    rng = np.random.default_rng(5)
    pcm = (rng.standard_normal(int(1.0 * RATE)) * 3000).astype(np.int16)
    gen = StyleCastVideoGenerator(engine, fps=25, sample_rate=RATE)
    opts = gen.options()
    assert (opts.video_width, opts.video_height, opts.video_fps, opts.audio_sample_rate) == (128, 128, 25.0, RATE)

    async def speak():
        await asyncio.sleep(0.5)                              # idle first
        for f in audio_frames(pcm):
            await gen.push_audio(f)
        await gen.push_audio(AudioSegmentEnd())

    items = [x for _, x in await collect(gen, 2.6, speak)]
    audio_at = [i for i, x in enumerate(items) if isinstance(x, rtc.AudioFrame)]
    ends = [i for i, x in enumerate(items) if isinstance(x, AudioSegmentEnd)]
    assert 25 <= len(audio_at) <= 27 and len(ends) == 1 and ends[0] > audio_at[-1]
    for i in audio_at:
        assert isinstance(items[i - 1], rtc.VideoFrame) and items[i].samples_per_channel == RATE // 25
    out = np.concatenate([np.frombuffer(items[i].data, np.int16) for i in audio_at])
    lead = int(np.flatnonzero(out)[0])                        # the idle frames' lookahead of silence
    assert lead <= 0.04 * RATE
    np.testing.assert_array_equal(out[lead:lead + len(pcm)], pcm)
    videos = [x for x in items if isinstance(x, rtc.VideoFrame)]
    assert {(v.width, v.height, v.type) for v in videos} == {(128, 128, rtc.VideoBufferType.RGBA)}
    assert sum(1 for x in items[:audio_at[0]] if isinstance(x, rtc.VideoFrame)) >= 8
    assert sum(1 for x in items[ends[0]:] if isinstance(x, rtc.VideoFrame)) >= 15
    await gen.aclose()


async def test_clear_buffer_stops_the_audio_and_the_segment_end_still_comes(engine):
    pcm = (np.sin(2 * np.pi * 200 * np.arange(3 * RATE) / RATE) * 6000).astype(np.int16)
    gen = StyleCastVideoGenerator(engine, fps=25, sample_rate=RATE)
    cut_at = {}

    async def speak_then_cut():
        for f in audio_frames(pcm):
            await gen.push_audio(f)
        await gen.push_audio(AudioSegmentEnd())
        await asyncio.sleep(1.0)
        cut_at["t"] = time.perf_counter()
        gen.clear_buffer()

    t0 = time.perf_counter()
    seen = await collect(gen, 2.2, speak_then_cut)
    cut = cut_at["t"] - t0
    after = [x for t, x in seen if t > cut]
    assert not any(isinstance(x, rtc.AudioFrame) for x in after)
    assert any(isinstance(x, AudioSegmentEnd) for x in after)
    sent = sum(x.samples_per_channel for _, x in seen if isinstance(x, rtc.AudioFrame)) / RATE
    assert 0.6 < sent < 1.5, sent
    await gen.aclose()


async def wait_until(cond, seconds: float) -> None:
    t_end = time.perf_counter() + seconds
    while not cond() and time.perf_counter() < t_end:
        await asyncio.sleep(0.02)


async def test_in_process_runner_reports_playback_finished_with_the_true_position(engine):
    """The agent writes two segments into QueueAudioOutput; the runner plays them through the
    generator: the first finishes at its full length, the second is interrupted 0.8 s in and
    finishes with interrupted=True at about that position. Both tracks are published."""
    from streaming.integrations.livekit_local import FakeNet
    gen = StyleCastVideoGenerator(engine, fps=25, sample_rate=RATE)
    room = FakeNet().join("agent", rtc.ParticipantKind.PARTICIPANT_KIND_AGENT)
    queue = QueueAudioOutput(sample_rate=RATE)
    finished: list = []
    queue.on("playback_finished", lambda ev: finished.append((time.perf_counter(), ev)))
    runner = AvatarRunner(room, audio_recv=queue, video_gen=gen, options=gen.options())
    pushed: list = []
    real_push = runner.av_sync.push

    async def noted(frame, *a, **kw):
        pushed.append(frame)
        return await real_push(frame, *a, **kw)

    runner.av_sync.push = noted
    await runner.start()
    try:
        first = (np.sin(2 * np.pi * 180 * np.arange(int(1.2 * RATE)) / RATE) * 5000).astype(np.int16)
        for f in audio_frames(first):
            await queue.capture_frame(f)
        queue.flush()
        await wait_until(lambda: finished, 6)
        assert len(finished) == 1 and not finished[0][1].interrupted
        assert finished[0][1].playback_position == pytest.approx(1.2, abs=0.1)
        second = np.tile(first, 3)
        for f in audio_frames(second):
            await queue.capture_frame(f)
        queue.flush()
        await asyncio.sleep(0.8)
        queue.clear_buffer()
        await wait_until(lambda: len(finished) >= 2, 4)
        assert len(finished) == 2 and finished[1][1].interrupted
        assert 0.4 < finished[1][1].playback_position < 1.4, finished[1][1]
        await asyncio.sleep(0.5)
    finally:
        await runner.aclose()
        await gen.aclose()
    kinds = {type(t).__name__ for t in room.local_participant.published}
    assert kinds == {"LocalAudioTrack", "LocalVideoTrack"}
    assert sum(isinstance(f, rtc.VideoFrame) for f in pushed) > 50
    assert sum(isinstance(f, rtc.AudioFrame) for f in pushed) >= 30


async def test_in_process_stylecast_runner_finishes_a_segment_the_agent_flushed_and_cleared_at_once(engine):
    """An interrupted agent calls ``flush()`` and then ``clear_buffer()`` on its QueueAudioOutput in
    one go (livekit-agents' generation.py), and the clear drops the queued segment end: the runner
    still sends one playback_finished (interrupted, near the played position), and the next
    segment gets its own at its full length, no more."""
    from streaming.integrations.livekit import StyleCastAvatarRunner
    from streaming.integrations.livekit_local import FakeNet
    gen = StyleCastVideoGenerator(engine, fps=25, sample_rate=RATE)
    queue = QueueAudioOutput(sample_rate=RATE)
    finished: list = []
    queue.on("playback_finished", lambda ev: finished.append(ev))
    runner = StyleCastAvatarRunner(FakeNet().join("agent", rtc.ParticipantKind.PARTICIPANT_KIND_AGENT),
                                   audio_recv=queue, video_gen=gen)
    await runner.start()
    try:
        tone = (np.sin(2 * np.pi * 180 * np.arange(int(3.0 * RATE)) / RATE) * 5000).astype(np.int16)
        frames = audio_frames(tone)
        for f in frames[:40]:                    # 0.8 s of it, then the agent is interrupted
            await queue.capture_frame(f)
        await asyncio.sleep(0.6)
        queue.flush()
        queue.clear_buffer()
        await wait_until(lambda: finished, 4)
        assert len(finished) == 1 and finished[0].interrupted, finished
        assert 0.2 < finished[0].playback_position < 0.85, finished[0]
        for f in frames[:50]:                    # the next answer, 1 s, played out
            await queue.capture_frame(f)
        queue.flush()
        await wait_until(lambda: len(finished) >= 2, 6)
        await asyncio.sleep(0.5)
        assert len(finished) == 2 and not finished[1].interrupted, finished
        assert finished[1].playback_position == pytest.approx(1.0, abs=0.1)
    finally:
        await runner.aclose()
        await gen.aclose()
    assert runner.finished[:2] == [(finished[0].playback_position, True), (finished[1].playback_position, False)]


async def test_worker_protocol_every_segment_gets_one_playback_finished_with_its_position(engine):
    """The agent's real DataStreamAudioOutput and the avatar's real DataStreamAudioReceiver over
    an in-process room (``streaming/integrations/livekit_local.py``), with StyleCastAvatarRunner: a played segment
    finishes at its length; one cleared 0.8 s in finishes interrupted near 0.8 s; two segments
    cleared before a sample of them played both finish (interrupted), so the agent never waits
    for its clear-buffer timeout; lk.clear_buffer is answered "ok"."""
    from livekit.agents.voice.avatar import DataStreamAudioOutput, DataStreamAudioReceiver
    from streaming.integrations.livekit_local import FakeNet

    from streaming.integrations.livekit import StyleCastAvatarRunner
    net = FakeNet()
    agent_room = net.join("agent", rtc.ParticipantKind.PARTICIPANT_KIND_AGENT)
    avatar_room = net.join("avatar")
    gen = StyleCastVideoGenerator(engine, fps=25, sample_rate=RATE)
    runner = StyleCastAvatarRunner(avatar_room, audio_recv=DataStreamAudioReceiver(avatar_room), video_gen=gen)
    playing = asyncio.Event()            # closed: the synchronizer takes nothing (the segments wait unplayed)
    playing.set()
    real_push = runner.av_sync.push

    async def gated(frame, *a, **kw):
        await playing.wait()
        return await real_push(frame, *a, **kw)

    runner.av_sync.push = gated
    await runner.start()
    out = DataStreamAudioOutput(agent_room, destination_identity="avatar", sample_rate=RATE)
    finished: list = []
    out.on("playback_finished", lambda ev: finished.append(ev))
    tone = (np.sin(2 * np.pi * 190 * np.arange(RATE) / RATE) * 5000).astype(np.int16)

    async def say(seconds: float) -> None:
        for f in audio_frames(np.tile(tone, int(np.ceil(seconds)))[: int(seconds * RATE)]):
            await out.capture_frame(f)
        out.flush()

    try:
        await say(1.0)
        await wait_until(lambda: len(finished) == 1, 6)
        assert len(finished) == 1 and not finished[0].interrupted
        assert finished[0].playback_position == pytest.approx(1.0, abs=0.12)
        await say(3.0)
        await asyncio.sleep(0.8)
        out.clear_buffer()
        await wait_until(lambda: len(finished) == 2, 4)
        assert len(finished) == 2 and finished[1].interrupted
        assert 0.4 < finished[1].playback_position < 1.3, finished[1]
        await asyncio.sleep(0.3)
        playing.clear()                                            # two segments arrive, neither plays...
        await say(1.0)
        await say(1.0)
        await asyncio.sleep(0.2)
        out.clear_buffer()                                         # ...and both are cleared
        playing.set()
        await wait_until(lambda: len(finished) == 4, 1.5)           # well inside the agent's 2 s timeout
        assert len(finished) == 4 and all(ev.interrupted for ev in finished[2:]), finished
        assert all(ev.playback_position < 0.1 for ev in finished[2:]), finished
    finally:
        await runner.aclose()
        await gen.aclose()
    methods = [(caller, method, result) for caller, _, method, _, result in net.rpcs]
    assert methods.count(("avatar", "lk.playback_finished", "ok")) == 4
    assert methods.count(("agent", "lk.clear_buffer", "ok")) == 2
    assert [p for p, _ in runner.finished] == [ev.playback_position for ev in finished]


def test_worker_cli_refuses_a_bad_url_and_says_why_when_the_server_is_unreachable():
    import subprocess
    import sys

    from repo_paths import REPO
    bad = subprocess.run([sys.executable, "-m", "streaming.livekit_worker", "--url", "nowhere", "--token", "t"],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "--url must be a ws:// or wss:// address" in bad.stderr
    gone = subprocess.run([sys.executable, "-m", "streaming.livekit_worker", "--url", "ws://127.0.0.1:9", "--token", "t"],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    last = gone.stderr.strip().splitlines()[-1]
    assert gone.returncode == 2 and last.startswith("python -m streaming.livekit_worker: error:"), gone.stderr[-500:]
    assert "Traceback" not in gone.stderr
