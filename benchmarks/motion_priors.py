"""The idle driver's speech priors on held-out speech: slow head motion that goes with the voice,
gaze that shifts and returns, blinks at phrase ends, nothing that grows over an hour.

Held-out utterances (``engine.demo_world.talking``'s ``holdout``) are played one after another
with pauses of 0.3–2.5 s (seeded) for ``--minutes`` through the feature stream at ``--fps``, into
the demo's default driver (the audio LSTM's mouth over the idle driver) with the speech priors on
and, for comparison, off. Reported per run:

* ``below_2hz``: the share of each head angle's power below 2 Hz (Welch's periodogram);
* ``speech_coupling``: the correlation between the voiced loudness and the head's speed
  (|Δ angles| per frame), both smoothed over 1 s; the head's RMS speed in speech and in silence;
* ``blinks``: per minute, and the share of blink onsets within 1.5 s after a phrase end (a pause of
  at least 0.3 s after speech) against the share of time those windows cover (chance);
* ``gaze``: the share of time looking away (|gaze_x| > 0.3), shifts per minute;
* ``blocks``: each head angle's RMS per 10-minute block (no growth: the last block as the first).

    python -m benchmarks.motion_priors --data talking/holdout [--minutes 60] [--fps 25]

Writes benchmarks/results/motion_priors.json and .png.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from benchmarks.common import environment

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results" / "motion_priors.json"
HEAD = ("head_yaw", "head_pitch", "head_roll")


def speech_track(utterances: list[dict], minutes: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(16 kHz float32 audio, speaking mask per sample): utterances with seeded pauses between."""
    import soxr
    rng = np.random.default_rng(seed)
    total = int(minutes * 60 * 16000)
    parts, mask, n, i = [], [], 0, 0
    clips = [soxr.resample(u["samples"].astype(np.float32) / 32768.0, u["rate"], 16000).astype(np.float32)
             for u in utterances]
    while n < total:
        pause = np.zeros(int(rng.uniform(0.3, 2.5) * 16000), np.float32)
        clip = clips[i % len(clips)]
        i += 1
        parts += [pause, clip]
        mask += [np.zeros(len(pause), bool), np.abs(clip) > 1e-3]
        n += len(pause) + len(clip)
    return np.concatenate(parts)[:total], np.concatenate(mask)[:total]


def drive(audio: np.ndarray, fps: float, priors: bool, seed: int = 0) -> tuple[np.ndarray, list[str], np.ndarray]:
    """x [frames, k] of the demo's default driver (priors on/off), its names, and the level per frame."""
    from engine.audio.features import FeatureStream
    from engine.drivers import feature_needs, make_driver
    from engine.motion import IdleDriver, LayeredDriver
    from engine.session import AvatarEngine
    from engine.motion import ROLES
    engine = AvatarEngine("demo")
    drv = make_driver("default", engine, fps=fps, seed=seed)
    idle = IdleDriver(list(ROLES), fps=fps, seed=seed, priors=priors)     # every role, whatever the directions
    drv = LayeredDriver(drv.top, idle) if isinstance(drv, LayeredDriver) else idle
    look, window = feature_needs(drv)
    stream = FeatureStream(fps, lookahead_ms=look if look is not None else 40.0,
                           window_ms=window if window is not None else 320.0)
    xs, level = [], []
    step = 16000 // 50
    for start in range(0, len(audio), step):
        for f in stream.push(audio[start:start + step]):
            level.append(idle.mouth_target(float(f.rms), float(f.voiced)))
            xs.append(drv.step(f))
    engine.close()
    return np.stack(xs).astype(np.float64), list(drv.names), np.array(level)


def smooth(x: np.ndarray, n: int) -> np.ndarray:
    return np.convolve(x, np.ones(n) / n, mode="same")


def measure(x: np.ndarray, names: list[str], level: np.ndarray, speaking: np.ndarray, fps: float) -> dict:
    from scipy.signal import welch
    head = np.stack([x[:, names.index(r)] for r in HEAD if r in names], axis=1)
    out: dict = {"below_2hz": {}}
    for j, r in enumerate(r for r in HEAD if r in names):
        f, p = welch(head[:, j], fs=fps, nperseg=min(len(head), int(60 * fps)))
        out["below_2hz"][r] = round(float(p[f < 2.0].sum() / p.sum()), 4) if p.sum() > 0 else None
    speed = np.r_[0.0, np.abs(np.diff(head, axis=0)).sum(axis=1)]
    sec = int(round(fps))
    out["speech_coupling"] = {
        "corr_level_speed_1s": round(float(np.corrcoef(smooth(level, sec), smooth(speed, sec))[0, 1]), 3),
        "speed_rms_speech": round(float(np.sqrt((speed[speaking] ** 2).mean())), 4),
        "speed_rms_silence": round(float(np.sqrt((speed[~speaking] ** 2).mean())), 4)}
    blink = x[:, names.index("blink")] if "blink" in names else np.zeros(len(x))
    onsets = np.nonzero(np.diff((blink > 0.05).astype(int)) == 1)[0] + 1
    ends = np.nonzero(np.diff(speaking.astype(int)) == -1)[0] + 1
    window = np.zeros(len(x), bool)
    for e in ends:
        window[e:e + int(1.5 * fps)] = True
    minutes = len(x) / fps / 60
    out["blinks"] = {"per_minute": round(len(onsets) / minutes, 2),
                     "share_after_phrase_end": round(float(window[onsets].mean()) if len(onsets) else 0.0, 3),
                     "chance": round(float(window.mean()), 3)}
    if "gaze_x" in names:
        away = np.abs(x[:, names.index("gaze_x")]) > 0.3
        out["gaze"] = {"share_away": round(float(away.mean()), 3),
                       "shifts_per_minute": round(float((np.diff(away.astype(int)) == 1).sum() / minutes), 2)}
    block = int(600 * fps)
    if len(head) >= 2 * block:
        rms = [np.sqrt((head[i:i + block] ** 2).mean(axis=0)) for i in range(0, len(head) - block + 1, block)]
        out["blocks"] = [[round(float(v), 4) for v in b] for b in rms]
    return out


def speaking_per_frame(mask: np.ndarray, fps: float, frames: int) -> np.ndarray:
    """Speech per video frame, with pauses under 0.3 s bridged (a phrase goes on through them)."""
    per = np.array([mask[int(k * 16000 / fps):int((k + 1) * 16000 / fps)].any() for k in range(frames)])
    gap = int(0.3 * fps)
    out = per.copy()
    last = -10 ** 9
    for k, s in enumerate(per):
        if s:
            if 0 < k - last <= gap:
                out[last:k] = True
            last = k
    return out


def plot(runs: dict, fps: float, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from scipy.signal import welch
    fig, ax = plt.subplots(2, 1, figsize=(10, 7))
    for label, (x, names, level) in runs.items():
        f, p = welch(x[:, names.index("head_pitch")], fs=fps, nperseg=int(30 * fps))
        ax[0].semilogy(f, p, label=f"head_pitch, priors {label}")
        f, p = welch(x[:, names.index("head_yaw")], fs=fps, nperseg=int(30 * fps))
        ax[0].semilogy(f, p, "--", label=f"head_yaw, priors {label}")
    ax[0].axvline(2.0, color="k", lw=0.5)
    ax[0].set_xlabel("Hz")
    ax[0].legend()
    x, names, level = runs["on"]
    n = int(30 * fps)
    t = np.arange(n) / fps
    ax[1].plot(t, level[:n], color="0.6", label="voiced loudness")
    for r in ("head_yaw", "head_pitch", "gaze_x", "blink"):
        ax[1].plot(t, x[:n, names.index(r)], label=r)
    ax[1].set_xlabel("s")
    ax[1].legend(ncol=5, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.motion_priors", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="held-out talking data (engine.demo_world.talking)")
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--fps", type=float, default=25.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    from benchmarks.lipsync import read_utterances
    t0 = time.perf_counter()
    audio, mask = speech_track(read_utterances(args.data), args.minutes, args.seed)
    report: dict = {"minutes": args.minutes, "fps": args.fps, "runs": {}}
    runs = {}
    for label, on in (("on", True), ("off", False)):
        x, names, level = drive(audio, args.fps, on, seed=args.seed)
        speaking = speaking_per_frame(mask, args.fps, len(x))
        runs[label] = (x, names, level)
        report["runs"][label] = measure(x, names, level, speaking, args.fps)
        print(f"[motion_priors] priors {label}: " + json.dumps(report["runs"][label]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    plot(runs, args.fps, args.out.with_suffix(".png"))
    report["seconds"] = round(time.perf_counter() - t0, 1)
    report["environment"] = environment(__import__("torch").device("cpu"))
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out} (plot {args.out.with_suffix('.png')})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
