"""Audio front end cost and resampler lag (CPU).

* ``feature_stream``: ``FeatureStream.push`` fed 20 ms (320-sample) chunks of 16 kHz speech-like
  audio at 25 fps: µs per push and µs per emitted video frame (mel + VAD + window assembly),
  plus the two parts alone (``LogMel.frames`` on 2 frames, one webrtcvad call on 20 ms).
* ``audio_input``: ``AudioInput.push`` µs per 20 ms chunk, and soxr's output lag behind the
  input (ms, mean and max over the run) for each input rate, next to ``AudioInput.latency_ms``.
* ``motion``: µs per ``step`` of ``AudioLSTMDriver`` (hidden 256, w_dim 512; k 8 and k 16 with
  8 noise inputs; random weights: the cost does not depend on them) and ``IdleDriver``, on real
  ``FrameFeatures``; and the per-frame total mel + VAD + LSTM step.

    python -m benchmarks.audio                  # ~10 s
    python -m benchmarks.audio --seconds 5 --threads 1
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import webrtcvad

from benchmarks.common import environment
from engine.audio import SAMPLE_RATE, AudioInput, FeatureStream
from engine.motion import IdleDriver
from engine.motion.base import ROLES
from engine.motion.lstm import AudioLSTMConfig, AudioMotionModel
from engine.motion.lstm_driver import AudioLSTMDriver

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT_DIR = REPO_ROOT / "benchmarks" / "results"


def speech_like(seconds: float, sr: int = SAMPLE_RATE, seed: int = 0) -> np.ndarray:
    """Vowel bursts (harmonics of 120 Hz under formant bumps) alternating with quiet noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    x = sum(np.sin(2 * np.pi * h * 120 * t) / h * np.exp(-((h * 120 - 700) / 200.0) ** 2) for h in range(1, 30))
    gate = (np.sin(2 * np.pi * 1.5 * t) > 0).astype(np.float64)
    return (0.3 * x / np.abs(x).max() * gate + 0.001 * rng.standard_normal(t.size)).astype(np.float32)


def _stats(us: list[float]) -> dict[str, float]:
    a = np.asarray(us)
    return {"mean_us": float(a.mean()), "p50_us": float(np.percentile(a, 50)),
            "p99_us": float(np.percentile(a, 99)), "max_us": float(a.max())}


def bench_feature_stream(seconds: float) -> dict[str, Any]:
    x = speech_like(seconds)
    fs = FeatureStream(fps=25.0, lookahead_ms=40.0)
    fs.push(x[:SAMPLE_RATE])                                     # warm-up
    fs.reset()
    per_push, frames = [], 0
    t_all = time.perf_counter()
    for i in range(0, len(x) - 319, 320):
        t0 = time.perf_counter()
        frames += len(fs.push(x[i:i + 320]))
        per_push.append((time.perf_counter() - t0) * 1e6)
    total_us = (time.perf_counter() - t_all) * 1e6
    frames_in = np.lib.stride_tricks.sliding_window_view(x[:4000], 400)[::160][:2].copy()
    mel_us = []
    for _ in range(2000):
        t0 = time.perf_counter()
        fs.log_mel.frames(frames_in)
        mel_us.append((time.perf_counter() - t0) * 1e6)
    vad = webrtcvad.Vad(2)
    pcm = (x[:320] * 32767).astype("<i2").tobytes()
    vad_us = []
    for _ in range(2000):
        t0 = time.perf_counter()
        vad.is_speech(pcm, SAMPLE_RATE)
        vad_us.append((time.perf_counter() - t0) * 1e6)
    return {"fps": 25.0, "chunk_samples": 320, "seconds": seconds, "frames": frames,
            "per_push": _stats(per_push), "per_frame_us": total_us / max(frames, 1),
            "log_mel_2_frames": _stats(mel_us), "webrtcvad_20ms": _stats(vad_us),
            "latency_ms": fs.latency_ms}


def bench_audio_input(seconds: float) -> list[dict[str, Any]]:
    out = []
    for rate in (8000, 11025, 16000, 22050, 44100, 48000):
        x = (speech_like(seconds, rate) * 32767).astype(np.int16)
        ai = AudioInput(rate)
        n = rate // 50
        per_push, lag = [], []
        for i in range(0, len(x) - n + 1, n):
            t0 = time.perf_counter()
            ai.push(x[i:i + n])
            per_push.append((time.perf_counter() - t0) * 1e6)
            lag.append(ai.pending_samples / SAMPLE_RATE * 1000)
        lag = lag[10:]
        out.append({"rate": rate, "chunk_ms": 20, **_stats(per_push),
                    "lag_ms_mean": float(np.mean(lag)), "lag_ms_max": float(np.max(lag)),
                    "latency_ms": ai.latency_ms})
    return out


def bench_motion(seconds: float, repeats: int = 3) -> list[dict[str, Any]]:
    fs = FeatureStream(fps=25.0, lookahead_ms=40.0)
    feats = fs.push(speech_like(max(seconds, 4.0))) + fs.flush()
    out = []
    cases = [("AudioLSTMDriver k=8", dict(k=8, noise_dim=0)), ("AudioLSTMDriver k=16 noise 8", dict(k=16, noise_dim=8))]
    for label, kw in cases:
        torch.manual_seed(0)
        model = AudioMotionModel(AudioLSTMConfig(w_dim=512, hidden=256, **kw))
        driver = AudioLSTMDriver(model, [f"d{i}" for i in range(kw["k"])])
        driver.reset(np.zeros(512, np.float32))
        out.append({"driver": label, **_time_steps(driver, feats, repeats)})
    idle = IdleDriver(list(ROLES), fps=25.0)
    out.append({"driver": "IdleDriver", **_time_steps(idle, feats, repeats)})
    return out


def _time_steps(driver, feats, repeats: int) -> dict[str, Any]:
    for f in feats[:50]:                                          # warm-up
        driver.step(f)
    best = None
    for _ in range(repeats):
        us = []
        for f in feats:
            t0 = time.perf_counter()
            driver.step(f)
            us.append((time.perf_counter() - t0) * 1e6)
        st = _stats(us)
        if best is None or st["p50_us"] < best["p50_us"]:
            best = st
    return {"steps": len(feats), **best}


def main(argv=None) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="python -m benchmarks.audio", description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=20.0, help="audio seconds per measurement")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    p.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    result = {"environment": environment(torch.device("cpu")),
              "feature_stream": bench_feature_stream(args.seconds),
              "audio_input": bench_audio_input(args.seconds),
              "motion": bench_motion(args.seconds)}
    fsr = result["feature_stream"]
    print(f"FeatureStream 20 ms pushes @25 fps: {fsr['per_push']['mean_us']:.0f} µs/push (p99 "
          f"{fsr['per_push']['p99_us']:.0f}), {fsr['per_frame_us']:.0f} µs per video frame; "
          f"log-mel 2 frames {fsr['log_mel_2_frames']['p50_us']:.0f} µs, webrtcvad 20 ms "
          f"{fsr['webrtcvad_20ms']['p50_us']:.1f} µs (p50)")
    print(f"{'rate':>6} {'µs/push':>8} {'p99':>6} {'lag ms mean':>11} {'max':>6} {'latency_ms':>10}")
    for r in result["audio_input"]:
        print(f"{r['rate']:>6} {r['mean_us']:>8.0f} {r['p99_us']:>6.0f} {r['lag_ms_mean']:>11.1f} {r['lag_ms_max']:>6.1f}"
              f" {r['latency_ms']:>10.1f}")
    print(f"{'driver':<30} {'µs/step p50':>11} {'mean':>6} {'p99':>6} {'+ mel/VAD, µs/frame':>20}")
    for r in result["motion"]:
        print(f"{r['driver']:<30} {r['p50_us']:>11.0f} {r['mean_us']:>6.0f} {r['p99_us']:>6.0f} "
              f"{r['mean_us'] + fsr['per_frame_us']:>20.0f}")
    print(f"latency: FeatureStream {fsr['latency_ms']:.0f} ms lookahead + resampler (48 kHz) "
          f"{next(r['latency_ms'] for r in result['audio_input'] if r['rate'] == 48000):.1f} ms")
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "audio.json").write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
