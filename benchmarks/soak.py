"""Soak: long streams plus churning clients against a real ``python -m engine.serve`` process.

The server runs in its own process (as users run it, admission on). This process holds
``--long`` clients that stream for the whole run; a churning client in a third process (as a
client on another machine: its joins' key generation and handshakes must not stall the long
streams' client; ``--same-process`` puts it here) connects, streams ``--churn-seconds`` and
leaves, alternately closing properly and vanishing (its UDP sockets shut, no goodbye), then
comes back. Every ``--every`` seconds it samples the server's RSS, threads and
open fds (``/proc``), its sessions (``/health``) and each long stream's received fps. At the end
all clients leave and the idle server is sampled again.

Reported (JSON, and a plot with matplotlib): RSS growth per 10 min after ``--warmup`` (least
squares), threads/fds/sessions at the end against the idle baseline before any client, the long
streams' worst and median fps per window, the churn counts (admitted, refused, vanished).

    python -m benchmarks.soak --minutes 30                 # the issue's run
    python -m benchmarks.soak --minutes 2 --warmup 0.5     # a quick look
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import aiohttp
import numpy as np
from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from benchmarks.common import REPO_ROOT, environment, free_port, wait_health
from streaming.ice import loopback_candidates
from streaming.tracks import PcmTrack

DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results" / "soak.json"
RATE = 48000


def _speechlike(seconds: float) -> np.ndarray:
    t = np.arange(int(seconds * RATE)) / RATE
    return (np.sin(2 * np.pi * 220 * t) * (np.sin(2 * np.pi * 2 * t) > 0) * 8000).astype(np.int16)


class SoakClient:
    def __init__(self, url: str, seconds: float) -> None:
        self.url = url
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self.track = PcmTrack(_speechlike(seconds))
        self.times: list[float] = []
        self.tasks: list[asyncio.Task] = []
        self.session_id: Optional[str] = None
        self.messages: list[dict] = []       # control-channel JSON received (the last 200)

    async def connect(self) -> int:
        """HTTP status of the offer (200: streaming)."""
        pc = self.pc
        pc.addTrack(self.track)
        pc.addTransceiver("video", direction="recvonly")
        self.channel = pc.createDataChannel("control")

        @self.channel.on("message")
        def on_message(message) -> None:
            with contextlib.suppress(ValueError):
                self.messages.append(json.loads(message))
                del self.messages[:-200]

        @pc.on("track")
        def on_track(track) -> None:
            if track.kind == "video":
                self.tasks.append(asyncio.ensure_future(self._consume(track)))

        await pc.setLocalDescription(await pc.createOffer())
        async with aiohttp.ClientSession() as http:
            async with http.post(self.url + "/offer", json={"sdp": pc.localDescription.sdp, "type": "offer"},
                                 timeout=aiohttp.ClientTimeout(total=30)) as r:
                data = await r.json()
                if r.status != 200:
                    return r.status
        self.session_id = data.get("session_id")
        await pc.setRemoteDescription(RTCSessionDescription(sdp=data["sdp"], type=data["type"]))
        return 200

    async def _consume(self, track) -> None:
        while True:
            try:
                await track.recv()
            except MediaStreamError:
                return
            self.times.append(time.monotonic())
            if len(self.times) > 4000:
                del self.times[:2000]

    def fps(self, seconds: float) -> Optional[float]:
        now = time.monotonic()
        t = [x for x in self.times if x >= now - seconds]
        return (len(t) - 1) / (t[-1] - t[0]) if len(t) >= 2 and t[-1] > t[0] else 0.0

    async def close(self) -> None:
        for t in self.tasks:
            t.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.pc.close(), 10)

    def vanish(self) -> None:
        for t in self.tasks:
            t.cancel()
        vanish(self.pc)


def vanish(pc: RTCPeerConnection) -> None:
    """Drop ``pc`` without a goodbye: close its UDP sockets under the connection (no DTLS
    close_notify, no RTCP BYE); the other side only notices that packets stopped."""
    for tr in pc.getTransceivers():
        dtls = tr.receiver.transport or tr.sender.transport
        if dtls is None:
            continue
        for proto in list(getattr(dtls.transport._connection, "_protocols", [])):
            if proto.transport is not None:
                proto.transport.close()


def malloc_heaps(pid: int) -> int:
    """glibc's secondary malloc heaps in the process: anonymous 64 MiB reservations at 64 MiB-
    aligned addresses (a heap's used part then its PROT_NONE rest), from ``/proc/PID/maps``."""
    heap = 64 << 20
    maps = []
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        parts = line.split()
        lo, hi = (int(x, 16) for x in parts[0].split("-"))
        maps.append((lo, hi, len(parts) <= 5))      # anonymous: no file or region name
    count = 0
    for i, (lo, hi, anon) in enumerate(maps):
        if not anon or lo % heap:
            continue
        j, end = i, hi
        while end < lo + heap and j + 1 < len(maps) and maps[j + 1][0] == end and maps[j + 1][2]:
            j += 1
            end = maps[j][1]
        count += end == lo + heap
    return count


def memory_by_kind(pid: int) -> dict:
    """Resident MiB of the process by kind of mapping, from ``/proc/PID/smaps``: ``heap`` (the main
    malloc heap, brk), ``arenas`` (glibc's secondary heaps: anonymous, 64 MiB-aligned reservations),
    ``anon`` (the other anonymous mappings: Python's object arenas, large allocations outside the
    heaps, thread stacks) and ``file`` (code and data of mapped files)."""
    heap = 64 << 20
    regions: list[list] = []                       # [lo, hi, name, rss_kib]
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split(maxsplit=5)
        if "-" in head[0] and len(head) >= 5 and ":" not in head[0]:
            lo, hi = (int(x, 16) for x in head[0].split("-"))
            regions.append([lo, hi, head[5] if len(head) > 5 else "", 0])
        elif line.startswith("Rss:") and regions:
            regions[-1][3] = int(line.split()[1])
    out = {"heap": 0, "arenas": 0, "anon": 0, "file": 0}
    arena_end = -1
    for i, (lo, hi, name, rss) in enumerate(regions):
        if name == "" and lo % heap == 0:          # a secondary heap starts here if it spans 64 MiB
            j, end = i, hi
            while end < lo + heap and j + 1 < len(regions) and regions[j + 1][0] == end and not regions[j + 1][2]:
                j += 1
                end = regions[j][1]
            if end == lo + heap:
                arena_end = end
        if lo < arena_end:
            out["arenas"] += rss
        elif name == "[heap]":
            out["heap"] += rss
        elif name == "" or name.startswith(("[stack", "[anon", "/dev/zero")):   # /dev/zero: shared anonymous
            out["anon"] += rss
        else:
            out["file"] += rss
    return {k: round(v / 1024, 1) for k, v in out.items()}


def proc_sample(pid: int) -> dict:
    status = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return {"rss_mib": int(fields["VmRSS"].split()[0]) / 1024, "threads": int(fields["Threads"]),
            "fds": len(os.listdir(f"/proc/{pid}/fd")), "malloc_heaps": malloc_heaps(pid)}


async def health(url: str) -> dict:
    async with aiohttp.ClientSession() as http:
        async with http.get(url + "/health", timeout=aiohttp.ClientTimeout(total=10)) as r:
            return await r.json()


async def churn(url: str, seconds: float, run_for: float, counts: dict, counts_file: Optional[Path] = None) -> None:
    """A client that connects, streams ``seconds`` and leaves (alternately closing and vanishing),
    again and again for ``run_for`` seconds; ``counts`` (admitted, refused, closed, vanished)
    kept up to date, and written to ``counts_file`` after each change."""
    t0 = time.monotonic()
    k = 0

    def note(key: str) -> None:
        counts[key] += 1
        if counts_file is not None:
            counts_file.write_text(json.dumps(counts))

    with loopback_candidates():
        while time.monotonic() - t0 < run_for:
            c = SoakClient(url, seconds + 5)
            status = await c.connect()
            if status != 200:
                note("refused")
                await c.close()
                await asyncio.sleep(seconds / 2)
                continue
            note("admitted")
            await asyncio.sleep(seconds)
            if k % 2:
                c.vanish()
                note("vanished")
                asyncio.get_running_loop().call_later(20, lambda c=c: asyncio.ensure_future(c.close()))
            else:
                await c.close()
                note("closed")
            k += 1
            await asyncio.sleep(2)


async def soak(args) -> dict:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [sys.executable, "-m", "engine.serve", "--port", str(port), "--host", "127.0.0.1",
           "--log-level", "warning", *args.server_args]
    log_path = args.out.with_suffix(".server.log")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    server_log = open(log_path, "w")     # a pipe nobody reads would block the server once full
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=server_log, stderr=subprocess.STDOUT)
    samples: list[dict] = []
    churned = {"admitted": 0, "refused": 0, "closed": 0, "vanished": 0}
    try:
        await wait_health(url, proc, timeout=180)
        await asyncio.sleep(3)
        baseline = {**proc_sample(proc.pid), "sessions": (await health(url))["sessions"]}
        total = args.minutes * 60
        t0 = time.monotonic()
        with loopback_candidates():
            longs = [SoakClient(url, total + 60) for _ in range(args.long)]
            for c in longs:
                if await c.connect() != 200:
                    raise RuntimeError("a long stream was refused: lower --long or raise the capacity")

            counts_file = args.out.with_suffix(".churn.json")
            counts_file.unlink(missing_ok=True)
            if args.same_process:
                churn_task = asyncio.ensure_future(churn(url, args.churn_seconds, total - args.churn_seconds, churned))
                churner = None
            else:      # its joins (DTLS, key generation) would otherwise stall the long streams' client
                churn_task = None
                churner = subprocess.Popen([sys.executable, "-m", "benchmarks.soak", "--churn-only", url,
                                            "--churn-for", str(total - args.churn_seconds), "--churn-seconds",
                                            str(args.churn_seconds), "--out", str(counts_file)], cwd=REPO_ROOT)
            while time.monotonic() - t0 < total:
                await asyncio.sleep(args.every)
                h = await health(url)
                cap = h.get("capacity") or {}
                row = {"t_s": round(time.monotonic() - t0, 1), **proc_sample(proc.pid), "sessions": h["sessions"],
                       "long_fps": [round(c.fps(args.every) or 0.0, 2) for c in longs],
                       "mem": memory_by_kind(proc.pid), "evicted": cap.get("evicted"), "refused": cap.get("refused")}
                if churner is not None and counts_file.exists():
                    with contextlib.suppress(ValueError):
                        churned.update(json.loads(counts_file.read_text()))
                samples.append(row)
                print(f"[soak {row['t_s']:7.1f} s] rss {row['rss_mib']:.1f} MiB {row['mem']} threads {row['threads']} "
                      f"fds {row['fds']} heaps {row['malloc_heaps']} sessions {row['sessions']} fps {row['long_fps']} churn {churned}", flush=True)
            if churn_task is not None:
                churn_task.cancel()
                await asyncio.gather(churn_task, return_exceptions=True)
            if churner is not None:
                try:
                    await asyncio.get_running_loop().run_in_executor(None, churner.wait, 60)
                except subprocess.TimeoutExpired:
                    churner.kill()
                with contextlib.suppress(FileNotFoundError, ValueError):
                    churned.update(json.loads(counts_file.read_text()))
            for c in longs:
                await c.close()
        # idle again: the watchdog frees vanished clients within its timeouts
        await asyncio.sleep(args.settle)
        end = {**proc_sample(proc.pid), "sessions": (await health(url))["sessions"]}
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        server_log.close()
    warm = [s for s in samples if s["t_s"] >= args.warmup * 60]
    slope = None
    if len(warm) >= 3:
        t = np.array([s["t_s"] for s in warm]) / 600.0
        slope = float(np.polyfit(t, np.array([s["rss_mib"] for s in warm]), 1)[0])
    fps = [f for s in warm for f in s["long_fps"]]
    return {"benchmark": "soak", "server_log": str(log_path), "minutes": args.minutes, "warmup_minutes": args.warmup, "long": args.long,
            "churn_seconds": args.churn_seconds, "server_args": args.server_args, "baseline": baseline, "end": end,
            "rss_growth_mib_per_10min": slope, "long_fps_min": min(fps) if fps else None,
            "long_fps_median": float(np.median(fps)) if fps else None, "churn": churned, "samples": samples,
            "churn_in": "this process" if args.same_process else "its own process"}


def plot(report: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    s = report["samples"]
    t = [x["t_s"] / 60 for x in s]
    fig, axes = plt.subplots(4, 1, figsize=(7, 8), sharex=True)
    axes[0].plot(t, [x["rss_mib"] for x in s])
    axes[0].set_ylabel("RSS MiB")
    axes[1].plot(t, [x["threads"] for x in s], label="threads")
    axes[1].plot(t, [x["fds"] for x in s], label="fds")
    axes[1].legend(fontsize=8)
    axes[2].plot(t, [x["sessions"] for x in s])
    axes[2].set_ylabel("sessions")
    for i in range(report["long"]):
        axes[3].plot(t, [x["long_fps"][i] for x in s], label=f"long {i}")
    axes[3].axhline(24, color="grey", ls=":")
    axes[3].set_ylabel("fps")
    axes[3].set_xlabel("minutes")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.soak", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=30.0, help="length of the run (default 30)")
    ap.add_argument("--warmup", type=float, default=2.0, help="minutes left out of the RSS slope (default 2)")
    ap.add_argument("--long", type=int, default=1, help="streams that last the whole run (default 1)")
    ap.add_argument("--churn-seconds", type=float, default=20.0, help="how long a churning client streams (default 20)")
    ap.add_argument("--every", type=float, default=5.0, help="seconds between samples (default 5)")
    ap.add_argument("--settle", type=float, default=15.0, help="seconds of idle before the last sample (default 15)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="JSON report (a .png beside it)")
    ap.add_argument("--same-process", action="store_true",
                    help="run the churning client in this process (default: its own, as clients on other machines)")
    ap.add_argument("--churn-only", metavar="URL", help=argparse.SUPPRESS)      # the churning child
    ap.add_argument("--churn-for", type=float, default=0.0, help=argparse.SUPPRESS)
    ap.add_argument("server_args", nargs="*", help="extra engine.serve arguments (after --)")
    args = ap.parse_args(argv)
    if args.churn_only:
        counts = {"admitted": 0, "refused": 0, "closed": 0, "vanished": 0}
        asyncio.run(churn(args.churn_only, args.churn_seconds, args.churn_for, counts, args.out))
        return 0
    report = asyncio.run(soak(args))
    import torch
    report["environment"] = environment(torch.device("cpu"))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    with contextlib.suppress(ImportError):
        plot(report, args.out.with_suffix(".png"))
    b, e = report["baseline"], report["end"]
    print(f"RSS growth after warm-up: {report['rss_growth_mib_per_10min']} MiB / 10 min; idle before/after: "
          f"threads {b['threads']}/{e['threads']}, fds {b['fds']}/{e['fds']}, sessions {b['sessions']}/{e['sessions']}, "
          f"RSS {b['rss_mib']:.1f}/{e['rss_mib']:.1f} MiB; long fps min {report['long_fps_min']} median "
          f"{report['long_fps_median']}; churn {report['churn']}")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
