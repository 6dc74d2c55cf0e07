"""streaming.capacity.Capacity: the cost model, the learned ceiling, the refusal messages, and
admission in a real server on 127.0.0.1."""
from __future__ import annotations

import asyncio
import time

import pytest

from rtc_util import Client, OfferRejected, PcmTrack, get_json, running_server, tone
from streaming.capacity import Capacity
from streaming.server import ServerConfig


def test_the_cost_model_counts_idle_and_other_processes():
    cap = Capacity(25.0, cores=2)              # 1.7 cores for streams
    assert cap.fits() == 1 and cap.refusal(0, []) is None          # unknown cost: one at a time
    cap.per_session = 0.4
    assert cap.fits() == 4
    cap.other = 0.5                                                  # a neighbour takes half a core
    assert cap.fits() == 3
    assert cap.refusal(2, [25.0, 25.1]) is None
    msg = cap.refusal(3, [25.0, 25.0, 24.9])
    assert "server at capacity" in msg and "other processes use 0.50" in msg


def test_a_slow_stream_refuses_and_a_learned_ceiling_expires():
    cap = Capacity(25.0, cores=2)
    cap.per_session = 0.3
    assert "21.0 fps" in cap.refusal(1, [21.0])                      # already overloaded
    assert cap.slow([22.5]) and not cap.slow([23.5, 25.0]) and not cap.slow([None, 0.0])
    cap.learn_ceiling(2, now=100.0)
    assert cap.fits(now=101.0) == 2
    assert "slowed below 24 fps with 3 sessions" in cap.refusal(2, [25.0, 25.0])
    assert cap.fits(now=100.0 + cap.ceiling_s + 1) == 5              # tried again later


def test_live_samples_replace_the_probe(monkeypatch):
    import streaming.capacity as capacity

    clock = {"cpu": 0.0, "busy": 0.0}
    monkeypatch.setattr(capacity.time, "process_time", lambda: clock["cpu"])
    monkeypatch.setattr(capacity, "_machine_busy", lambda: clock["busy"])
    cap = Capacity(25.0, cores=2)
    cap.per_session, cap.source = 1.0, "probe"
    cap.sample(2, now=0.0)
    clock.update(cpu=1.2, busy=1.5)             # 2 streams used 1.2 cores in 1 s; others 0.3
    cap.sample(2, now=1.0)
    assert cap.source == "live" and abs(cap.per_session - 0.6) < 1e-9 and abs(cap.other - 0.09) < 1e-9


def _burning_engine(ms: float):
    """The demo engine whose "synthesis" burns ``ms`` of CPU per frame: a known, heavy cost."""
    import torch

    from engine.session import AvatarEngine

    def synthesize(ws):
        t_end = time.thread_time() + ms / 1000.0
        while time.thread_time() < t_end:
            pass
        return torch.zeros(ws.shape[0], 3, 128, 128)
    return AvatarEngine("demo", synthesize=synthesize)


def _recent_fps(client, seconds: float) -> float:
    t = [x for x in client.rx.times if x >= client.rx.times[-1] - seconds]
    return (len(t) - 1) / (t[-1] - t[0])


async def test_admission_by_capacity():
    """N + 1 clients on a machine that fits N: the N keep their frame rate, the extra one gets a
    503 that says why (before: everyone was let in and every stream slowed to ~12 of 25 fps)."""
    engine = _burning_engine(30.0)          # ~0.8 of a core per 25 fps stream
    cfg = ServerConfig(engine=engine, admission=True, max_sessions=None, stamp=True)
    async with running_server(cfg) as (url, app):
        _, health = await get_json(url + "/health")
        cap = health["capacity"]
        n = cap["fits"]
        assert cap["source"] == "probe" and 0.5 < cap["per_session"] < 2.0, cap
        assert health["max_sessions"] == n >= 1
        clients = [Client(url, PcmTrack(tone(30.0, level=0.2)), keep_images=False) for _ in range(n)]
        extra = Client(url, PcmTrack(tone(1.0)))
        try:
            for c in clients:
                await c.connect()
            for c in clients:
                await c.wait_frames(100, timeout=30)
            with pytest.raises(OfferRejected) as err:
                await extra.connect()
            assert err.value.status == 503 and "capacity" in str(err.value), err.value
            await asyncio.sleep(3.0)
            fps = [_recent_fps(c, 3.0) for c in clients]
            assert all(f >= 24.0 for f in fps), fps
            _, health = await get_json(url + "/health")
            assert health["capacity"]["source"] == "live" and health["capacity"]["refused"] >= 1
        finally:
            await extra.close()
            for c in clients:
                await c.close()
