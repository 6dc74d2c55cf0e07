"""The parts of ``benchmarks.latency`` that its Chromium half shares: the server processes
(the floor, StyleCast with its settings for the benchmark), the microphone scripts (tone bursts,
tone cuts, the barge-in script), the detector of a mouth back at rest and the reference frames.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.av_sync import RATE, tone
from benchmarks.common import child_server, free_port
from benchmarks.loopback import PROBE_DRIVER, burst_track, reference_frames

__all__ = ["PACKET", "burst_track", "cut_track", "interrupt_script", "note", "refs_for", "rest_times",
           "serve_stylecast", "server"]

REPO_ROOT = Path(__file__).resolve().parent.parent
PACKET = 960                      # 20 ms at 48 kHz

_T0 = time.monotonic()


def note(msg: str) -> None:
    print(f"[latency {time.monotonic() - _T0:6.1f} s] {msg}", file=sys.stderr, flush=True)


# -- servers ----------------------------------------------------------------------------------------

def serve_stylecast(args) -> None:
    from aiohttp import web

    from engine.runtime import tune_cpu_allocator
    from engine.session import AvatarEngine
    from streaming.server import ServerConfig, create_app

    if args.device == "cpu":
        tune_cpu_allocator()
    holder: dict = {}
    synthesize = None
    if args.overload:
        budget = args.overload / args.fps

        def synthesize(ws):          # the real synthesis, then padded to `overload` frame intervals
            t = time.perf_counter()
            img = holder["G"].synthesis(ws, noise_mode="const")
            rest = budget - (time.perf_counter() - t)
            if rest > 0:
                time.sleep(rest)
            return img
    engine = AvatarEngine(args.generator, device=args.device, resolution=args.resolution, synthesize=synthesize)
    holder["G"] = engine.G
    cfg = ServerConfig(host="127.0.0.1", port=args.port, generator=args.generator, resolution=engine.resolution,
                       fps=args.fps, max_sessions=2, admission=False, offer_limits=False, engine=engine, stamp=True,
                       stats_interval_s=0.5, driver=PROBE_DRIVER)
    web.run_app(create_app(cfg), host="127.0.0.1", port=args.port, print=lambda *_: None)


@contextlib.asynccontextmanager
async def server(args, mode: str, fps: float, overload: float = 0.0):
    port = free_port()
    cmd = [sys.executable, "-m", "benchmarks.latency", "--serve", mode, "--port", str(port), "--fps", str(fps),
           "--generator", args.generator, "--device", args.device, "--overload", str(overload)]
    if args.resolution:
        cmd += ["--resolution", str(args.resolution)]
    async with child_server(cmd, port) as (url, _, health):
        yield url, health


# -- microphone scripts -----------------------------------------------------------------------------

def cut_track(trials: int, on_s: float = 1.0, off_s: float = 1.2) -> tuple[np.ndarray, list[int]]:
    """Tones of ``on_s`` separated by ``off_s`` of silence; returns the PCM and each cut's packet
    index (the first silent packet)."""
    pcm = np.zeros(int((2.0 + trials * (on_s + off_s) + 5) * RATE), np.int16)
    cuts = []
    for j in range(trials):
        n_on = int(round((2.0 + j * (on_s + off_s)) / 0.02))
        n_cut = n_on + int(round(on_s / 0.02))
        pcm[n_on * PACKET:n_cut * PACKET] = tone(on_s)[:(n_cut - n_on) * PACKET]
        cuts.append(n_cut)
    return pcm, cuts


def interrupt_script(cuts: list[int], every: int = 2):
    """Sends ``{"type": "interrupt"}`` as the first silent packet after every ``every``-th cut is
    handed to the sender; records the send times."""
    sent: list[tuple[int, float]] = []

    async def script(channel, mic):
        for j, n in enumerate(cuts):
            if j % every:
                continue
            while len(mic.sent_at) <= n:
                await asyncio.sleep(0.002)
            channel.send(json.dumps({"type": "interrupt"}))
            sent.append((j, time.monotonic()))
    return script, sent


def rest_times(stamps, times, diffs, threshold: float, starts: list[float], limit_s: float = 1.0) -> list:
    """Per start time: ms to the first frame received after it whose difference from the silent
    face is below ``threshold`` (the mouth at rest), or None."""
    out = []
    for t0 in starts:
        hit = np.flatnonzero((times > t0) & (diffs < threshold))
        out.append(round((times[hit[0]] - t0) * 1e3, 1) if hit.size and times[hit[0]] - t0 < limit_s else None)
    return out



def refs_for(args, mode: str, fps: float, resolution: int):
    if mode == "floor":
        from benchmarks.latency_floor import floor_frame
        return lambda n: np.broadcast_to(floor_frame(resolution), (n, resolution, resolution, 3))
    ref_args = argparse.Namespace(**{**vars(args), "fps": fps})
    return lambda n: reference_frames(ref_args, n)
