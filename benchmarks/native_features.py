"""Features at the input rate (issue 16, point 1) against what the live path computed before them:
``FeatureStream(sample_rate=48000)`` (1200-sample Hann window, 480 hop, the FFT bins up to 8 kHz,
power / 9, webrtcvad at 48 kHz) against libsoxr HQ streaming 48 → 16 kHz in 20 ms chunks, then
the 16 kHz stream. Utterances are the talking data's (``python -m engine.demo_world.talking``),
upsampled to 48 kHz with libsoxr VHQ as a microphone would deliver them. Reported: the log-mel
difference on frames with sound (mean, p99) against the features' spread, the voiced-fraction
and RMS differences, and each path's feature latency.

    python -m benchmarks.native_features --data talking/holdout
"""
from __future__ import annotations

import argparse
import json
import sys
import wave
from pathlib import Path

import numpy as np

from benchmarks.common import REPO_ROOT

DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results" / "native_features.json"


def _read(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path)) as w:
        return np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768, w.getframerate()


def _stream(fs, x: np.ndarray, chunk: int) -> list:
    out = []
    for i in range(0, x.size, chunk):
        out += fs.push(x[i:i + chunk])
    return out + fs.flush()


def native_features(x48: np.ndarray) -> list:
    from engine.audio import FeatureStream

    return _stream(FeatureStream(sample_rate=48000), x48, 960)


def resampled_features(x48: np.ndarray) -> list:
    import soxr

    from engine.audio import FeatureStream

    rs = soxr.ResampleStream(48000, 16000, 1, dtype="float32", quality="HQ")
    parts = [rs.resample_chunk(x48[i:i + 960]) for i in range(0, x48.size, 960)]
    parts.append(rs.resample_chunk(np.zeros(0, np.float32), last=True))
    return _stream(FeatureStream(), np.concatenate(parts), 320)


def main(argv=None) -> int:
    import soxr

    from engine.audio import FeatureStream
    from engine.audio.input import resampler_lag_ms

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
        ref, nat = resampled_features(x48), native_features(x48)
        n = min(len(ref), len(nat))
        mel_r = np.stack([f.mel[-1] for f in ref[:n]])             # each frame's newest mel row
        mel_n = np.stack([f.mel[-1] for f in nat[:n]])
        sound = mel_r.max(1) > -12.0                    # frames with sound in them
        d = np.abs(mel_n - mel_r)
        rows.append({"name": path.stem, "frames": int(n), "mean_abs_diff": float(d[sound].mean()),
                     "p99_abs_diff": float(np.quantile(d[sound], 0.99)), "feature_std": float(mel_r[sound].std()),
                     "voiced_abs_diff": float(np.mean([abs(a.voiced - b.voiced) for a, b in zip(ref, nat)])),
                     "rms_rel_diff": float(np.median([abs(a.rms - b.rms) / b.rms for a, b in zip(ref, nat)
                                                      if b.rms > 1e-3]))})
    if not rows:
        raise SystemExit(f"{args.data}: no utt*.wav files")
    report = {"benchmark": "native_features", "utterances": len(rows),
              "mean_abs_diff": float(np.mean([r["mean_abs_diff"] for r in rows])),
              "p99_abs_diff": float(np.median([r["p99_abs_diff"] for r in rows])),
              "feature_std": float(np.mean([r["feature_std"] for r in rows])),
              "voiced_abs_diff": float(np.mean([r["voiced_abs_diff"] for r in rows])),
              "rms_rel_diff": float(np.median([r["rms_rel_diff"] for r in rows])),
              "latency_ms": {"native_48k": FeatureStream(sample_rate=48000).latency_ms,
                             "resampled": resampler_lag_ms(48000)[1] + FeatureStream().latency_ms},
              "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: report[k] for k in ("utterances", "mean_abs_diff", "p99_abs_diff", "feature_std",
                                             "voiced_abs_diff", "rms_rel_diff", "latency_ms")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
