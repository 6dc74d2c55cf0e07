"""Abuse of the live paths against a real server on 127.0.0.1, with a client streaming beside it:
300+ SDP mutations, type-confused and oversize JSON, slow clients, 200 half-open connections and
a sustained control-channel flood. Every answer is a 4xx (or a 200 / 503 for a well-formed offer),
nothing is logged as an error, the server keeps serving and the other client keeps getting frames.
The cases come from ``benchmarks.abuse_cases`` (``python -m benchmarks.abuse`` measures the same
against an ``engine.serve`` process and reports the other client's frame rate)."""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys
import time
from urllib.parse import urlparse

import aiohttp
import pytest

from benchmarks.abuse_cases import (STATUS_OK, control_messages, half_open, json_bodies, real_offer,
                                    sdp_mutations, slow_request)
from streaming.server import STATE_KEY, ServerConfig
from repo_paths import REPO
from rtc_util import Client, PcmTrack, get_json, running_server, tone

#: loggers whose ERROR records would mean an abuse case reached code that did not expect it
_WATCHED = ("stylecast", "aiohttp", "aiortc", "aioice", "asyncio")


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.split(".")[0] in _WATCHED:
            self.records.append(record)


@contextlib.contextmanager
def logged_errors():
    handler = _Errors()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler.records
    finally:
        root.removeHandler(handler)


@contextlib.asynccontextmanager
async def victim(url: str):
    """A client streaming beside the abuse; yields a function giving its frames so far."""
    client = Client(url, PcmTrack(tone(120.0, level=0.2)), keep_images=False)
    try:
        await client.connect()
        await client.wait_frames(10, timeout=30)
        yield lambda: len(client.rx.times)
    finally:
        await client.close()


def _config(engine, **kw) -> ServerConfig:
    kw.setdefault("admission", False)         # mechanics, not capacity (test_capacity has that)
    return ServerConfig(engine=engine, **kw)


async def _still_serves(url: str) -> None:
    status, health = await get_json(url + "/health", timeout=5)
    assert status == 200, health
    fresh = Client(url, PcmTrack(tone(2.0)), keep_images=False)
    try:
        await fresh.connect()
        await fresh.wait_frames(3, timeout=20)
    finally:
        await fresh.close()


def _steady(frames_before: int, frames_after: int, seconds: float, fps: float = 25.0) -> None:
    """The other client kept streaming: at least half its frame rate through the abuse (the exact
    rate is what ``benchmarks.abuse`` measures; this catches a blocked loop or a dead stream)."""
    got = (frames_after - frames_before) / seconds
    assert got >= 0.5 * fps, f"the streaming client got {got:.1f} fps during the abuse"


async def test_sdp_mutations_get_4xx_or_an_answer_never_a_500(engine):
    """Every fourth of the deterministic mutations (each line deleted, doubled, moved; values and
    numbers replaced; structural changes), with the offer limits off so that every well-formed
    one reaches the peer connection: no 500, no error logged (aiortc's background tasks and
    aioice included), the server serves a real client afterwards."""
    sdp = await real_offer()
    cases = sdp_mutations(sdp)[::4]
    assert len(cases) >= 300
    cfg = _config(engine, max_sessions=400, connect_timeout_s=1.0, offer_limits=False)
    statuses: dict[int, list[str]] = {}
    with logged_errors() as errors:
        async with running_server(cfg) as (url, _app):
            async with aiohttp.ClientSession() as http:
                for name, text in cases:
                    async with http.post(url + "/offer", json={"type": "offer", "sdp": text},
                                         timeout=aiohttp.ClientTimeout(total=20)) as r:
                        statuses.setdefault(r.status, []).append(name)
                        if r.status != 200:
                            assert "error" in await r.json(), name
            await asyncio.sleep(1.5)                     # the accepted ones time out unconnected
            await _still_serves(url)
    assert 500 not in statuses, statuses.get(500)
    assert set(statuses) <= STATUS_OK, {s: v[:3] for s, v in statuses.items() if s not in STATUS_OK}
    assert len(statuses.get(400, ())) > len(cases) // 3 and statuses.get(200), {s: len(v) for s, v in statuses.items()}
    assert not errors, [f"{r.name}: {r.getMessage()[:300]}" for r in errors[:5]]


async def test_an_offer_flood_from_many_addresses_does_not_stall_a_stream(engine):
    """An attacker in another process sends well-formed offers from 120 addresses as fast as they
    are answered: the server starts at most ``global_rate`` sessions a second (429 for the rest)
    and the stream already running keeps going."""
    cfg = _config(engine, max_sessions=64, connect_timeout_s=1.0)
    async with running_server(cfg) as (url, app):
        async with victim(url) as frames:
            n0, t0 = frames(), time.monotonic()
            # The attacker runs at the lowest priority: on a real network its CPU is not the
            # server's, and on 2 shared cores its own interpreter start and 120 clients took the
            # victim's frames below half rate in one CI run (10.7 fps) with the server unchanged.
            proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "benchmarks.abuse_cases", "flood", url,
                                                        "120", stdout=asyncio.subprocess.PIPE, cwd=REPO,
                                                        preexec_fn=lambda: os.nice(19))
            out, _ = await asyncio.wait_for(proc.communicate(), 120)
            elapsed = time.monotonic() - t0
            statuses = {int(k): v for k, v in json.loads(out).items()}
            _steady(n0, frames(), elapsed)
            limiter = app[STATE_KEY].limiter
            assert statuses.get(200, 0) <= limiter.global_burst + limiter.global_rate * elapsed + 1, (statuses, elapsed)
            assert sum(statuses.values()) == 120 and set(statuses) <= {200, 429, 503}, statuses
            await asyncio.sleep(1.5)
            await _still_serves(url)


async def test_type_confused_and_oversize_json(engine):
    sdp = await real_offer()
    cfg = _config(engine, max_sessions=16, connect_timeout_s=1.0, offer_limits=False)
    seen: dict[str, object] = {}
    with logged_errors() as errors:
        async with running_server(cfg) as (url, _app):
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as http:
                for name, body, headers in json_bodies(sdp):
                    try:
                        async with http.post(url + "/offer", data=body, headers=headers,
                                             timeout=aiohttp.ClientTimeout(total=20)) as r:
                            seen[name] = r.status
                    except aiohttp.ClientError as exc:   # the server answered early and closed
                        seen[name] = type(exc).__name__
            await _still_serves(url)
    statuses = {v for v in seen.values() if isinstance(v, int)}
    assert 500 not in statuses and statuses <= STATUS_OK, seen
    assert all(isinstance(v, int) for k, v in seen.items() if k != "10 MB"), {k: v for k, v in seen.items() if not isinstance(v, int)}
    assert seen["10 MB"] in (413, "ClientOSError", "ServerDisconnectedError"), seen["10 MB"]
    for name in ("sdp = 1", "type = null", "identity = {\"seed\": \"1\"}", "truncation NaN", "top level []",
                 "nested arrays 60000", "lone surrogate", "UTF-16", "long number"):
        assert seen[name] == 400, (name, seen[name])
    assert seen["64 KiB + 1"] == 413 and seen["text/plain"] == 415 and seen["foreign origin"] == 403
    assert seen["gzip that is not"] == seen["deflate that is not"] == seen["unknown encoding"] == 415
    assert not errors, [f"{r.name}: {r.getMessage()[:200]}" for r in errors[:5]]


async def test_slow_clients_are_cut_off_and_others_stream_on(engine):
    """Clients that send one byte a second: one still sending its headers is disconnected after
    ``http_idle_timeout_s``; one trickling its body gets a 408 after ``body_timeout_s``."""
    cfg = _config(engine, http_idle_timeout_s=2.0, body_timeout_s=2.0)
    async with running_server(cfg) as (url, _app):
        host, port = urlparse(url).hostname, urlparse(url).port
        headers = (f"POST /offer HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
                   "Content-Length: 5000\r\n").encode()
        async with victim(url) as frames:
            n0, t0 = frames(), time.monotonic()
            results = await asyncio.gather(
                *[slow_request(host, port, headers, byte_every_s=1.0, max_s=8.0) for _ in range(10)],
                *[slow_request(host, port, b'{"type":"offer"', byte_every_s=1.0, max_s=8.0, at_once=headers + b"\r\n")
                  for _ in range(10)])
            elapsed = time.monotonic() - t0
            _steady(n0, frames(), elapsed)
            await _still_serves(url)
    header_phase, body_phase = results[:10], results[10:]
    assert all(status is None and 1.5 <= t < 5.0 for status, t in header_phase), header_phase
    assert all(status == 408 and 1.5 <= t < 5.0 for status, t in body_phase), body_phase


async def test_200_half_open_connections(engine):
    """200 TCP connections that never finish a request (half send a partial request line): the
    server answers others at once, a new client streams, and all 200 are closed by the server
    after ``http_idle_timeout_s``."""
    cfg = _config(engine, http_idle_timeout_s=3.0)
    async with running_server(cfg) as (url, _app):
        host, port = urlparse(url).hostname, urlparse(url).port
        async with victim(url) as frames:
            n0, t0 = frames(), time.monotonic()
            conns = (await half_open(host, port, 100)) + (await half_open(host, port, 100, b"POST /off"))
            try:
                await _still_serves(url)
                eof = await asyncio.wait_for(asyncio.gather(*[r.read() for r, _ in conns]), 15.0)
                closed_after = time.monotonic() - t0
                _steady(n0, frames(), closed_after)
            finally:
                for _, w in conns:
                    w.close()
    assert eof == [b""] * 200 and closed_after < 10.0, closed_after


async def test_sustained_control_flood_does_not_slow_another_client(engine):
    """One client sends 1,000 control messages a second for 3 s (the hostile ones among them);
    another client keeps streaming; the flooder is answered at most at the bucket's rate."""
    async with running_server(_config(engine, stats_interval_s=5.0)) as (url, app):
        async with victim(url) as frames:
            flooder = Client(url, PcmTrack(tone(30.0, level=0.2)), keep_images=False)
            try:
                await flooder.connect()
                await flooder.wait_frames(5, timeout=30)
                await flooder.channel_open()
                ch = flooder.channel
                hostile = control_messages()
                n0, t0 = frames(), time.monotonic()
                for tick in range(30):                     # 100 messages every 0.1 s
                    for i in range(100):
                        ch.send(hostile[i % len(hostile)] if i % 10 == 0 else '{"type":"dance"}')
                    await asyncio.sleep(0.1)
                await asyncio.sleep(0.5)
                _steady(n0, frames(), time.monotonic() - t0)
                replies = [m for m in flooder.rx.messages if m["type"] == "error"]
                assert 20 <= len(replies) <= 40 + 20 * 4, len(replies)
                # then each hostile message alone, within the rate: each one gets its error answer
                await asyncio.sleep(2.5)
                before = len(flooder.rx.messages)
                for message in hostile:
                    ch.send(message)
                    await asyncio.sleep(0.1)
                await asyncio.sleep(1.0)
                answers = [m for m in flooder.rx.messages[before:] if m["type"] in ("error", "interrupt")]
                assert len(answers) == len(hostile), "\n".join(m.get("error", m["type"])[:60] for m in answers)
                assert any("nested too deep" in m["error"] for m in answers)
                assert any("too long" in m["error"] for m in answers)
                await _still_serves(url)
            finally:
                await flooder.close()


@pytest.mark.parametrize("n", [3])
async def test_server_survives_clients_vanishing_mid_request(engine, n):
    """Connections cut in the middle of a POST body: no error logged, the next offer works."""
    sdp = await real_offer()
    body = json.dumps({"type": "offer", "sdp": sdp}).encode()
    with logged_errors() as errors:
        async with running_server(_config(engine)) as (url, _app):
            host, port = urlparse(url).hostname, urlparse(url).port
            for _ in range(n):
                reader, writer = await asyncio.open_connection(host, port)
                writer.write(f"POST /offer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                             f"Content-Length: {len(body)}\r\n\r\n".encode() + body[: len(body) // 2])
                await writer.drain()
                writer.transport.abort()
            await asyncio.sleep(0.3)
            await _still_serves(url)
    assert not errors, [f"{r.name}: {r.getMessage()[:200]}" for r in errors[:5]]
