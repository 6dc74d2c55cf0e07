"""Per-stage cost of the whole pipeline for one ``AvatarSession``: audio in → mel/VAD → motion
step → latent → synthesis → uint8 → encode.

Speech-like audio (48 kHz int16, or a wav given with ``--audio``) is pushed in 20 ms chunks, as
WebRTC delivers it; every ready frame is pulled with ``next_frame()`` and encoded with aiortc's
own VP8 (or H.264) encoder, the one the server sends with. Each stage is timed per frame; the
table shows p50 / p95 / p99 in ms, the sum of the per-stage medians, and the frame rate one
core-set sustains (1000 / mean total ms). JSON + PNG under ``benchmarks/results/``.

    python -m benchmarks.pipeline                          # demo generator, 128 px, 25 fps, 20 s
    python -m benchmarks.pipeline --seconds 5 --codec h264
    python -m benchmarks.pipeline --generator ffhq.pkl --resolution 512 --device cuda --backend auto
"""
from __future__ import annotations

import argparse
import json
import time
from fractions import Fraction
from pathlib import Path
from typing import Any, Optional

import numpy as np
import torch

from benchmarks.audio import speech_like
from benchmarks.common import environment
from engine.runtime import tune_cpu_allocator
from engine.session import AvatarEngine, AvatarSession
from engine.synthesis.backends import create_backend
from engine.synthesis.checkpoints import load_generator

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT_DIR = REPO_ROOT / "benchmarks" / "results"
STAGES = ("audio_in", "features", "motion", "latent", "synthesis", "convert", "encode")


def _pct(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        return {"p50": float("nan"), "p95": float("nan"), "p99": float("nan"), "mean": float("nan"), "n": 0}
    return {"p50": float(np.percentile(a, 50)), "p95": float(np.percentile(a, 95)),
            "p99": float(np.percentile(a, 99)), "mean": float(a.mean()), "n": int(a.size)}


def _encoder(codec: str):
    if codec == "vp8":
        from aiortc.codecs.vpx import Vp8Encoder
        return Vp8Encoder()
    from aiortc.codecs.h264 import H264Encoder
    return H264Encoder()


def load_audio(path: Optional[Path], seconds: float, rate: int = 48000) -> tuple[np.ndarray, int]:
    """int16 mono PCM and its rate: the file (decoded with PyAV) or ``seconds`` of speech-like audio."""
    if path is None:
        x = speech_like(seconds, rate)
        return (np.clip(x, -1, 1) * 32767).astype(np.int16), rate
    import av
    with av.open(str(path)) as f:
        stream = f.streams.audio[0]
        resampler = av.AudioResampler(format="s16", layout="mono", rate=stream.rate)
        chunks = []
        for frame in f.decode(stream):
            for out in resampler.resample(frame):
                chunks.append(out.to_ndarray().reshape(-1))
        return np.concatenate(chunks).astype(np.int16), int(stream.rate)


def run(args) -> dict[str, Any]:
    import av


    synthesize = None
    engine_kw: dict[str, Any] = {}
    if args.backend != "torch-default":
        G = load_generator(args.generator, device=args.device)
        backend = create_backend(args.backend, G, device=args.device, max_batch=1, log=print)
        synthesize = backend
        engine_kw["generator"] = G
    else:
        engine_kw["generator"] = args.generator
    engine = AvatarEngine(device=args.device, resolution=args.resolution, synthesize=synthesize, **engine_kw)
    session = AvatarSession(engine, fps=args.fps, identity=args.identity)
    pcm, rate = load_audio(args.audio, args.seconds)
    chunk = rate // 50
    encoder = _encoder(args.codec)
    per_stage: dict[str, list[float]] = {s: [] for s in STAGES}
    totals: list[float] = []
    audio_ms_pending = 0.0
    frames = 0
    warmup = args.warmup
    t_wall = time.perf_counter()
    for i in range(0, pcm.size - chunk + 1, chunk):
        t0 = time.perf_counter()
        session.push_audio(pcm[i:i + chunk], rate)
        audio_ms_pending += (time.perf_counter() - t0) * 1e3
        while True:
            frame = session.next_frame()
            if frame is None:
                break
            t0 = time.perf_counter()
            vf = av.VideoFrame.from_ndarray(frame.image, format="rgb24")
            vf.pts, vf.time_base = frame.index, Fraction(1, int(round(args.fps)))
            encoder.encode(vf)
            encode_ms = (time.perf_counter() - t0) * 1e3
            frames += 1
            if frames <= warmup:
                audio_ms_pending = 0.0
                continue
            row = {"encode": encode_ms,
                   **{s: float(frame.timings.get(s, 0.0)) for s in STAGES if s not in ("audio_in", "encode")}}
            # push_audio ran the resampler and the feature stream; the session attributes the
            # feature part to the frames, the rest (conversion, resampling) is "audio_in"
            row["audio_in"] = max(0.0, audio_ms_pending - row["features"])
            audio_ms_pending = 0.0
            for s in STAGES:
                per_stage[s].append(row[s])
            totals.append(sum(row.values()))
    wall_s = time.perf_counter() - t_wall
    stats = {s: _pct(v) for s, v in per_stage.items()}
    total = _pct(totals)
    return {
        "benchmark": "pipeline",
        "environment": environment(torch.device(args.device)),
        "settings": {"generator": args.generator, "resolution": engine.resolution, "fps": args.fps,
                     "codec": args.codec, "seconds": args.seconds, "audio_rate": rate, "device": args.device,
                     "backend": args.backend, "warmup_frames": warmup,
                     "lookahead_ms": session.lookahead_ms, "latency_ms": session.latency_ms},
        "frames": frames - warmup,
        "stages_ms": stats,
        "total_ms": total,
        "sum_of_stage_p50_ms": float(sum(stats[s]["p50"] for s in STAGES)),
        "sustained_fps": 1000.0 / total["mean"] if total["n"] else 0.0,
        "wall_s": wall_s,
        "realtime_factor": (pcm.size / rate) / wall_s,
    }


def format_table(report: dict[str, Any]) -> str:
    lines = [f"{'stage':<10} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'mean ms':>8}", "-" * 46]
    for s in STAGES:
        r = report["stages_ms"][s]
        lines.append(f"{s:<10} {r['p50']:>8.3f} {r['p95']:>8.3f} {r['p99']:>8.3f} {r['mean']:>8.3f}")
    t = report["total_ms"]
    lines.append("-" * 46)
    lines.append(f"{'total':<10} {t['p50']:>8.3f} {t['p95']:>8.3f} {t['p99']:>8.3f} {t['mean']:>8.3f}")
    st = report["settings"]
    lines.append(f"{report['frames']} frames at {st['resolution']} px, {st['fps']:g} fps target: sustains "
                 f"{report['sustained_fps']:.1f} frames/s of work ({report['realtime_factor']:.2f}x real time); "
                 f"audio lag before a frame can start: {st['latency_ms']:.1f} ms (resampler lag, if any, + {st['lookahead_ms']:g} ms "
                 f"lookahead)")
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.6))
    x = np.arange(len(STAGES))
    for off, key in ((-0.27, "p50"), (0, "p95"), (0.27, "p99")):
        ax.bar(x + off, [report["stages_ms"][s][key] for s in STAGES], width=0.27, label=key)
    ax.set_xticks(x)
    ax.set_xticklabels(STAGES)
    ax.set_ylabel("ms per frame")
    ax.set_yscale("log")
    ax.legend()
    env, st = report["environment"], report["settings"]
    ax.set_title(f"AvatarSession stages, {st['resolution']} px, {st['codec']} - {env['device_name']}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="python -m benchmarks.pipeline", description=__doc__.split("\n")[0])
    p.add_argument("--generator", default="demo")
    p.add_argument("--resolution", type=int, default=None, help="output size (default: the generator's)")
    p.add_argument("--fps", type=float, default=25.0)
    p.add_argument("--seconds", type=float, default=20.0, help="seconds of speech-like audio (without --audio)")
    p.add_argument("--audio", type=Path, default=None, help="an audio file to push instead (any PyAV format)")
    p.add_argument("--identity", type=int, default=0, help="identity seed")
    p.add_argument("--codec", choices=("vp8", "h264"), default="vp8")
    p.add_argument("--device", default="cpu")
    p.add_argument("--backend", default="torch-default", choices=("torch-default", "auto", "torch", "onnx", "trt"),
                   help="synthesis backend (default: the engine's own torch path)")
    p.add_argument("--warmup", type=int, default=10, help="frames left out of the statistics")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--no-malloc-tuning", dest="malloc_tuning", action="store_false")
    p.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR)
    p.add_argument("--no-plot", action="store_true")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.malloc_tuning and args.device == "cpu":
        tune_cpu_allocator()
    report = run(args)
    print(format_table(report))
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "pipeline.json").write_text(json.dumps(report, indent=2) + "\n")
    if not args.no_plot:
        plot(report, args.out_dir / "pipeline.png")
    print(f"wrote {args.out_dir / 'pipeline.json'}")
    return report


if __name__ == "__main__":
    main()
