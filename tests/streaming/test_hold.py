"""A stream whose client went quiet makes no frames (held) until its packets come back or it is
closed; the frames a held stream would have made are not made later either."""
from __future__ import annotations

import asyncio
import time

import pytest

from engine.session import AvatarSession
from streaming.server import STATE_KEY, ServerConfig
from streaming.sessions import StreamSession
from rtc_util import Client, PcmTrack, running_server, tone, wait_sessions


def _published(stream: StreamSession, seconds: float) -> int:
    before = stream.frames
    time.sleep(seconds)
    return stream.frames - before


def test_hold_stops_frames_and_release_jumps_to_now(engine):
    stream = StreamSession(AvatarSession(engine, fps=25, identity=0), realtime=True)
    try:
        stream.ensure_started()
        deadline = time.monotonic() + 20
        while stream.frames < 10 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert stream.frames >= 10
        stream.hold(True)
        time.sleep(0.2)                               # a frame in flight may still land
        assert stream.held and _published(stream, 1.0) == 0
        silence_held = stream.silence_s
        stream.hold(False)
        assert not stream.held and stream.resumed_at is not None and stream.stats()["held_s"] >= 1.0
        # back on the wall clock at once: the held second is stepped, not rendered frame by frame
        time.sleep(0.3)
        lag = (time.monotonic() - stream.t0) - stream.fed_seconds()
        assert lag < 0.2, lag
        assert stream.silence_s - silence_held > 1.0
        assert 3 <= _published(stream, 1.0) <= 30
        assert stream.frame_errors == 0
    finally:
        stream.stop()


async def test_a_vanished_client_is_held_then_closed(engine):
    cfg = ServerConfig(engine=engine, admission=False, max_sessions=2, idle_timeout_s=4.0, quiet_hold_s=0.5)
    async with running_server(cfg) as (url, app):
        client = Client(url, PcmTrack(tone(30.0)))
        try:
            await client.connect()
            await client.wait_frames(10, timeout=30)
            conn = next(iter(app[STATE_KEY].clients.values()))
            assert not conn.stream.held
            client.vanish()
            t_vanish = time.monotonic()
            while not conn.stream.held and time.monotonic() - t_vanish < 3.0:
                await asyncio.sleep(0.05)
            assert conn.stream.held, "no hold within 3 s of the packets stopping"
            await asyncio.sleep(0.2)
            frames = conn.stream.frames
            await asyncio.sleep(1.0)
            if not conn.closed.is_set():
                assert conn.stream.frames == frames      # held: nothing made for nobody
            assert await wait_sessions(url, 0, timeout=10) == 0
        finally:
            await client.close()


@pytest.mark.parametrize("mic", [True, False], ids=["mic", "no-mic"])
async def test_a_client_that_keeps_sending_is_never_held(engine, mic):
    """A client streaming its microphone, or one without a microphone (RTCP only, about once a
    second: its gaps are longer than quiet_hold_s, yet it is there and watching) is never held."""
    cfg = ServerConfig(engine=engine, admission=False, max_sessions=1, quiet_hold_s=0.6)
    async with running_server(cfg) as (url, app):
        client = Client(url, PcmTrack(tone(30.0)) if mic else None)
        try:
            await client.connect()
            await client.wait_frames(5, timeout=30)
            conn = next(iter(app[STATE_KEY].clients.values()))
            for _ in range(40):                       # 4 s, more than six hold intervals
                await asyncio.sleep(0.1)
                assert not conn.stream.held
            assert conn.stream.held_s == 0.0
        finally:
            await client.close()
