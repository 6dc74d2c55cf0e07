"""What a session leaves behind in the server's Python heap: sessions churned against an
in-process server (the demo engine; half close, half vanish), then, after ``gc.collect()``, the live
objects by type and the ``tracemalloc`` difference (Python and numpy memory, by line) against a
snapshot taken after a few warm-up sessions. The soak measures the process from outside; this
says whether what grows is Python's.

    python -m benchmarks.churn_objects                  # 20 sessions, JSON in benchmarks/results/churn_objects.json
"""
from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import json
import sys
import tracemalloc
from pathlib import Path

from benchmarks.common import REPO_ROOT
from benchmarks.soak import SoakClient
from streaming.ice import loopback_candidates

DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results" / "churn_objects.json"


def live_types() -> collections.Counter:
    gc.collect()
    return collections.Counter(f"{type(o).__module__!s}.{type(o).__qualname__!s}" for o in gc.get_objects())


async def run(args) -> dict:
    from aiohttp import web

    from engine.session import AvatarEngine
    from streaming.server import STATE_KEY, ServerConfig, create_app, http_options

    config = ServerConfig(engine=AvatarEngine("demo"), admission=False, offer_limits=False, max_sessions=64)
    app = create_app(config)
    runner = web.AppRunner(app, handle_signals=False, **http_options(config))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}"

    async def one(vanish: bool) -> None:
        client = SoakClient(url, args.seconds + 5)
        if await client.connect() != 200:
            raise RuntimeError("a session was refused")
        await asyncio.sleep(args.seconds)
        if vanish:
            client.vanish()
        else:
            await client.close()

    try:
        with loopback_candidates():
            for _ in range(args.warmup):
                await one(False)
            await asyncio.sleep(config.idle_timeout_s + 3)
            before, snap0 = live_types(), tracemalloc.take_snapshot()
            for i in range(args.sessions):
                await one(i % 2 == 1)
            await asyncio.sleep(config.idle_timeout_s + 3)       # the vanished ones' watchdogs
            after = live_types()
            snap1 = tracemalloc.take_snapshot()
    finally:
        await asyncio.wait_for(runner.cleanup(), 30)
    stats = [s for s in snap1.compare_to(snap0, "lineno") if __file__ not in str(s.traceback)]
    grown = {k: after[k] - before.get(k, 0) for k in after if after[k] - before.get(k, 0) > 0}
    traced = sum(s.size_diff for s in stats)
    return {"benchmark": "churn_objects", "sessions": args.sessions, "seconds_each": args.seconds,
            "traced_growth_kib": round(traced / 1024, 1),
            "traced_growth_kib_per_session": round(traced / 1024 / args.sessions, 2),
            "top_lines": [{"where": str(s.traceback), "kib": round(s.size_diff / 1024, 1), "count": s.count_diff}
                          for s in stats[:15]],
            "live_objects_grown": dict(sorted(grown.items(), key=lambda kv: -kv[1])[:20]),
            "clients_left": len(app[STATE_KEY].clients)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.churn_objects", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sessions", type=int, default=20)
    ap.add_argument("--seconds", type=float, default=3.0, help="how long each session streams")
    ap.add_argument("--warmup", type=int, default=3, help="sessions before the first snapshot")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    tracemalloc.start(4)
    try:
        report = asyncio.run(run(args))
    finally:
        tracemalloc.stop()               # (a caller's process, e.g. a test run, goes on untraced)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: report[k] for k in ("sessions", "traced_growth_kib", "traced_growth_kib_per_session")}))
    for line in report["top_lines"][:8]:
        print(f"  {line['kib']:+8.1f} KiB  {line['count']:+6d}  {line['where']}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
