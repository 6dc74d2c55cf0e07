"""engine.demo_world.talking: espeak-ng utterances with phoneme-timed mouth tracks, written in the
motion trainer's pair format, a held-out voice kept apart, deterministic and resumable."""
from __future__ import annotations

import json

import numpy as np
import pytest

from engine.demo_world import speech, talking

pytestmark = pytest.mark.skipif(not speech.available(), reason="libespeak-ng is not installed (apt-get install espeak-ng)")


def test_dataset_pairs_fit_the_motion_trainer(tmp_path):
    from engine.motion.dataset import LENGTH_TOLERANCE, frame_windows, read_wav

    meta = talking.write_dataset(tmp_path / "d", 12, seed=1, progress=False)
    assert meta["train"] + meta["holdout"] == 12 and meta["holdout"] >= 1
    train = sorted((tmp_path / "d").glob("utt*.json"))
    held = sorted((tmp_path / "d" / "holdout").glob("utt*.json"))
    assert len(train) == meta["train"] and len(held) == meta["holdout"]
    assert all(json.loads(p.read_text())["voice"].startswith("en-029") for p in held)
    assert not any(json.loads(p.read_text())["voice"].startswith("en-029") for p in train)
    for rec_path in train[:4] + held[:1]:
        rec = json.loads(rec_path.read_text())
        stem = rec_path.with_suffix("")
        track = np.load(f"{stem}.mouth.npy")
        windows = frame_windows(read_wav(f"{stem}.wav"), rec["fps"], 32, 40.0)   # what the trainer sees
        assert abs(windows.shape[0] - track.size) <= LENGTH_TOLERANCE
        assert track.size == rec["frames"] and 0 <= track.min() and track.max() <= 1 and track.max() > 0.5
        assert rec["phonemes"][-1][2] == int(round(rec["duration_s"] * rec["sample_rate"]))


def test_deterministic_resumable_and_refuses_other_settings(tmp_path):
    assert talking.utterance_spec(0, 5) == talking.utterance_spec(0, 5)
    assert talking.utterance_spec(0, 5) != talking.utterance_spec(1, 5)
    texts = {talking.utterance_spec(0, i)["text"] for i in range(50)}
    assert len(texts) == 50                                              # varied sentences
    out = tmp_path / "d"
    talking.write_dataset(out, 4, progress=False)
    first = {p.name: p.stat().st_mtime_ns for p in out.rglob("utt*")}
    talking.write_dataset(out, 6, progress=False)                        # grows; the first four are kept
    assert all((out.rglob(n).__next__()).stat().st_mtime_ns == t for n, t in first.items())
    assert json.loads((out / "meta.json").read_text())["n"] == 6
    with pytest.raises(ValueError, match="made with seed=0"):
        talking.write_dataset(out, 6, seed=1, progress=False)


def test_cli_one_line_errors(tmp_path, capsys):
    for argv, match in ((["--out", str(tmp_path), "--n", "0"], "--n must be at least 1"),
                        (["--out", str(tmp_path), "--holdout-voice", "xx"], "--holdout-voice must be one of")):
        with pytest.raises(SystemExit) as exc:
            talking.main(argv)
        err = capsys.readouterr().err
        assert exc.value.code == 2 and match in err and err.count("\n") == 1
