"""benchmarks.bots: the analysis on a recording with known answers, then a short real run of both
integrations (pipecat's pipeline and LiveKit's AvatarRunner, in this process)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks import bots

pytest.importorskip("pipecat", reason="the pipecat extra is not installed (pip install 'stylecast[pipecat]')")
pytest.importorskip("livekit.agents", reason="the livekit extra is not installed (pip install 'stylecast[livekit]')")


def test_analyse_reads_first_frame_offset_stalls_and_the_cut_from_a_known_recording():
    fps, per = 25.0, bots.OUT_RATE // 25
    rec = bots.Recorder()
    turns = [bots.Turn(np.zeros(22050, np.int16), 22050, 0.5, None), bots.Turn(np.zeros(44100, np.int16), 22050, 0.5, 1.0)]
    img = lambda v: np.full((4, 4, 3), v, np.uint8)              # noqa: E731  the "mouth" is the pixel value
    t = 100.0
    for k in range(200):                                          # 8 s of frames, one 200 ms hole at frame 150
        t += 0.2 if k == 150 else 0.04
        if k == 10:
            rec.events.append(("start", t - 0.03, 0))             # turn 0: first chunk 70 ms before frame 11
        if k == 60:
            rec.events.append(("end", t, 0))
        if k == 100:
            rec.events.append(("start", t - 0.01, 1))
        if k == 125:
            rec.events.append(("cut", t + 0.001, 1))
        talk = 11 <= k < 60 or 101 <= k < 127                    # two frames still talk after the cut
        mouth = 200 if talk else 10
        rec.events.append(("img", t, img(mouth) if (k % 5 == 0 or 120 <= k < 140) else None))
        if talk:
            rec.events.append(("aud", t, per))
    res = bots.analyse(rec, turns, fps, lambda ims: np.array([float(im[0, 0, 0]) / 255 for im in ims]))
    assert res["first_talking_frame_ms"]["n"] == 2
    assert res["first_talking_frame_ms"]["max"] == pytest.approx(70.0, abs=1e-6)
    assert res["av_offset_in_turn_ms"]["max"] == pytest.approx(0.0, abs=1e-6)
    assert res["talking_frames_with_other_audio_length"] == 0
    assert res["gaps_ms"]["stalls_over_3_frames"] == 1 and res["gaps_ms"]["max"] == pytest.approx(200.0)
    cut = res["interruption"]
    assert cut["cut_to_mouth_at_rest_ms"]["max"] == pytest.approx(80.0 - 1.0, abs=1e-6)    # frame 127
    assert cut["audio_after_cut_ms"]["max"] == pytest.approx(40.0)          # frame 126 (125 went before the cut)
    assert res["talking_frames"] == 75


def test_short_run_of_both_integrations(tmp_path):
    out = tmp_path / "bots.json"
    assert bots.main(["--minutes", "0.4", "--seed", "3", "--out", str(out)]) == 0
    res = json.loads(out.read_text())
    for name in ("pipecat", "livekit"):
        run = res["runs"][name]
        assert run["frames"] > 0.4 * 60 * 20, (name, run["frames"])
        assert run["talking_frames"] > 50
        assert run["first_talking_frame_ms"]["n"] == run["turns"], name
        assert 0 < run["first_talking_frame_ms"]["max"] < 1000, name
        assert run["av_offset_in_turn_ms"]["max"] < 1.0 and run["talking_frames_with_other_audio_length"] == 0
        assert run["session_stats"]["frames"] > 0
    assert res["runs"]["pipecat"]["stops_out"] == res["runs"]["pipecat"]["stops_sent"]
    pf = res["runs"]["livekit"]["playback_finished"]
    assert pf["sent"] == pf["segments"] == res["runs"]["livekit"]["turns"]
