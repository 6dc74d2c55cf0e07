"""``python -m benchmarks.native_features`` on a synthetic utterance: the session's 48 kHz features
land on the resampled path's 16 kHz ones (same frames, same band, same scale) within a small
error, without the resampler's lag."""
import json
import wave

import numpy as np

from benchmarks import native_features


def test_native_48k_log_mel_matches_the_live_features(tmp_path):
    rng = np.random.default_rng(0)
    t = np.arange(32000) / 16000
    x = 0.3 * np.sin(2 * np.pi * 220 * t) * (1 + np.sin(2 * np.pi * 3 * t)) + 0.05 * rng.standard_normal(t.size)
    with wave.open(str(tmp_path / "utt00000.wav"), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
        w.writeframes((np.clip(x, -1, 1) * 32767).astype(np.int16).tobytes())
    out = tmp_path / "r.json"
    assert native_features.main(["--data", str(tmp_path), "--out", str(out)]) == 0
    r = json.loads(out.read_text())
    assert r["utterances"] == 1 and r["rows"][0]["frames"] >= 48          # video frames of 2 s at 25 fps
    assert r["mean_abs_diff"] < 0.1 * r["feature_std"], r     # a wrong scale (no / 9) would be log 9 = 2.2 off
    assert r["voiced_abs_diff"] < 0.2 and r["rms_rel_diff"] < 0.01
    assert r["latency_ms"]["native_48k"] == 40.0 and r["latency_ms"]["resampled"] > 70
