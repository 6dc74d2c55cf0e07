"""The WebRTC server for real: aiohttp on 127.0.0.1, in-process aiortc clients sending audio and
decoding the avatar video. Every network wait has a timeout."""
from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import aiohttp
import numpy as np
import pytest

from streaming.ice import is_loopback_host, loopback_candidates
from streaming.server import STATE_KEY, ServerConfig
from streaming.stamps import read_stamp
from repo_paths import REPO
from rtc_util import (Client, OfferRejected, PcmTrack, get_json, running_server, tone,
                      wait_sessions)



@pytest.fixture
def web_root(tmp_path):
    (tmp_path / "index.html").write_text("<!doctype html><title>avatar</title>")
    (tmp_path / "app.js").write_text("console.log('hi')")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "x.css").write_text("body{}")
    return tmp_path


def config(engine, **kw) -> ServerConfig:
    """Tests of the mechanics run more sessions than this machine keeps at 25 fps: no admission
    check unless a test asks for it (test_admission_by_capacity)."""
    kw.setdefault("stamp", True)
    kw.setdefault("admission", False)
    return ServerConfig(engine=engine, **kw)


def check_video(frames, min_count: int, size: int) -> list[int]:
    """Decoded frames: at least ``min_count``, ``size``², strictly increasing pts and stamps."""
    assert len(frames) >= min_count
    assert all((f.width, f.height) == (size, size) for f in frames)
    pts = [f.pts for f in frames]
    assert all(b > a for a, b in zip(pts, pts[1:])), pts
    stamps = [read_stamp(f.to_ndarray(format="rgb24")) for f in frames]
    assert all(b > a for a, b in zip(stamps, stamps[1:])), stamps
    # pts follow the frame index: 90 kHz / 25 fps = 3600 per frame
    steps = {(pb - pa) / (sb - sa) for pa, pb, sa, sb in zip(pts, pts[1:], stamps, stamps[1:])}
    assert steps == {3600.0}, steps
    return stamps


async def test_health_and_static_files(engine, web_root):
    async with running_server(config(engine, web_root=web_root, max_sessions=3)) as (url, _app):
        status, health = await get_json(url + "/health")
        assert status == 200
        assert health == {"sessions": 0, "max_sessions": 3, "device": "cpu", "resolution": 128,
                          "fps": 25.0, "generator": "demo", "capacity": None}    # admission off here
        async with aiohttp.ClientSession() as http:
            async with http.get(url + "/") as r:
                assert r.status == 200 and "avatar" in await r.text()
            for path in ("/static/app.js", "/static/sub/x.css"):
                async with http.get(url + path) as r:
                    assert r.status == 200, path
            for path in ("/static/../test_serve.py", "/app.js", "/static/nope.js", "/static/%2e%2e/etc/passwd"):
                async with http.get(url + path) as r:
                    assert r.status == 404, path
            async with http.get(url + "/offer") as r:
                assert r.status == 405 and "error" in await r.json()


async def test_the_installed_web_client_is_served(engine):
    """No ``web_root``: the ``web_client`` package (package data of the wheel) is found and served."""
    from streaming.server import find_web_root

    root = find_web_root()
    assert (root / "index.html").is_file() and (root / "app.js").is_file()
    async with running_server(config(engine)) as (url, _app):
        async with aiohttp.ClientSession() as http:
            async with http.get(url + "/") as r:
                page = await r.text()
                assert r.status == 200 and 'src="static/app.js"' in page
            for path in ("/static/app.js", "/static/style.css"):
                async with http.get(url + path) as r:
                    assert r.status == 200 and await r.read() == (root / path.rsplit("/", 1)[1]).read_bytes(), path


def test_missing_web_client_is_a_startup_error(engine, web_root, tmp_path, monkeypatch):
    """A web root without the page, or no web_client package at all: create_app refuses to start
    (one line naming what is missing) instead of answering 404 on "/"."""
    import importlib.util

    import streaming.web_root as web_root_module
    from streaming.server import WebClientMissing, create_app, find_web_root

    with pytest.raises(WebClientMissing) as info:
        create_app(config(engine, web_root=tmp_path / "nowhere"))
    assert str(info.value).startswith("web client not found: ") and "\n" not in str(info.value)
    assert str(tmp_path / "nowhere" / "index.html") in str(info.value)
    (web_root / "app.js").unlink()
    with pytest.raises(WebClientMissing, match=re.escape(str(web_root / "app.js"))):
        create_app(config(engine, web_root=web_root))

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(web_root_module.importlib.util, "find_spec",
                        lambda name, *a: None if name == "web_client" else real_find_spec(name, *a))
    with pytest.raises(WebClientMissing, match="the web_client package is not installed"):
        find_web_root()
    with pytest.raises(WebClientMissing, match="the web_client package is not installed"):
        create_app(config(engine))


def test_cli_missing_web_client_fails_before_serving(tmp_path):
    """``python -m engine.serve`` where ``web_client`` is a package without its page (a broken
    install; here a shadowing one in the working folder): exit 2, one line, no "serving on"."""
    (tmp_path / "web_client").mkdir()
    (tmp_path / "web_client" / "__init__.py").write_text("")
    r = subprocess.run([sys.executable, "-m", "engine.serve", "--host", "127.0.0.1", "--port", "0"],
                       cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "serving on" not in r.stdout, r.stdout
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert r.stderr.startswith("python -m engine.serve: error: web client not found: "), r.stderr
    assert str(tmp_path / "web_client" / "index.html") in r.stderr, r.stderr


def test_loopback_host_detection():
    assert is_loopback_host("127.0.0.1") and is_loopback_host("localhost") and is_loopback_host("::1")
    assert not is_loopback_host("0.0.0.0") and not is_loopback_host("192.168.1.4")
    import aioice.ice
    with loopback_candidates():
        assert aioice.ice.get_host_addresses(True, False) == ["127.0.0.1"]


async def test_tone_stream_decodes_frames(engine):
    pcm = np.concatenate([np.zeros(24000, np.int16), tone(1.0, level=0.4), np.zeros(48000, np.int16)])
    async with running_server(config(engine)) as (url, app):
        client = Client(url, PcmTrack(pcm))
        try:
            await client.connect()
            await client.wait_frames(50, timeout=30)
            # only loopback candidates were offered
            answer = client.pc.remoteDescription.sdp
            cands = [line for line in answer.splitlines() if line.startswith("a=candidate")]
            assert cands and all(" 127.0.0.1 " in c for c in cands), cands
            check_video(client.rx.frames, 50, 128)
            # the mouth moved during the tone: some frames differ strongly from the first one
            first = client.rx.frames[0].to_ndarray(format="rgb24")[:-8].astype(np.float32)
            diffs = [np.abs(f.to_ndarray(format="rgb24")[:-8] - first).mean() for f in client.rx.frames]
            assert max(diffs) > 10, max(diffs)
            # stats arrive over the control channel
            t_end = time.monotonic() + 10
            while not any(m.get("type") == "stats" for m in client.rx.messages) and time.monotonic() < t_end:
                await asyncio.sleep(0.05)
            stats = [m for m in client.rx.messages if m.get("type") == "stats"]
            assert stats and stats[-1]["fps"] > 0 and stats[-1]["latency_ms"] > 0
            state = app[STATE_KEY]
            (conn,) = state.clients.values()
            assert conn.stream.stats()["audio_errors"] == 0
            assert conn.stream.stats()["frames"] >= 50
        finally:
            await client.close()
        assert await wait_sessions(url, 0, timeout=10) == 0


async def test_no_microphone_keeps_idling(engine):
    """A client that sends no audio (recvonly) still gets a moving face: silence is filled in."""
    async with running_server(config(engine)) as (url, app):
        client = Client(url, audio=None)
        try:
            await client.connect()
            await client.wait_frames(40, timeout=30)
            stamps = check_video(client.rx.frames, 40, 128)
            assert stamps[-1] - stamps[0] < 2 * len(stamps)      # not a burst of skipped frames
            (conn,) = app[STATE_KEY].clients.values()
            st = conn.stream.stats()
            assert st["silence_s"] > 1.0 and st["audio_errors"] == 0
        finally:
            await client.close()


async def test_h264_when_the_client_asks_for_it(engine):
    async with running_server(config(engine)) as (url, _app):
        client = Client(url, PcmTrack(tone(0.5)), video_codec="video/H264")
        try:
            await client.connect()
            assert "H264/90000" in client.pc.remoteDescription.sdp
            assert "VP8/90000" not in client.pc.remoteDescription.sdp
            await client.wait_frames(15, timeout=30)
            check_video(client.rx.frames, 15, 128)
        finally:
            await client.close()


async def test_real_speech_stream(engine, tmp_path):
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed (apt-get install espeak-ng)")
    wav = tmp_path / "speech.wav"
    subprocess.run(["espeak-ng", "-w", str(wav), "hello, this is a talking avatar test"], check=True,
                   timeout=30, capture_output=True)
    import av
    with av.open(str(wav)) as container:
        resampler = av.AudioResampler(format="s16", layout="mono", rate=48000)
        chunks = [r.to_ndarray().reshape(-1) for f in container.decode(audio=0) for r in resampler.resample(f)]
    pcm = np.concatenate(chunks)
    assert pcm.size > 48000
    async with running_server(config(engine)) as (url, app):
        client = Client(url, PcmTrack(pcm[: 48000 * 3]))
        try:
            await client.connect()
            await client.wait_frames(60, timeout=30)
            check_video(client.rx.frames, 60, 128)
            (conn,) = app[STATE_KEY].clients.values()
            st = conn.stream.stats()
            assert st["audio_errors"] == 0 and st["frame_errors"] == 0
        finally:
            await client.close()


async def test_max_sessions_503_leaves_others_running(engine):
    async with running_server(config(engine, max_sessions=1)) as (url, _app):
        first = Client(url, PcmTrack())
        second = Client(url, PcmTrack())
        try:
            await first.connect()
            await first.wait_frames(5, timeout=30)
            with pytest.raises(OfferRejected) as info:
                await second.connect()
            assert info.value.status == 503
            assert info.value.data == {"error": "server full (1 sessions)"}
            n = len(first.rx.frames)
            await first.wait_frames(n + 10, timeout=30)     # the first session goes on
            _, health = await get_json(url + "/health")
            assert health["sessions"] == 1
        finally:
            await second.close()
            await first.close()


def _bad_requests(good_sdp: str):
    garbage_sdp = "v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\nm=video 9 UDP/TLS/RTP/SAVPF 97\r\na=rtpmap:97 NOPE\r\n"
    head, video = good_sdp.split("m=video", 1)
    no_video_wanted = head + "m=video" + video.replace("a=recvonly", "a=inactive", 1)
    assert no_video_wanted != good_sdp
    cases = [
        (json.dumps({"type": "offer", "sdp": no_video_wanted}).encode(), "application/json"),
        (b"not json", "application/json"),
        (b"\xff\xfe\x00", "application/json"),
        (b"[]", "application/json"),
        (b"{}", "application/json"),
        (json.dumps({"type": "answer", "sdp": good_sdp}).encode(), "application/json"),
        (json.dumps({"type": "offer"}).encode(), "application/json"),
        (json.dumps({"type": "offer", "sdp": 12}).encode(), "application/json"),
        (json.dumps({"type": "offer", "sdp": "hello"}).encode(), "application/json"),
        (json.dumps({"type": "offer", "sdp": garbage_sdp}).encode(), "application/json"),
        (json.dumps({"type": "offer", "sdp": good_sdp.replace("m=video", "m=text")}).encode(), "application/json"),
        (json.dumps({"type": "offer", "sdp": good_sdp[: len(good_sdp) // 2]}).encode(), "application/json"),
        (json.dumps({"type": "offer", "sdp": good_sdp, "identity": {"seed": -1}}).encode(), "application/json"),
        (json.dumps({"type": "offer", "sdp": good_sdp, "identity": "x"}).encode(), "application/json"),
        (json.dumps({"type": "offer", "sdp": "v=0\r\n" + "x" * 70_000}).encode(), "application/json"),
        (b"{" * 5000, "text/plain"),
        # found from outside (each was a 500): nesting, an address aiortc chokes on after parsing,
        # and offers that used to be accepted with no fingerprint or ports out of range
        (b"[" * 10_000, "application/json"),
        (json.dumps({"type": "offer", "sdp": good_sdp.replace("c=IN IP4 127.0.0.1", "c=IN IP4 127.0.0E1")}).encode(),
         "application/json"),
        (json.dumps({"type": "offer", "sdp": "\r\n".join(ln for ln in good_sdp.split("\r\n")
                                                          if not ln.startswith("a=fingerprint"))}).encode(),
         "application/json"),
        (json.dumps({"type": "offer", "sdp": re.sub(r"m=video \d+", "m=video 99999999", good_sdp)}).encode(),
         "application/json"),
        (json.dumps({"type": "offer", "sdp": re.sub(r"(a=candidate:\S+ 1 udp \d+ 127\.0\.0\.1) \d+",
                                                    r"\1 70000", good_sdp)}).encode(), "application/json"),
        (json.dumps({"type": "offer", "sdp": good_sdp}).encode(), "text/plain"),      # a cross-site "simple" POST
    ]
    return cases


async def test_hundred_bad_requests_then_a_good_offer(engine):
    async with running_server(config(engine, max_sessions=2)) as (url, app):
        probe = Client(url, PcmTrack())
        probe.pc.addTrack(probe.audio)
        probe.pc.addTransceiver("video", direction="recvonly")
        await probe.pc.setLocalDescription(await probe.pc.createOffer())
        good_sdp = probe.pc.localDescription.sdp
        await probe.pc.close()
        cases = _bad_requests(good_sdp)
        statuses, errors = [], []
        async with aiohttp.ClientSession() as http:
            for i in range(100):
                body, ctype = cases[i % len(cases)]
                async with http.post(url + "/offer", data=body, headers={"Content-Type": ctype},
                                     timeout=aiohttp.ClientTimeout(total=10)) as r:
                    statuses.append(r.status)
                    data = await r.json()
                    assert isinstance(data.get("error"), str) and data["error"], (i, data)
                    errors.append(data["error"])
        assert all(400 <= s < 500 for s in statuses), list(zip(statuses, errors))
        assert "does not receive video" in errors[0] and "malformed JSON" in errors[1], errors[:2]
        assert 413 in statuses and 400 in statuses and 415 in statuses
        joined = " | ".join(errors)
        for needle in ("nested too deep", "connection address '127.0.0E1'", "no DTLS fingerprint",
                       "port 99999999 is out of range", "candidate port 70000 is out of range"):
            assert needle in joined, needle
        async with aiohttp.ClientSession() as http:
            # a gzip body that is not gzip, a NUL in a static path: 4xx, not 500
            async with http.post(url + "/offer", data=b"not gzip at all",
                                 headers={"Content-Type": "application/json", "Content-Encoding": "gzip"}) as r:
                assert r.status == 415 and "Content-Encoding" in (await r.json())["error"]
            async with http.get(url + "/static/a%00b") as r:
                assert r.status == 404
            # another site's page cannot occupy a slot; the page's own origin can (tests/web_client)
            async with http.post(url + "/offer", json={"type": "offer", "sdp": good_sdp},
                                 headers={"Origin": "https://evil.example"}) as r:
                assert r.status == 403 and "evil.example" in (await r.json())["error"]
        _, health = await get_json(url + "/health")
        assert health["sessions"] == 0                  # nothing leaked from the failed offers
        client = Client(url, PcmTrack(tone(1.0)))
        try:
            await client.connect()
            await client.wait_frames(20, timeout=30)
            check_video(client.rx.frames, 20, 128)
        finally:
            await client.close()


def _stream_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("stylecast-stream-")]


async def test_vanishing_clients_are_freed(engine):
    cfg = config(engine, max_sessions=4, idle_timeout_s=1.5)
    async with running_server(cfg) as (url, app):
        clients = [Client(url, PcmTrack(tone(0.5))) for _ in range(4)]
        try:
            for c in clients:
                await c.connect()
            for c in clients:
                await c.wait_frames(5, timeout=30)
            _, health = await get_json(url + "/health")
            assert health["sessions"] == 4
            state = app[STATE_KEY]
            conns = list(state.clients.values())
            # two leave without a goodbye (UDP gone), one closes its pc, one stops its tracks only
            clients[0].vanish()
            clients[1].vanish()
            await clients[2].close()
            clients[3].pc.getTransceivers()[0].sender.track.stop()
            clients[3].vanish()
            assert await wait_sessions(url, 0, timeout=20) == 0
            for conn in conns:
                await asyncio.wait_for(conn.closed.wait(), 10)
                assert not conn.tasks, conn.tasks
                assert conn.pc.connectionState == "closed"
                assert conn.stream.stopped
            t_end = time.monotonic() + 10
            while _stream_threads() and time.monotonic() < t_end:
                await asyncio.sleep(0.05)
            assert _stream_threads() == []
            # the slots are free again
            fresh = Client(url, PcmTrack())
            await fresh.connect()
            await fresh.wait_frames(3, timeout=30)
            await fresh.close()
        finally:
            for c in clients:
                await c.close()


async def test_overload_drops_frames_instead_of_queueing(engine):
    """Synthesis 3x slower than the frame interval: frames are dropped, latency stays bounded."""
    from engine.session import AvatarEngine

    interval = 1 / 25
    slow_calls = []

    def slow_synthesize(ws):
        slow_calls.append(time.monotonic())
        time.sleep(3 * interval)
        return engine.G.synthesis(ws, noise_mode="const")

    slow = AvatarEngine(engine.G, directions=engine.directions, synthesize=slow_synthesize)
    async with running_server(config(slow)) as (url, app):
        client = Client(url, PcmTrack(tone(6.0, level=0.3)))
        try:
            await client.connect()
            await client.wait_frames(3, timeout=30)
            (conn,) = app[STATE_KEY].clients.values()
            slot_sizes = []
            t_end = time.monotonic() + 4.0
            while time.monotonic() < t_end:
                slot_sizes.append(len(conn.stream.video_slot))
                await asyncio.sleep(0.01)
            frames, times = list(client.rx.frames), list(client.rx.times)
        finally:
            await client.close()
    assert max(slot_sizes) <= 1
    stamps = check_video(frames, 10, 128)
    gaps = np.diff(stamps)
    assert gaps.max() >= 2 and np.mean(gaps) > 1.5, gaps          # frames were dropped
    st = conn.stream.stats()
    assert st["engine_dropped"] > 0
    # delay does not grow: arrival time minus media time (stamp / fps) stays flat. Queueing every
    # frame would add 2 frame intervals of delay per frame (about 2.7 s over this run).
    lag = np.array(times) - np.array(stamps) * interval
    n = max(3, len(lag) // 4)
    growth = np.median(lag[-n:]) - np.median(lag[:n])
    assert growth < 0.6, (growth, lag)


async def test_control_channel(engine):
    async with running_server(config(engine, stats_interval_s=0.2)) as (url, app):
        client = Client(url, PcmTrack())
        try:
            await client.connect(identity={"seed": 5, "truncation": 0.5})
            await client.wait_frames(3, timeout=30)
            await client.channel_open()
            ch = client.channel
            before = client.rx.frames[-1].to_ndarray(format="rgb24")[:-8].astype(np.float32)
            for msg in ('{"type":"identity","seed":7,"truncation":0.6}', "not json", '{"type":"dance"}',
                        '{"type":"identity","seed":"x"}', '[1,2]', '{"type":"random"}', '{"type":"interrupt"}',
                        "x" * 5000):
                ch.send(msg)
            t_end = time.monotonic() + 15
            def kinds():
                return [m["type"] for m in client.rx.messages if m["type"] != "stats"]
            while len(kinds()) < 8 and time.monotonic() < t_end:
                await asyncio.sleep(0.05)
            replies = [m for m in client.rx.messages if m["type"] != "stats"]
            assert kinds() == ["identity", "error", "error", "error", "error", "identity", "interrupt", "error"], replies
            assert replies[0] == {"type": "identity", "seed": 7, "truncation": 0.6}
            assert replies[5]["type"] == "identity" and replies[5]["truncation"] == 0.6   # random keeps ψ
            assert "invalid JSON" in replies[1]["error"] and "unknown message type" in replies[2]["error"]
            n = len(client.rx.frames)
            await client.wait_frames(n + 5, timeout=30)         # still streaming, with a new face
            after = client.rx.frames[-1].to_ndarray(format="rgb24")[:-8].astype(np.float32)
            assert np.abs(after - before).mean() > 5
        finally:
            await client.close()


async def test_control_channel_flood(engine):
    """1,000 messages in a burst, deep nesting and oversize strings: dropped or answered, the
    "slow down" notice at most once a second, and the stream keeps its frame rate."""
    async with running_server(config(engine, stats_interval_s=5.0)) as (url, app):
        client = Client(url, PcmTrack(tone(20.0, level=0.2)), keep_images=False)
        try:
            await client.connect()
            await client.wait_frames(25, timeout=30)
            await client.channel_open()
            ch = client.channel
            for i in range(1000):
                ch.send('{"type":"dance"}' if i % 3 else "[" * 3000)
            ch.send("y" * 60_000)
            n0, t0 = len(client.rx.times), time.monotonic()
            await asyncio.sleep(3.0)
            fps = (len(client.rx.times) - n0) / (time.monotonic() - t0)
            replies = [m for m in client.rx.messages if m["type"] == "error"]
            busy = [m for m in replies if "slow down" in m["error"]]
            conn = next(iter(app[STATE_KEY].clients.values()))
            assert conn.control_dropped > 0 and 1 <= len(busy) <= 4, (conn.control_dropped, len(busy))
            # the bucket: 20/s, burst 40. The fps window holds the SCTP work of both ends (the
            # flooding client shares this process and its loop): ~21 fps here, 16.7 without the bucket
            assert len(replies) <= 40 + 20 * 4 and fps >= 19, (len(replies), fps)
            assert any("nested too deep" in m["error"] for m in replies), replies[:5]
        finally:
            await client.close()


async def test_cli_serves_and_stops_on_sigint(tmp_path):
    from engine.latent.identity import w_from_seed
    from engine.synthesis.checkpoints import load_generator

    face = tmp_path / "face.npy"          # an identity as a latent file (what an inverted photo gives)
    np.save(face, w_from_seed(load_generator("demo"), 5, truncation_psi=0.7).numpy())
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    proc = subprocess.Popen([sys.executable, "-m", "engine.serve", "--gpu", "0", "--host", "127.0.0.1",
                             "--port", "0", "--max-sessions", "2", "--fps", "20", "--no-batching",
                             "--identity", str(face), "--directions", str(REPO / "engine/assets/demo_directions.json")],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    client = None
    try:
        # the first stdout line names the port the server bound ("--port 0": any free port)
        loop = asyncio.get_running_loop()
        line = await asyncio.wait_for(loop.run_in_executor(None, proc.stdout.readline), 60)
        match = re.search(r"serving on (http://127\.0\.0\.1:\d+)/", line)
        assert match, (line, proc.stderr.read() if proc.poll() is not None else "")
        url = match.group(1)
        _, health = await get_json(url + "/health")
        assert health["max_sessions"] == 2 and health["fps"] == 20.0 and health["device"] == "cpu"
        client = Client(url, PcmTrack())
        await client.connect()
        await client.wait_frames(3, timeout=30)
        proc.send_signal(signal.SIGINT)
        out, err = await loop.run_in_executor(None, lambda: proc.communicate(timeout=30))
        assert proc.returncode == 0, err
        # the server closed the peer connection on its way out (DTLS close_notify reached us)
        t_end = time.monotonic() + 10
        while client.pc.connectionState not in ("closed", "failed") and time.monotonic() < t_end:
            await asyncio.sleep(0.05)
        assert client.pc.connectionState in ("closed", "failed"), client.pc.connectionState
        assert "CUDA not available, falling back to CPU" in err
        assert "Traceback" not in err, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        if client is not None:
            await client.close()


def test_device_and_its_gpu_alias_fall_back_to_the_cpu_without_cuda(monkeypatch, capsys):
    """--device and --gpu (its documented alias) are one option: a GPU asked for on a machine
    without CUDA runs on the CPU after one notice line on stderr."""
    import torch

    from engine.serve import build_parser, pick_device

    parser = build_parser()
    assert parser.parse_args(["--gpu", "0"]).device == parser.parse_args(["--device", "0"]).device == "0"
    assert parser.parse_args([]).device == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for spec in ("0", "cuda", "cuda:1"):
        assert pick_device(spec) == "cpu"
        err = capsys.readouterr().err
        assert err == "python -m engine.serve: CUDA not available, falling back to CPU\n", err
    assert pick_device("cpu") == "cpu" and capsys.readouterr().err == ""


def test_cli_errors():
    for args, msg in ((["--port", "70000"], "--port"), (["--gpu", "tpu"], "--gpu"), (["--device", "tpu"], "--device"),
                      (["--threads", "0"], "--threads"),
                      (["--identity", "no_such_face.npy"], "--identity"),
                      (["--directions", "no_such_directions.json"], "no_such_directions.json: no such file")):
        r = subprocess.run([sys.executable, "-m", "engine.serve", *args], cwd=REPO, capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 2, (args, r.stderr)
        assert msg in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


# -- the pieces between synthesis and the wire -------------------------------------------------------

async def test_latest_slot_keeps_only_the_newest():
    from aiortc.mediastreams import MediaStreamError

    from streaming.slots import LatestSlot

    slot = LatestSlot()
    slot.bind(asyncio.get_running_loop())
    assert slot.put(1) is False and slot.put(2) is True and slot.put(3) is True
    assert len(slot) == 1 and slot.dropped == 2 and await slot.get() == 3 and len(slot) == 0
    waiter = asyncio.ensure_future(slot.get())
    await asyncio.sleep(0.01)
    threading.Thread(target=slot.put, args=(4,)).start()        # producer thread wakes the loop
    assert await asyncio.wait_for(waiter, 5) == 4
    waiter = asyncio.ensure_future(slot.get())
    await asyncio.sleep(0.01)
    slot.close()
    with pytest.raises(MediaStreamError):
        await asyncio.wait_for(waiter, 5)
    assert slot.put(5) is False and len(slot) == 0


def test_audio_out_buffer_positions():
    from streaming.slots import AudioOutBuffer

    buf = AudioOutBuffer(48000, max_seconds=0.1)
    buf.write(0, np.arange(1000, dtype=np.int16))
    assert list(buf.read(0, 960)[:3]) == [0, 1, 2] and buf.read(960, 960) is None
    buf.write(900, np.full(200, 7, np.int16))          # overlaps 900..999: only 1000..1099 is new
    buf.write(2000, np.ones(100, np.int16))            # gap 1100..1999 becomes zeros
    assert buf.zero_filled == 900
    chunk = buf.read(960, 960)
    assert list(chunk[:40]) == list(range(960, 1000)) and set(chunk[40:140]) == {7} and not chunk[140:].any()
    forced = buf.read(1920, 960, force=True)           # past the end: zeros, the stream moves on
    assert not forced[:80].any() and set(forced[80:180]) == {1} and not forced[180:].any()
    assert buf.end == 2880
    buf.write(buf.end, np.ones(10_000, np.int16))      # beyond 0.1 s: oldest samples dropped
    assert buf.dropped_samples == 10_000 - 4800


def test_stream_timeline_is_the_session_clock(engine):
    """One clock: the stream's timeline is the session's 16 kHz count of pushed audio (resampler
    contents included), so an interrupt that drops pushed audio rewinds the stream with it; and
    while the worker moves chunks from the inbox into the session, another thread's fed_seconds
    never counts a chunk twice or not at all."""
    from engine.session import AvatarSession
    from streaming.sessions import StreamSession

    session = AvatarSession(engine, fps=25, identity=0)
    stream = StreamSession(session, realtime=False)
    try:
        for _ in range(25):     # 44.1 kHz is resampled (48 kHz would be used as it is)
            stream.push_audio(tone(0.02)[:882], 44100)
        assert stream.fed_seconds() == pytest.approx(0.5)           # queued, not pushed yet
        seen = []
        drainer = threading.Thread(target=stream._drain_audio)
        drainer.start()
        while drainer.is_alive():
            seen.append(stream.fed_seconds())
        drainer.join()
        assert len(seen) > 1 and all(abs(v - 0.5) < 1e-4 for v in seen), (min(seen), max(seen))
        assert session.pushed_samples == pytest.approx(8000, abs=1)  # 0.5 s at 16 kHz, part still in soxr
        assert session.clock < 8000 and stream.fed_seconds() == pytest.approx(0.5, abs=1e-4)
        while session.next_frame() is not None:
            pass
        k = session.frame_start(session.stats()["frames"]) / 16000  # start of the next frame
        dropped = stream.interrupt().result(timeout=10)            # not started: runs here
        assert dropped == pytest.approx(0.5 - k, abs=1e-3) and dropped > 0
        assert stream.fed_seconds() == pytest.approx(k, abs=1e-6) == session.pushed_samples / 16000
    finally:
        stream.stop()
