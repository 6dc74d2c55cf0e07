"""Hostile inputs for the server's live paths, built deterministically (no randomness, no files):
SDP offers mutated line by line and field by field, type-confused and oversize JSON bodies, and
raw-socket clients that are slow or never finish. ``benchmarks.abuse`` sends them at a running
server and counts the answers; ``tests/streaming/test_abuse.py`` asserts on them."""
from __future__ import annotations

import asyncio
import json
import re
from typing import Iterator, Optional

from aiortc import RTCConfiguration, RTCPeerConnection

from streaming.ice import loopback_candidates

__all__ = ["real_offer", "sdp_mutations", "json_bodies", "control_messages", "slow_request",
           "half_open", "STATUS_OK"]

#: answers a hostile request may get: accepted (a well-formed offer), refused, or full
STATUS_OK = {200, 400, 403, 404, 405, 408, 413, 415, 429, 503}

_FUZZ_VALUES = ["", "x", "-1", "0", "65536", "99999999999999999999", "1e5", "NaN", "\x00", "é☃",
                "%s%s%n", "A" * 2000, " ", "::", "127.0.0E1", "-"]
_NUMBER = re.compile(r"(?<![\w.:-])\d+(?![\w.:-])")


async def real_offer() -> str:
    """An aiortc client's offer as the page makes it: audio sendrecv, video recvonly, the control
    data channel, loopback host candidates."""
    with loopback_candidates(True):
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        try:
            pc.addTransceiver("audio", direction="sendrecv")
            pc.addTransceiver("video", direction="recvonly")
            pc.createDataChannel("control")
            await pc.setLocalDescription(await pc.createOffer())
            return pc.localDescription.sdp
        finally:
            await pc.close()


def sdp_mutations(sdp: str) -> list[tuple[str, str]]:
    """``[(name, mutated sdp)]``, distinct, in a fixed order: each line deleted, doubled and moved
    to the front; each line's value replaced by each of ``_FUZZ_VALUES`` (every third line, all
    values) ; each number replaced by out-of-range ones; structural changes (line endings, BOM,
    thousands of m-lines or candidates, missing sections, reordered m-lines, truncations)."""
    lines = sdp.replace("\r\n", "\n").strip("\n").split("\n")
    out: list[tuple[str, str]] = []
    seen: set[str] = set()

    def add(name: str, body: list[str] | str, eol: str = "\r\n") -> None:
        text = body if isinstance(body, str) else eol.join(body) + eol
        if text not in seen:
            seen.add(text)
            out.append((name, text))

    for i, line in enumerate(lines):
        add(f"delete line {i} ({line[:24]})", lines[:i] + lines[i + 1:])
        add(f"double line {i}", lines[:i + 1] + lines[i:])
        if i:
            add(f"line {i} first", [line] + lines[:i] + lines[i + 1:])
    for i, line in enumerate(lines):
        if "=" not in line:
            continue
        key, _, value = line.partition("=")
        values = _FUZZ_VALUES if i % 3 == 0 else _FUZZ_VALUES[:4]
        for v in values:
            add(f"line {i} value {v[:12]!r}", lines[:i] + [f"{key}={v}"] + lines[i + 1:])
        if ":" in value:                                   # a=attr:value -> attr kept, value fuzzed
            attr = value.split(":", 1)[0]
            for v in ("", "\x00\x01", "9" * 40, "a" * 5000):
                add(f"line {i} {attr} value {v[:8]!r}", lines[:i] + [f"{key}={attr}:{v}"] + lines[i + 1:])
    numbers = [(i, m) for i, line in enumerate(lines) for m in _NUMBER.finditer(line)]
    for k, (i, m) in enumerate(numbers):
        for v in ("-1", "65536", "4294967296", "18446744073709551616", "0x10", "1.5")[: 6 if k % 2 == 0 else 2]:
            line = lines[i]
            add(f"line {i} number {m.group()} -> {v}", lines[:i] + [line[:m.start()] + v + line[m.end():]] + lines[i + 1:])
    media = [i for i, line in enumerate(lines) if line.startswith("m=")]
    head, sections = lines[:media[0]], [lines[a:b] for a, b in zip(media, media[1:] + [len(lines)])]
    video = next(s for s in sections if s[0].startswith("m=video"))
    add("LF line endings", lines, eol="\n")
    add("CR line endings", lines, eol="\r")
    add("no final line ending", "\r\n".join(lines))
    add("byte-order mark", "\ufeff" + "\r\n".join(lines) + "\r\n")
    add("NUL after v=0", ["v=0\x00"] + lines[1:])
    add("session part only", head)
    add("media part only", [x for s in sections for x in s])
    add("m-lines reversed", head + [x for s in reversed(sections) for x in s])
    add("video section only", head + video)
    add("video section twice", head + [x for s in sections for x in s] + video)
    add("2000 candidates", lines + [f"a=candidate:{n} 1 udp {n} 127.0.0.1 {1024 + n} typ host" for n in range(2000)])
    add("500 m-lines", head + [x for _ in range(500) for x in video])
    add("1000 extmaps", lines + [f"a=extmap:{n} urn:x:{n}" for n in range(1000)])
    add("unknown media kind", [line.replace("m=video", "m=hologram") for line in lines])
    add("unknown proto", [line.replace("UDP/TLS/RTP/SAVPF", "TCP/WHAT") for line in lines])
    add("fingerprint sha-1 only", [x for x in lines if not x.startswith("a=fingerprint:sha-")]
        + ["a=fingerprint:sha-1 00"])
    add("fingerprint unknown algorithm", [re.sub(r"fingerprint:sha-\d+", "fingerprint:md17", x) for x in lines])
    add("fingerprint not hex", [re.sub(r"([0-9A-F]{2}:){4}", "ZZ:ZZ:ZZ:ZZ:", x) for x in lines])
    for setup in ("active", "passive", "holdconn", "bogus", ""):
        add(f"setup {setup!r}", [x.replace("a=setup:actpass", f"a=setup:{setup}") for x in lines])
    for direction in ("inactive", "sendonly", "bogus"):
        add(f"video {direction}", [x if x != "a=recvonly" else f"a={direction}" for x in lines])
    add("IPv6 candidate", [x.replace(" 127.0.0.1 ", " ::1 ") for x in lines])
    add("hostname candidate", [x.replace(" 127.0.0.1 ", " localhost ") for x in lines])
    add("mDNS candidate", [x.replace(" 127.0.0.1 ", " 0f0e-aa.local ") for x in lines])
    add("tcp candidate", [x.replace(" udp ", " tcp ").replace(" typ host", " typ host tcptype passive")
                          for x in lines])
    add("candidate component 9", [x.replace(" 1 udp ", " 9 udp ") for x in lines])
    add("relay candidate without raddr", [x.replace("typ host", "typ relay") for x in lines])
    add("bundle names a missing mid", [x.replace("a=group:BUNDLE 0 1 2", "a=group:BUNDLE 0 1 2 7") for x in lines])
    add("duplicate mids", [x.replace("a=mid:1", "a=mid:0") for x in lines])
    add("huge ice-pwd", [("a=ice-pwd:" + "p" * 4000) if x.startswith("a=ice-pwd") else x for x in lines])
    add("no ice credentials", [x for x in lines if not x.startswith(("a=ice-ufrag", "a=ice-pwd"))])
    add("rtpmap payload 300", [x.replace("a=rtpmap:97 ", "a=rtpmap:300 ") for x in lines])
    add("rtx loop", [x.replace("apt=97", "apt=98") for x in lines])
    add("sctp-port 0", [x.replace("a=sctp-port:5000", "a=sctp-port:0") for x in lines])
    add("max-message-size -1", [re.sub(r"max-message-size:\d+", "max-message-size:-1", x) for x in lines])
    text = "\r\n".join(lines) + "\r\n"
    for frac in (0.1, 0.25, 0.5, 0.75, 0.9, 0.99):
        add(f"truncated at {frac:.0%}", text[: int(len(text) * frac)])
    return out


def json_bodies(sdp: str) -> Iterator[tuple[str, bytes, dict]]:
    """``(name, body, headers)`` for ``POST /offer``: type confusion in every field, oversize,
    deep nesting, bad encodings and numbers JSON should not hold."""
    j = {"Content-Type": "application/json"}
    good = {"type": "offer", "sdp": sdp}

    def body(obj) -> bytes:
        return json.dumps(obj).encode()

    for value in (None, 1, 1.5, True, [], {}, [sdp], {"sdp": sdp}, "", "offer"):
        yield f"sdp = {json.dumps(value)[:20]}", body({**good, "sdp": value}), j
        yield f"type = {json.dumps(value)[:20]}", body({**good, "type": value}), j
    for ident in (None, [], "x", 1, {"seed": "1"}, {"seed": 1.5}, {"seed": True}, {"seed": -1}, {"seed": 2 ** 64},
                  {"seed": None}, {"seed": 1, "truncation": "a"}, {"seed": 1, "truncation": [1]},
                  {"seed": 1, "truncation": 1e308}, {"seed": {"seed": 1}}):
        if ident is not None:
            yield f"identity = {json.dumps(ident)[:30]}", body({**good, "identity": ident}), j
    for literal in ("NaN", "Infinity", "-Infinity", "1e999", "-0"):
        yield f"truncation {literal}", (f'{{"type":"offer","sdp":{json.dumps(sdp)},'
                                        f'"identity":{{"seed":1,"truncation":{literal}}}}}').encode(), j
    for top in ("[]", "null", "true", "1", '"offer"', "[" + json.dumps(good) + "]"):
        yield f"top level {top[:12]}", top.encode(), j
    yield "duplicate keys", f'{{"type":"offer","sdp":{json.dumps(sdp)},"sdp":1}}'.encode(), j
    yield "lone surrogate", b'{"type":"offer","sdp":"\\ud800"}', j
    yield "latin-1 bytes", b'{"type":"offer","sdp":"\xe9"}', j
    yield "UTF-16", json.dumps(good).encode("utf-16"), j
    yield "BOM", b"\xef\xbb\xbf" + body(good), j
    yield "empty body", b"", j
    yield "whitespace body", b" " * 1000, j
    yield "nested arrays 60000", b"[" * 60_000, j
    yield "nested objects 20000", b'{"a":' * 20_000 + b"1" + b"}" * 20_000, j
    yield "64 KiB + 1", body({**good, "pad": "x" * (64 * 1024)}), j
    yield "10 MB", b'{"type":"offer","sdp":"' + b"v" * 10_000_000 + b'"}', j
    yield "6000 keys", body({f"k{i}": i for i in range(6000)}), j
    yield "long number", b'{"type":"offer","sdp":' + b"9" * 60_000 + b"}", j
    yield "gzip that is not", body(good), {**j, "Content-Encoding": "gzip"}
    yield "deflate that is not", body(good), {**j, "Content-Encoding": "deflate"}
    yield "unknown encoding", body(good), {**j, "Content-Encoding": "zstd-xyz"}
    yield "text/plain", body(good), {"Content-Type": "text/plain"}
    yield "form", b"type=offer&sdp=x", {"Content-Type": "application/x-www-form-urlencoded"}
    yield "json with charset", body(good).replace(b"v=0", b"v=1"), {"Content-Type": "application/json; charset=latin-1"}
    yield "foreign origin", body(good), {**j, "Origin": "https://evil.example"}
    yield "null origin", body(good), {**j, "Origin": "null"}


def control_messages() -> list[str]:
    """Data-channel messages a client may send: type confusion, deep nesting, huge strings."""
    out = ['{"type":"dance"}', "[" * 3000, "[" * 5000, '{"type":' * 3000, "y" * 60_000, "", "null", "[]", "1", '"identity"',
           '{"type":1}', '{"type":"identity"}', '{"type":"identity","seed":"1"}', '{"type":"identity","seed":-1}',
           '{"type":"identity","seed":1,"truncation":NaN}', '{"type":"identity","seed":1e400}',
           '{"type":"interrupt","x":' + "[" * 900 + "]" * 900 + "}", "\x00" * 100, '{"type":"\\ud800"}']
    return out


async def slow_request(host: str, port: int, request: bytes, *, byte_every_s: float, max_s: float,
                       at_once: bytes = b"") -> tuple[Optional[int], float]:
    """Send ``at_once``, then ``request`` one byte every ``byte_every_s`` s. Returns (the HTTP
    status, or None when the server closed without one or did nothing; the seconds until it
    answered or closed, ``max_s`` if it did neither)."""
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    reader, writer = await asyncio.open_connection(host, port)

    async def feed() -> None:
        writer.write(at_once)
        for b in request:
            writer.write(bytes([b]))
            await writer.drain()
            await asyncio.sleep(byte_every_s)

    feeder = asyncio.ensure_future(feed())
    try:
        line = await asyncio.wait_for(reader.readline(), max_s)
        return (int(line.split()[1]) if line.startswith(b"HTTP/") else None), loop.time() - t0
    except asyncio.TimeoutError:
        return None, max_s
    except (ConnectionError, OSError):
        return None, loop.time() - t0
    finally:
        feeder.cancel()
        await asyncio.gather(feeder, return_exceptions=True)
        writer.close()


async def half_open(host: str, port: int, n: int, partial: bytes = b"") -> list[tuple]:
    """``n`` TCP connections that send ``partial`` (possibly nothing) and then nothing more: the
    peer neither finishes a request nor closes. Returns the (reader, writer) pairs (the caller
    closes them)."""
    conns = []
    for _ in range(n):
        reader, writer = await asyncio.open_connection(host, port)
        if partial:
            writer.write(partial)
        conns.append((reader, writer))
    return conns


async def offer_flood(url: str, n: int, sdp: Optional[str] = None, first: int = 1) -> dict[int, int]:
    """``n`` well-formed offers, each from its own loopback address (127.4.x.y), one after the
    other as fast as they are answered: {HTTP status: count}."""
    import aiohttp

    sdp = sdp or await real_offer()
    counts: dict[int, int] = {}
    for k in range(first, first + n):
        connector = aiohttp.TCPConnector(local_addr=(f"127.4.{k // 250}.{k % 250 + 1}", 0))
        async with aiohttp.ClientSession(connector=connector) as http:
            async with http.post(url + "/offer", json={"type": "offer", "sdp": sdp},
                                 timeout=aiohttp.ClientTimeout(total=30)) as r:
                await r.read()
                counts[r.status] = counts.get(r.status, 0) + 1
    return counts


if __name__ == "__main__":          # python -m benchmarks.abuse_cases flood URL N: an attacker in its own process
    import sys

    if len(sys.argv) != 4 or sys.argv[1] != "flood":
        sys.exit("usage: python -m benchmarks.abuse_cases flood URL N")
    print(json.dumps(asyncio.run(offer_flood(sys.argv[2], int(sys.argv[3])))))
