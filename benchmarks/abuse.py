"""Abuse of the live paths against a real ``python -m engine.serve`` process (defaults: admission,
per-address limits), while one client streams: what every hostile request got back, and that
client's frame rate during each phase against a quiet baseline.

Phases (the cases are ``benchmarks.abuse_cases``):
  sdp       every SDP mutation (1,390), each from its own loopback address (127.2.x.y), so the
            per-address limit does not hide the validation from a spread-out attacker
  json      type-confused, oversize, deeply nested and mis-encoded ``POST /offer`` bodies
  slow      ``--slow`` clients sending one byte a second (half still in the headers, half in the body)
  halfopen  ``--half-open`` TCP connections that never finish a request
  control   a second client floods its control channel at 1,000 messages/s (hostile ones among them)

    python -m benchmarks.abuse                      # all phases, JSON in benchmarks/results/abuse.json
    python -m benchmarks.abuse --phases sdp json    # some
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import json
import sys
import time
from pathlib import Path

import aiohttp

from benchmarks.abuse_cases import (
    STATUS_OK,
    control_messages,
    half_open,
    json_bodies,
    real_offer,
    sdp_mutations,
    slow_request,
)
from benchmarks.common import REPO_ROOT, environment, serve_process
from benchmarks.soak import SoakClient, health, proc_sample
from streaming.ice import loopback_candidates

DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results" / "abuse.json"
PHASES = ("sdp", "json", "slow", "halfopen", "control")


async def _post(url: str, body: bytes, headers: dict, local: str | None = None) -> int | str:
    connector = aiohttp.TCPConnector(local_addr=(local, 0)) if local else None
    try:
        async with aiohttp.ClientSession(connector=connector) as http:
            async with http.post(url + "/offer", data=body, headers=headers,
                                 timeout=aiohttp.ClientTimeout(total=30)) as r:
                await r.read()
                return r.status
    except aiohttp.ClientError as exc:        # answered early and closed (an oversize body)
        return type(exc).__name__


async def phase_sdp(url: str, sdp: str, counts: collections.Counter, names: dict) -> None:
    for k, (name, text) in enumerate(sdp_mutations(sdp)):
        status = await _post(url, json.dumps({"type": "offer", "sdp": text}).encode(),
                             {"Content-Type": "application/json"}, local=f"127.2.{k // 250}.{k % 250 + 1}")
        counts[status] += 1
        if status not in STATUS_OK:
            names.setdefault(str(status), []).append(name)


async def phase_json(url: str, sdp: str, counts: collections.Counter, names: dict) -> None:
    for k, (name, body, headers) in enumerate(json_bodies(sdp)):
        status = await _post(url, body, headers, local=f"127.3.0.{k % 250 + 1}")
        if isinstance(status, str) and len(body) > 64 * 1024:
            status = "closed early (oversize)"        # the server answered 413 before the body was sent
        counts[status] += 1
        if status not in STATUS_OK and status != "closed early (oversize)":
            names.setdefault(str(status), []).append(name)


async def phase_slow(url: str, n: int, counts: collections.Counter) -> None:
    host, port = "127.0.0.1", int(url.rsplit(":", 1)[1])
    head = (f"POST /offer HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            "Content-Length: 5000\r\n").encode()
    results = await asyncio.gather(
        *[slow_request(host, port, head, byte_every_s=1.0, max_s=60.0) for _ in range(n // 2)],
        *[slow_request(host, port, b'{"type":"offer"', byte_every_s=1.0, max_s=60.0, at_once=head + b"\r\n")
          for _ in range(n - n // 2)])
    for i, (status, seconds) in enumerate(results):
        kind = "headers" if i < n // 2 else "body"
        counts[f"{kind}: {status if status is not None else 'closed'}"] += 1
        counts[f"{kind} max s"] = max(counts[f"{kind} max s"], round(seconds, 1))


async def phase_halfopen(url: str, n: int, counts: collections.Counter) -> None:
    host, port = "127.0.0.1", int(url.rsplit(":", 1)[1])
    t0 = time.monotonic()
    conns = await half_open(host, port, n // 2) + await half_open(host, port, n - n // 2, b"GET /hea")
    try:
        _, h = await _timed_health(url)
        counts["health ms while open"] = round(h * 1e3, 1)
        done = await asyncio.wait_for(asyncio.gather(*[r.read() for r, _ in conns], return_exceptions=True), 120)
        counts["closed by the server"] = sum(1 for d in done if d == b"")
        counts["closed after s"] = round(time.monotonic() - t0, 1)
    finally:
        for _, w in conns:
            w.close()


async def _timed_health(url: str) -> tuple[dict, float]:
    t = time.monotonic()
    return await health(url), time.monotonic() - t


async def phase_control(url: str, seconds: float, counts: collections.Counter) -> None:
    flooder = SoakClient(url, seconds + 30)
    messages: list = []
    if await flooder.connect() != 200:
        counts["flooder refused"] += 1
        return
    channel = flooder.channel
    channel.on("message", messages.append)
    try:
        t_end = time.monotonic() + 15
        while channel.readyState != "open" and time.monotonic() < t_end:
            await asyncio.sleep(0.05)
        hostile = control_messages()
        sent = 0
        for _ in range(int(seconds * 10)):
            for i in range(100):
                channel.send(hostile[i % len(hostile)] if i % 10 == 0 else '{"type":"dance"}')
                sent += 1
            await asyncio.sleep(0.1)
        await asyncio.sleep(1.0)
        counts["sent"] = sent
        counts["answered"] = sum(1 for m in messages if '"error"' in m)
        counts["flooder fps"] = round(flooder.fps(seconds) or 0.0, 2)
    finally:
        await flooder.close()


async def run(args) -> dict:
    log_path = args.out.with_suffix(".server.log")
    report: dict = {"benchmark": "abuse", "server_args": args.server_args, "phases": {}}
    async with serve_process(args.server_args, log_path) as (url, proc):
        sdp = await real_offer()
        with loopback_candidates():
            victim = SoakClient(url, 3600)
            if await victim.connect() != 200:
                raise RuntimeError("the streaming client was refused")
            await asyncio.sleep(5)
            await asyncio.sleep(args.baseline)
            report["baseline_fps"] = round(victim.fps(args.baseline) or 0.0, 2)
            report["baseline_proc"] = proc_sample(proc.pid)
            for phase in args.phases:
                counts: collections.Counter = collections.Counter()
                names: dict = {}
                t0, n0 = time.monotonic(), len(victim.times)
                if phase == "sdp":
                    await phase_sdp(url, sdp, counts, names)
                elif phase == "json":
                    await phase_json(url, sdp, counts, names)
                elif phase == "slow":
                    await phase_slow(url, args.slow, counts)
                elif phase == "halfopen":
                    await phase_halfopen(url, args.half_open, counts)
                elif phase == "control":
                    await phase_control(url, args.control_seconds, counts)
                seconds = time.monotonic() - t0
                fps = (len(victim.times) - n0) / seconds
                alive = proc.poll() is None
                report["phases"][phase] = {"seconds": round(seconds, 1), "other_client_fps": round(fps, 2),
                                           "answers": {str(k): v for k, v in counts.items()},
                                           "unexpected": names, "server_alive": alive,
                                           "server": proc_sample(proc.pid) if alive else None}
                print(f"[abuse] {phase}: {seconds:.1f} s, other client {fps:.2f} fps, "
                      f"answers {dict(counts)}{'; UNEXPECTED ' + str(names) if names else ''}"
                      f"{'' if alive else '; SERVER DIED'}", flush=True)
                if not alive:
                    break
                await asyncio.sleep(args.gap)
            await victim.close()
        report["server_alive_at_end"] = proc.poll() is None
        report["health_at_end"] = await health(url) if report["server_alive_at_end"] else None
    text = Path(log_path).read_text(errors="replace")
    report["server_log"] = str(log_path)
    report["server_tracebacks"] = text.count("Traceback (most recent call last)")
    report["server_errors"] = sum(1 for line in text.splitlines() if " ERROR " in line)
    return report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.abuse", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--phases", nargs="+", choices=PHASES, default=list(PHASES))
    ap.add_argument("--slow", type=int, default=40, help="slow clients (default 40)")
    ap.add_argument("--half-open", type=int, default=200, help="half-open connections (default 200)")
    ap.add_argument("--control-seconds", type=float, default=10.0, help="length of the control flood (default 10)")
    ap.add_argument("--baseline", type=float, default=10.0, help="quiet seconds measured first (default 10)")
    ap.add_argument("--gap", type=float, default=6.0, help="quiet seconds between phases (default 6)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON report")
    ap.add_argument("server_args", nargs="*", help="extra engine.serve arguments (after --)")
    args = ap.parse_args(argv)
    report = asyncio.run(run(args))
    import torch
    report["environment"] = environment(torch.device("cpu"))
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"baseline {report['baseline_fps']} fps; server alive {report['server_alive_at_end']}, "
          f"{report['server_tracebacks']} tracebacks and {report['server_errors']} ERROR lines in its log")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
