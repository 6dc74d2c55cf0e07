"""streaming.limits.OfferLimiter, and the server barring an address whose offers never connect."""
from __future__ import annotations

import asyncio

import aiohttp
from aiortc import RTCConfiguration, RTCPeerConnection

from rtc_util import Client, OfferRejected, PcmTrack, get_json, running_server, tone
from streaming.limits import OfferLimiter
from streaming.server import STATE_KEY, ServerConfig


def test_burst_bound_and_unconnected_penalty():
    lim = OfferLimiter(per_window=3, window_s=10, unconnected_max=2, penalty_s=60)
    assert [lim.check("a", now=t) for t in (0, 1, 2)] == [None] * 3
    assert "3 per 10 s" in lim.check("a", now=3)
    assert lim.check("b", now=3) is None                     # other addresses are not affected
    assert lim.check("a", now=10.5) is None                  # the window moved on
    lim.unconnected("c", now=20)
    assert lim.check("c", now=21) is None
    lim.unconnected("c", now=22)
    assert "never connected; try again in 60 s" in lim.check("c", now=22)
    assert lim.check("c", now=83) is None and lim.refused == 2
    flood = OfferLimiter(global_rate=2.0, global_burst=4)      # many addresses: the server-wide bucket
    assert sum(flood.check(f"10.1.0.{i}", now=50.0) is None for i in range(10)) == 4
    assert "too many sessions at once" in flood.check("10.1.1.1", now=50.1)
    assert sum(flood.check(f"10.2.0.{i}", now=51.6) is None for i in range(10)) == 3   # 0.1 left + 1.5 s × 2/s
    small = OfferLimiter(max_addresses=2)
    for i in range(5):
        small.check(f"10.0.0.{i}", now=0)
    assert len(small._offers) == 2                           # memory stays bounded


async def test_offers_that_never_connect_bar_their_address(engine):
    """Before: an offer that never completed ICE held its slot 15 s, so two POSTs every 15 s kept
    a 2-session server full. Now the slot is freed after connect_timeout_s and three such offers
    bar the address (429) for a minute."""
    cfg = ServerConfig(engine=engine, admission=False, max_sessions=4, connect_timeout_s=1.0)
    async with running_server(cfg) as (url, app):
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        pc.addTransceiver("video", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        body = {"type": "offer", "sdp": pc.localDescription.sdp}
        async with aiohttp.ClientSession() as http:
            for _ in range(3):                               # answers never applied: ICE never starts
                async with http.post(url + "/offer", json=body) as r:
                    assert r.status == 200, await r.text()
                await asyncio.sleep(0.2)
            for _ in range(60):
                if not len(app[STATE_KEY].registry):
                    break
                await asyncio.sleep(0.1)
            _, health = await get_json(url + "/health")
            assert health["sessions"] == 0                   # freed after ~1 s each
        await pc.close()
        client = Client(url, PcmTrack(tone(0.5)))
        try:
            try:
                await client.connect()
                raise AssertionError("the address should be barred")
            except OfferRejected as exc:
                assert exc.status == 429 and "never connected" in str(exc)
        finally:
            await client.close()
