"""How many concurrent sessions one machine serves at a target frame rate, batching on and off.

For N = 1, 2, 4, … sessions, each session runs in its own thread exactly as the server's stream
workers do: on a wall-clock schedule (frame k due at t0 + k/fps) it pushes that frame's audio
(speech-like, 48 kHz, as a microphone delivers it) and pulls ``next_frame(latest=True)``; when
synthesis cannot keep up, ready frames pile up and ``latest=True`` drops them (``Frame.dropped``).
A configuration "holds" when at most ``--max-drop`` (1 %) of the frames are dropped
(dropped / (delivered + dropped)). With
``--batching`` the sessions share one ``BatchingSynthesizer`` (one backend call per round).

The table has, per N and mode: delivered frames/s per session, drop rate, synthesis p50 and the
mean batch; the summary gives the largest N that holds for each mode. JSON + PNG under
``benchmarks/results/``.

    python -m benchmarks.sessions                                 # demo 128 px, 25 fps, CPU
    python -m benchmarks.sessions --device cuda --generator ffhq512 --backend auto --max-sessions 128
"""
from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.audio import speech_like
from benchmarks.common import environment
from engine.runtime import tune_cpu_allocator
from engine.session import AvatarEngine, AvatarSession
from engine.synthesis.checkpoints import load_generator

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT_DIR = REPO_ROOT / "benchmarks" / "results"


def run_sessions(engine, n: int, fps: float, seconds: float, audio: np.ndarray, rate: int) -> dict[str, Any]:
    per_frame = int(round(rate / fps))
    barrier = threading.Barrier(n + 1)
    results: list[dict[str, Any]] = [{} for _ in range(n)]
    stop_at = [0.0]

    def worker(i: int) -> None:
        s = AvatarSession(engine, fps=fps, identity=i, seed=i)
        delivered, dropped, synth = 0, 0, []
        offset = (i * 9973) % max(1, audio.size - per_frame)
        barrier.wait()
        t0 = time.perf_counter()
        pushed = 0                                  # ticks whose audio has been pushed
        while True:
            now = time.perf_counter()
            if now >= stop_at[0]:
                break
            tick = int((now - t0) * fps)            # audio arrives on the wall clock, as from a mic
            while pushed <= tick:
                start = offset + (pushed * per_frame) % (audio.size - per_frame)
                s.push_audio(audio[start:start + per_frame], rate)
                pushed += 1
            f = s.next_frame(latest=True)           # behind: step through, synthesize the newest
            if f is not None:
                delivered += 1
                dropped += f.dropped
                synth.append(f.timings.get("synthesis", 0.0))
            nxt = t0 + pushed / fps
            if nxt > time.perf_counter():
                time.sleep(max(0.0, min(nxt, stop_at[0]) - time.perf_counter()))
        s.close()
        results[i] = {"delivered": delivered, "dropped": dropped, "synthesis_ms": synth}

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(n)]
    for t in threads:
        t.start()
    stop_at[0] = time.perf_counter() + seconds + 0.5
    barrier.wait()
    stop_at[0] = time.perf_counter() + seconds
    for t in threads:
        t.join(timeout=seconds + 60)
    dropped = sum(r["dropped"] for r in results)
    delivered = sum(r["delivered"] for r in results)
    synth = [x for r in results for x in r["synthesis_ms"]]
    return {"sessions": n, "delivered": delivered, "dropped": dropped,
            "drop_rate": dropped / (delivered + dropped) if delivered + dropped else 0.0,
            "fps_per_session": delivered / n / seconds,
            "synthesis_p50_ms": float(np.percentile(synth, 50)) if synth else float("nan")}


def main(argv=None) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="python -m benchmarks.sessions", description=__doc__.split("\n")[0])
    p.add_argument("--generator", default="demo")
    p.add_argument("--resolution", type=int, default=None)
    p.add_argument("--fps", type=float, default=25.0)
    p.add_argument("--seconds", type=float, default=4.0, help="measured seconds per configuration")
    p.add_argument("--max-sessions", type=int, default=16)
    p.add_argument("--max-drop", type=float, default=0.01, help="drop rate at which a configuration fails")
    p.add_argument("--modes", nargs="+", choices=("plain", "batching"), default=["plain", "batching"])
    p.add_argument("--device", default="cpu")
    p.add_argument("--backend", default=None, choices=(None, "auto", "torch", "onnx", "trt"))
    p.add_argument("--window-ms", type=float, default=3.0, help="batching gather window")
    p.add_argument("--no-discover", dest="discover", action="store_false",
                   help="a generator with no shipped or cached directions gets the PCA placeholder at once "
                        "(no direction discovery, which reads landmarks for minutes; for random weights)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR)
    p.add_argument("--no-plot", action="store_true")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cpu":
        tune_cpu_allocator()

    G = load_generator(args.generator, device=args.device)
    audio = (np.clip(speech_like(8.0, 48000), -1, 1) * 32767).astype(np.int16)
    rows: list[dict[str, Any]] = []
    best: dict[str, int] = {}
    for mode in args.modes:
        engine = AvatarEngine(G, device=args.device, resolution=args.resolution, backend=args.backend,
                              batching=mode == "batching", max_batch=args.max_sessions,
                              batch_window_ms=args.window_ms, log=print, discover=args.discover)
        n = 1
        while n <= args.max_sessions:
            row = run_sessions(engine, n, args.fps, args.seconds, audio, 48000)
            row["mode"] = mode
            if engine.batcher is not None:
                row["mean_batch"] = engine.batcher.stats()["mean_batch"]
                engine.batcher.batch_sizes.clear()
            rows.append(row)
            print(f"{mode:>8} {n:>4} sessions: {row['fps_per_session']:6.1f} frames/s each, "
                  f"drop {100 * row['drop_rate']:5.1f} %, synthesis p50 {row['synthesis_p50_ms']:.1f} ms"
                  + (f", mean batch {row['mean_batch']:.1f}" if "mean_batch" in row else ""), flush=True)
            if row["drop_rate"] <= args.max_drop:
                best[mode] = n
            else:
                break
            n *= 2
        engine.close()
    for mode in args.modes:
        print(f"{mode}: {best.get(mode, 0)} concurrent {args.fps:g}-fps sessions hold (drop <= "
              f"{100 * args.max_drop:g} %)")
    report = {"benchmark": "sessions", "environment": environment(torch.device(args.device)),
              "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "resolution": args.resolution or int(G.img_resolution), "results": rows, "max_sessions_holding": best}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "sessions.json").write_text(json.dumps(report, indent=2) + "\n")
    if not args.no_plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(6, 3.6))
        for mode in args.modes:
            rs = [r for r in rows if r["mode"] == mode]
            ax.plot([r["sessions"] for r in rs], [100 * r["drop_rate"] for r in rs], marker="o", label=mode)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("concurrent sessions")
        ax.set_ylabel("frames dropped (%)")
        ax.axhline(100 * args.max_drop, color="gray", lw=0.8, ls="--")
        ax.legend()
        ax.set_title(f"{report['resolution']} px at {args.fps:g} fps - {report['environment']['device_name']}",
                     fontsize=9)
        fig.tight_layout()
        fig.savefig(args.out_dir / "sessions.png", dpi=110)
        plt.close(fig)
    print(f"wrote {args.out_dir / 'sessions.json'}")
    return report


if __name__ == "__main__":
    main()
