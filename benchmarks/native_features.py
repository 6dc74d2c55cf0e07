"""Groundwork for features without resampler lag (issue 16, point 1): how far a log-mel computed
at the input's 48 kHz (1200-sample Hann window, 480 hop, the FFT bins up to 8 kHz, power / 9) is
from what the live path computes today (libsoxr HQ streaming 48 → 16 kHz in 20 ms chunks, then the
16 kHz log-mel). Utterances are the talking data's (``python -m engine.demo_world.talking``),
upsampled to 48 kHz with libsoxr VHQ as a microphone would deliver them.

    python -m benchmarks.native_features --data talking/holdout
"""
from __future__ import annotations

import argparse
import json
import sys
import wave
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import REPO_ROOT

DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results" / "native_features.json"


def _read(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path)) as w:
        return np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768, w.getframerate()


def native_log_mel(x48: np.ndarray) -> np.ndarray:
    """Log-mel [n, 80] of 48 kHz samples over the 16 kHz features' band and frame times."""
    from engine.audio.features import POWER_FLOOR, mel_filterbank

    fb = torch.from_numpy(mel_filterbank(16000, 400, 80).astype(np.float64).T.copy())   # bins of 40 Hz, 0..8 kHz
    win = torch.hann_window(1200, periodic=True, dtype=torch.float64)
    frames = np.lib.stride_tricks.sliding_window_view(x48.astype(np.float64), 1200)[::480]
    spec = torch.fft.rfft(torch.from_numpy(np.ascontiguousarray(frames)) * win, dim=1)[:, :201]
    power = (spec.real.square() + spec.imag.square()) / 9.0        # 3× the samples per window: 9× the power
    return torch.log(torch.clamp(power @ fb, min=POWER_FLOOR)).to(torch.float32).numpy()


def live_log_mel(x48: np.ndarray) -> np.ndarray:
    import soxr

    from engine.audio.features import log_mel

    rs = soxr.ResampleStream(48000, 16000, 1, dtype="float32", quality="HQ")
    parts = [rs.resample_chunk(x48[i:i + 960]) for i in range(0, x48.size, 960)]
    parts.append(rs.resample_chunk(np.zeros(0, np.float32), last=True))
    return log_mel(np.concatenate(parts))


def main(argv=None) -> int:
    import soxr

    ap = argparse.ArgumentParser(prog="python -m benchmarks.native_features", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="a talking-data folder (uttNNNNN.wav)")
    ap.add_argument("--limit", type=int, default=20)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    rows = []
    for path in sorted(args.data.glob("utt*.wav"))[: args.limit]:
        x, sr = _read(path)
        x48 = soxr.resample(x, sr, 48000, quality="VHQ").astype(np.float32)
        ref, nat = live_log_mel(x48), native_log_mel(x48)
        n = min(len(ref), len(nat))
        sound = ref[:n].max(1) > -12.0                  # frames with sound in them
        d = np.abs(nat[:n] - ref[:n])
        rows.append({"name": path.stem, "frames": int(n), "mean_abs_diff": float(d[sound].mean()),
                     "p99_abs_diff": float(np.quantile(d[sound], 0.99)), "feature_std": float(ref[:n][sound].std())})
    if not rows:
        raise SystemExit(f"{args.data}: no utt*.wav files")
    report = {"benchmark": "native_features", "utterances": len(rows),
              "mean_abs_diff": float(np.mean([r["mean_abs_diff"] for r in rows])),
              "p99_abs_diff": float(np.median([r["p99_abs_diff"] for r in rows])),
              "feature_std": float(np.mean([r["feature_std"] for r in rows])), "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: report[k] for k in ("utterances", "mean_abs_diff", "p99_abs_diff", "feature_std")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
