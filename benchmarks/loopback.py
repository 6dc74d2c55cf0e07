"""End-to-end WebRTC loopback: frames/s delivered and audio → pixels latency, measured in-band.

A server (``streaming.server``, its own process, frame index stamped into each image) and an
aiortc client on 127.0.0.1. The client's "microphone" plays silence with tone bursts; for each
burst the latency is the wall time from handing the 20 ms packet holding the burst onset to the
client's RTP sender until the client has *decoded* the first frame whose face differs from the
silent face of the same frame index (rendered offline by an identical AvatarSession fed zeros;
the idle motion is seeded, so the only difference is the mouth). So it covers Opus encode, the
network, the server's receive path, resampler lag, feature lookahead, the motion driver's
attack, synthesis, VP8 encode, the client's video jitter buffer and decode.

Also measured: the audio receive hold of aiortc's stock jitter buffer vs the no-wait buffer the
server installs (``streaming.jitter.install_no_wait_audio``), and the server's per-stage
timings (reported over the "control" data channel).

    python -m benchmarks.loopback                         # demo generator, 25 fps, ~40 s
    python -m benchmarks.loopback --seconds 30 --bursts 14 --resolution 256
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.av_sync import (
    MIN_MOVED,
    RATE,
    audio_hold,
    bot_sync,
    drain,
    moved,
    pct,
    tone,
)
from benchmarks.common import free_port, wait_health

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results" / "loopback.json"
#: the servers' and the references' driver: the idle driver's loudness envelope opens the mouth on a
#: tone; without its speech priors, so the head, gaze and blinks after a burst are those of the silent
#: reference (with them, a nod or a phrase-end blink after one burst reads as the next one's onset)
PROBE_DRIVER = "idle:no-priors"

_T0 = time.monotonic()


def note(msg: str) -> None:
    print(f"[loopback {time.monotonic() - _T0:6.1f} s] {msg}", file=sys.stderr, flush=True)


# -- server process ---------------------------------------------------------------------------------

def serve(args) -> None:
    from aiohttp import web

    from engine.runtime import tune_cpu_allocator
    from engine.session import AvatarEngine
    from streaming.server import ServerConfig, create_app

    if args.device == "cpu":
        tune_cpu_allocator()
    engine = AvatarEngine(args.generator, device=args.device, resolution=args.resolution)
    # the idle driver (loudness envelope): a tone burst opens its mouth within a frame, and the
    # reference frames are made with it; the trained LSTM answers speech, not tones
    cfg = ServerConfig(host="127.0.0.1", port=args.port, generator=args.generator, resolution=engine.resolution,
                       fps=args.fps, max_sessions=2, engine=engine, stamp=True, stats_interval_s=0.5,
                       driver=PROBE_DRIVER)
    web.run_app(create_app(cfg), host="127.0.0.1", port=args.port, print=lambda *_: None)


def burst_track(seconds: float, bursts: int) -> tuple[np.ndarray, list[int]]:
    """Silence (``seconds`` + 5 s) with ``bursts`` tone bursts spread over it from 1.5 s on;
    returns the 48 kHz PCM and each onset's 20 ms packet index."""
    period = seconds / (bursts + 1)
    pcm = np.zeros(int((seconds + 5) * RATE), np.int16)
    burst = tone(min(0.4, period / 3))
    starts = []
    for j in range(bursts):
        n = int(round((1.5 + (j + 0.5) * period) / 0.02))
        pcm[n * 960:n * 960 + burst.size] = burst
        starts.append(n)
    return pcm, starts


# -- end to end -------------------------------------------------------------------------------------

async def stream_run(url: str, pcm: np.ndarray, seconds: float, script=None,
                     marker_video: bool = False) -> dict[str, Any]:
    """Send ``pcm`` as the mic, receive video; returns arrival times, decoded frames, stats, and the
    control channel's other messages as ``(arrival time, message)`` in ``events``. ``script``: an
    optional ``async script(channel, mic)`` started with the first frame (it may send control
    messages and edit ``mic.pcm`` ahead of the packet being sent). ``marker_video``: receive
    through ``streaming.jitter.MarkerVideoJitterBuffer`` instead of aiortc's own."""
    import aiohttp
    from aiortc import RTCConfiguration, RTCPeerConnection, RTCSessionDescription

    from streaming.jitter import install_marker_video
    from streaming.tracks import PcmTrack

    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    mic = PcmTrack(pcm)
    pc.addTrack(mic)
    video = pc.addTransceiver("video", direction="recvonly")
    if marker_video and not install_marker_video(video.receiver):
        raise RuntimeError("this aiortc has another receiver layout: MarkerVideoJitterBuffer cannot be installed")
    channel = pc.createDataChannel("control")
    frames: list = []
    times: list[float] = []
    stats: list[dict] = []
    events: list[tuple[float, dict]] = []
    tasks = []

    @channel.on("message")
    def on_message(message):
        msg = json.loads(message)
        if msg.get("type") == "stats":
            stats.append(msg)
        else:
            events.append((time.monotonic(), msg))

    @pc.on("track")
    def on_track(track):
        def keep(f):
            times.append(time.monotonic())
            frames.append(f)
        tasks.append(drain(track, keep))

    await pc.setLocalDescription(await pc.createOffer())
    async with aiohttp.ClientSession() as http:
        async with http.post(url + "/offer", json={"sdp": pc.localDescription.sdp, "type": "offer"}) as r:
            answer = await r.json()
            if r.status != 200:
                raise RuntimeError(f"offer refused: {r.status} {answer}")
    await pc.setRemoteDescription(RTCSessionDescription(sdp=answer["sdp"], type=answer["type"]))
    t_end = time.monotonic() + 60
    while not frames and time.monotonic() < t_end:
        await asyncio.sleep(0.02)
    if script is not None:
        tasks.append(asyncio.ensure_future(script(channel, mic)))
    await asyncio.sleep(seconds)
    for t in tasks:
        t.cancel()
    await pc.close()
    return {"frames": frames, "times": times, "sent_at": list(mic.sent_at), "stats": stats, "events": events}


def reference_frames(args, n: int) -> np.ndarray:
    """The silent face for frames 0..n-1 (same engine, identity, driver and seed as the server)."""
    import torch

    from engine.session import AvatarEngine, AvatarSession

    torch.set_num_threads(1)     # offline and not timed; leave the other core alone
    engine = AvatarEngine(args.generator, device=args.device, resolution=args.resolution)
    session = AvatarSession(engine, fps=args.fps, identity=0, driver=PROBE_DRIVER)
    out = []
    for _ in range(n):
        out.append(session.next_frame(fill_silence=True).image)
    return np.stack(out)


def frame_diffs(run: dict, refs_fn) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per received frame: its stamp, its arrival time and :func:`moved` against ``refs_fn(n)[stamp]``
    (the stamp row left out)."""
    from streaming.stamps import read_stamp

    imgs = [f.to_ndarray(format="rgb24") for f in run["frames"]]
    stamps = np.array([read_stamp(im) for im in imgs])
    refs = refs_fn(int(stamps.max()) + 1)
    h = imgs[0].shape[0]
    block = max(4, imgs[0].shape[1] // 16)
    body = slice(0, h - block)
    diffs = np.array([moved(im[body], refs[k][body]) for im, k in zip(imgs, stamps)])
    return stamps, np.array(run["times"]), diffs


def analyse(run: dict, refs_fn, burst_starts: list[int], fps: float) -> dict[str, Any]:
    stamps, times, diffs = frame_diffs(run, refs_fn)
    sent_at = run["sent_at"]
    return summarise(stamps, times, diffs, [sent_at[n] for n in burst_starts if n < len(sent_at)])


def summarise(stamps, times, diffs, onsets: list[float], min_moved: float = MIN_MOVED) -> dict[str, Any]:
    """Per onset (seconds, the clock of ``times``): ms to the first frame after it whose
    difference from its reference passes the threshold (1.5x the 95th percentile of the frames
    before the first onset, at least ``min_moved``; within 1 s); with frames/s and skipped stamps."""
    times, diffs = np.asarray(times, np.float64), np.asarray(diffs, np.float64)
    quiet = diffs[times < onsets[0]] if onsets else diffs
    quiet = quiet[np.isfinite(quiet)]
    threshold = max(min_moved, 1.5 * float(np.percentile(quiet, 95))) if quiet.size else min_moved
    latencies = []
    for t_on in onsets:
        hit = np.flatnonzero((times > t_on) & (diffs > threshold))
        if hit.size and times[hit[0]] - t_on < 1.0:
            latencies.append((times[hit[0]] - t_on) * 1e3)
    duration = times[-1] - times[0] if len(times) > 1 else float("nan")
    gaps = np.diff(np.asarray(stamps))
    return {
        "frames_received": len(times),
        "fps_delivered": (len(times) - 1) / duration if duration > 0 else None,
        "frames_skipped": int(np.sum(np.maximum(gaps - 1, 0))),
        "codec_noise_p95": float(np.percentile(quiet, 95)) if quiet.size else None,
        "mouth_threshold": threshold,
        "bursts": len(onsets),
        "detected": len(latencies),
        "audio_to_pixels_ms": {"p50": pct(latencies, 50), "p95": pct(latencies, 95),
                               "min": pct(latencies, 0), "max": pct(latencies, 100)},
        "latencies_ms": [round(x, 1) for x in latencies],
    }


def algorithmic_latency(args) -> dict[str, Any]:
    """Offline, with the servers' idle driver: from a burst onset (at 0/10/20/30 ms into a frame)
    to the end of the audio the first frame with the mouth moving needs (frame end + lookahead +
    resampler lag): the part no transport can remove."""
    import torch

    from engine.session import AvatarEngine, AvatarSession

    def no_pixels(ws):           # only the motion matters here
        return torch.zeros(ws.shape[0], 3, 8, 8)

    engine = AvatarEngine(args.generator, resolution=args.resolution, synthesize=no_pixels)
    out = []
    for phase_ms in (0, 10, 20, 30):
        session = AvatarSession(engine, fps=args.fps, driver=PROBE_DRIVER)     # the servers' driver
        mouth = session.driver.names.index("mouth_open") if "mouth_open" in session.driver.names else 0
        parts = None
        onset = 1.0 + phase_ms / 1000
        pcm = np.zeros(int(2.0 * RATE), np.int16)
        b = tone(0.4)
        pcm[int(onset * RATE):int(onset * RATE) + b.size] = b
        k_moved = None
        for i in range(0, pcm.size, 960):
            session.push_audio(pcm[i:i + 960], RATE)
            while (f := session.next_frame()) is not None:
                if k_moved is None and abs(float(f.x[mouth])) > 0.05:
                    k_moved = f.index
        if k_moved is not None:
            ready = (k_moved + 1) / args.fps + session.latency_ms / 1000
            parts = session.latency_ms
            out.append({"phase_ms": phase_ms, "first_moved_frame": k_moved,
                        "frame_lag": k_moved - int(np.floor(onset * args.fps)),
                        "ms": (ready - onset) * 1e3})
        session.close()
    return {"per_phase": out, "mean_ms": float(np.mean([o["ms"] for o in out])) if out else None,
            "session_latency_ms": parts,
            "note": "ms = (first moved frame + 1)/fps + session.latency_ms - onset; session.latency_ms is the "
                    "resampler's worst-case lag + the feature lookahead"}


def format_table(res: dict) -> str:
    e = res["end_to_end"]
    a = e["audio_to_pixels_ms"]
    lines = [f"loopback {res['settings']['generator']} {res['settings']['resolution']} px "
             f"{res['settings']['fps']:g} fps, {res['settings']['seconds']:g} s, {res['settings']['device']}, "
             f"{os.cpu_count()} CPUs",
             "-" * 60,
             f"{'frames/s delivered':<38} {e['fps_delivered']:.2f}",
             f"{'frames received / skipped':<38} {e['frames_received']} / {e['frames_skipped']}",
             f"{'audio->pixels p50 / p95 ms':<38} {a['p50']:.0f} / {a['p95']:.0f}  "
             f"({e['detected']}/{e['bursts']} bursts, min {a['min']:.0f}, max {a['max']:.0f})"
             if a["p50"] is not None else f"{'audio->pixels':<38} no burst detected"]
    alg = res["algorithmic"]
    if alg["mean_ms"] is not None:
        lines.append(f"{'  algorithmic part (mean over phases)':<38} {alg['mean_ms']:.0f}")
    hold = res["audio_hold"]
    lines.append(f"{'audio send->decoded p50: stock / no-wait':<38} {hold['stock']['p50_ms']:.0f} / "
                 f"{hold['no_wait']['p50_ms']:.0f} ms (hold saved {hold['hold_saved_ms']:.0f} ms)")
    b = res.get("bot_sync") or {}
    if b.get("media_offset_ms"):
        lines.append(f"{'bot: mouth frame - click frame':<38} {b['mouth_frame_lag']}")
        lines.append(f"{'bot: click shift in received audio (ms)':<38} {b['audio_onset_shift_ms']}")
        lines.append(f"{'bot A/V offset, media time (ms)':<38} {b['media_offset_ms']}")
        lines.append(f"{'bot A/V offset, arrival at viewer (ms)':<38} {b['arrival_offset_ms']}")
    st = res.get("server_stats") or {}
    if st:
        lines.append("server stages (ms)                         p50      p95")
        for k, v in sorted((st.get("stages_ms") or {}).items()):
            if v.get("p50") is not None:
                lines.append(f"  {k:<38} {v['p50']:8.2f} {v['p95']:8.2f}")
        atf = st.get("arrival_to_frame_ms") or {}
        if atf.get("p50") is not None:
            lines.append(f"  {'audio arrival -> frame published':<38} {atf['p50']:8.2f} {atf['p95']:8.2f}")
        lines.append(f"  {'session.latency_ms (resampler+lookahead)':<38} {st.get('latency_ms')}")
    return "\n".join(lines)


async def main_async(args) -> dict:
    port = free_port()
    cmd = [sys.executable, "-m", "benchmarks.loopback", "--serve", "--port", str(port), "--generator",
           args.generator, "--fps", str(args.fps), "--device", args.device]
    if args.resolution:
        cmd += ["--resolution", str(args.resolution)]
    from streaming.ice import loopback_candidates

    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"
        note("starting the server")
        health = await wait_health(url, proc)
        note(f"server up: {health}")
        pcm, burst_starts = burst_track(args.seconds, args.bursts)
        with loopback_candidates():
            note(f"streaming {args.seconds:g} s with {args.bursts} tone bursts")
            run = await stream_run(url, pcm, args.seconds + 1.5)
            note("measuring the audio receive hold (stock vs no-wait jitter buffer)")
            hold = await audio_hold(4.0)
            note("bot: audio/video offset of AvatarTracks")
            bot = await bot_sync(args)
    finally:
        proc.terminate()
        with contextlib.suppress(Exception):
            proc.wait(10)
    note("rendering the silent reference and detecting the mouth")
    e2e = analyse(run, lambda n: reference_frames(args, n), burst_starts, args.fps)
    note("offline algorithmic latency")
    return {
        "benchmark": "loopback",
        "settings": {"generator": args.generator, "resolution": health["resolution"], "fps": args.fps,
                     "seconds": args.seconds, "bursts": args.bursts, "device": health["device"]},
        "environment": _environment(args.device),
        "load_average": os.getloadavg(),
        "end_to_end": e2e,
        "algorithmic": algorithmic_latency(args),
        "audio_hold": hold,
        "bot_sync": bot,
        "server_stats": run["stats"][-1] if run["stats"] else None,
    }


def _environment(device: str) -> dict:
    try:
        import torch

        from benchmarks.common import environment
        return environment(torch.device(device))
    except Exception as exc:  # environment details are nice to have
        return {"error": str(exc)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.loopback", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--generator", default="demo")
    p.add_argument("--resolution", type=int, default=None)
    p.add_argument("--device", default="cpu", help="synthesis device of the server: cpu or cuda:N (default cpu)")
    p.add_argument("--fps", type=float, default=25.0)
    p.add_argument("--seconds", type=float, default=20.0, help="length of the streamed run (default 20)")
    p.add_argument("--bursts", type=int, default=12, help="tone bursts in the run (default 12)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve:
        serve(args)
        return 0
    res = asyncio.run(main_async(args))
    print(format_table(res))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(res, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
