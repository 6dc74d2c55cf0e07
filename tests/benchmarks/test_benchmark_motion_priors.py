"""benchmarks.motion_priors: the measures on planted motion, and one short run on real speech
(espeak-ng utterances through the feature stream and the demo's default driver)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks import motion_priors as mp

FPS = 25.0


def test_measure_reads_planted_motion():
    n = int(120 * FPS)
    t = np.arange(n) / FPS
    names = ["head_yaw", "head_pitch", "head_roll", "blink", "gaze_x"]
    speaking = (t % 4) < 2
    level = np.where(speaking, 0.6, 0.0)
    x = np.zeros((n, len(names)))
    x[:, 1] = np.where(speaking, 0.3 * np.sin(2 * np.pi * 1.0 * t), 0.0)      # nods only while speaking
    x[:, 2] = 0.05 * np.sin(2 * np.pi * 5.0 * t)                                # a fast roll: energy above 2 Hz
    ends = np.nonzero(np.diff(speaking.astype(int)) == -1)[0] + 1
    for e in ends:                                                              # a blink after each phrase
        x[e + 5:e + 10, 3] = 1.0
    x[(t % 10) < 2, 4] = 0.8                                                    # gaze away 20 % of the time
    r = mp.measure(x, names, level, speaking, FPS)
    assert r["below_2hz"]["head_pitch"] > 0.95 and r["below_2hz"]["head_roll"] < 0.5
    assert r["speech_coupling"]["speed_rms_speech"] > 2 * r["speech_coupling"]["speed_rms_silence"]
    assert r["blinks"]["share_after_phrase_end"] == 1.0 and r["blinks"]["per_minute"] == pytest.approx(15, abs=1)
    assert r["blinks"]["chance"] == pytest.approx(1.5 / 4, abs=0.02)
    assert r["gaze"]["share_away"] == pytest.approx(0.2, abs=0.01) and r["gaze"]["shifts_per_minute"] == pytest.approx(6, abs=1)


def test_speaking_per_frame_bridges_short_pauses():
    mask = np.zeros(16000 * 3, bool)
    mask[:16000] = True                       # 1 s of speech, a 0.2 s pause, 0.5 s of speech, then silence
    mask[int(1.2 * 16000):int(1.7 * 16000)] = True
    per = mp.speaking_per_frame(mask, FPS, int(3 * FPS))
    assert per[:int(1.7 * FPS)].all() and not per[int(1.8 * FPS):].any()


def test_a_short_run_on_real_speech(tmp_path):
    from engine.demo_world import speech, talking
    if not speech.available():
        pytest.skip("libespeak-ng is not installed (apt-get install espeak-ng)")
    talking.write_dataset(tmp_path / "t", 4, seed=3, holdout_voice=None, progress=False)
    out = tmp_path / "mp.json"
    assert mp.main(["--data", str(tmp_path / "t"), "--minutes", "1", "--out", str(out)]) == 0
    rep = json.loads(out.read_text())
    on, off = rep["runs"]["on"], rep["runs"]["off"]
    assert all(v > 0.9 for v in on["below_2hz"].values())
    # the priors couple the head to the voice; without them the sway ignores it
    assert on["speech_coupling"]["corr_level_speed_1s"] > off["speech_coupling"]["corr_level_speed_1s"] + 0.1
    assert on["speech_coupling"]["speed_rms_speech"] > on["speech_coupling"]["speed_rms_silence"]
    assert on["gaze"]["shifts_per_minute"] > off["gaze"]["shifts_per_minute"]
    assert out.with_suffix(".png").stat().st_size > 10_000
