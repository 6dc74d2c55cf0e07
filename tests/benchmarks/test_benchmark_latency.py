"""benchmarks.latency: the probe tracks and detectors on known inputs, then a shortened real run
(server processes on 127.0.0.1, the aiortc client, and headless Chromium where it is installed)."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from benchmarks import latency, latency_probes
from benchmarks.latency_browser import CHROMIUM, analyse_browser, block_means
from benchmarks.latency_floor import BRIGHT, DARK, floor_frame


def test_burst_and_cut_tracks_put_their_edges_where_they_say():
    pcm, starts = latency_probes.burst_track(6.0, 3)
    assert len(starts) == 3 and starts == sorted(starts)
    for n in starts:
        assert not pcm[(n - 1) * 960:n * 960].any() and np.abs(pcm[n * 960:n * 960 + 960]).max() > 1000
    pcm, cuts = latency_probes.cut_track(2, on_s=1.0, off_s=1.2)
    for n in cuts:
        assert np.abs(pcm[(n - 1) * 960:n * 960]).max() > 1000 and not pcm[n * 960:(n + 30) * 960].any()
    assert cuts[1] - cuts[0] == 110                     # 2.2 s of 20 ms packets


def test_rest_times_finds_the_first_frame_at_rest_after_each_start():
    times = np.arange(0, 2, 0.04)
    diffs = np.where((times > 0.5) & (times < 0.62), 40.0, 2.0)    # moved 0.52 to 0.60: rest at 0.64
    diffs[(times > 1.0) & (times < 1.9)] = 40.0                     # moved until 1.88, then at rest
    got = latency_probes.rest_times(None, times, diffs, threshold=15.0, starts=[0.5, 1.0, 1.5])
    assert got == pytest.approx([140.0, 920.0, 420.0], abs=1e-6)
    assert latency_probes.rest_times(None, times, np.full(times.size, 40.0), 15.0, [0.1]) == [None]


def test_floor_frames_and_block_means():
    quiet, loud = floor_frame(64), floor_frame(64, loud=True)
    assert abs(float(quiet.mean()) - DARK) < 1.0 and (loud != quiet).any()
    assert (loud[28:36, 28:36].astype(int) - quiet[28:36, 28:36]).min() == BRIGHT - DARK
    m = block_means(loud)
    assert m.size == (60 // 8) * (64 // 8)               # the 4 px stamp row left out
    assert m.max() > BRIGHT - 15 and np.median(m) < DARK + 15


def test_analyse_browser_detects_onsets_against_references():
    refs = np.broadcast_to(floor_frame(64), (40, 64, 64, 3))
    frames = []
    for k in range(40):
        img = floor_frame(64, loud=12 <= k < 16 or 30 <= k < 33)
        frames.append({"t": 1000.0 + 40 * k, "stamp": k, "means": block_means(img).tolist()})
    res = analyse_browser({"frames": frames, "onsets": [1000 + 40 * 10 + 5, 1000 + 40 * 28 + 5]},
                          lambda n: refs[:n])
    assert res["detected"] == 2 and res["latencies_ms"] == [75.0, 75.0]
    assert res["frames_skipped"] == 0 and res["fps_delivered"] == pytest.approx(25.0)


def test_short_run_sees_every_burst_and_the_barge_in(tmp_path):
    out = tmp_path / "latency.json"
    argv = ["--only", "floor@25,stylecast@25,barge-in", "--seconds", "6", "--bursts", "3", "--trials", "2",
            "--out", str(out)]
    browser = os.path.exists(CHROMIUM)
    if browser:
        argv.append("--browser")
    assert latency.main(argv) == 0
    res = json.loads(out.read_text())
    assert set(res["runs"]) == {"floor@25", "stylecast@25", "stylecast@25 marker"}
    for name, run in res["runs"].items():
        assert run["detected"] == run["bursts"] == 3, (name, run)
        assert all(20 < x < 1000 for x in run["latencies_ms"]), (name, run["latencies_ms"])
        assert run["fps_delivered"] > 15, (name, run)
    sc = res["runs"]["stylecast@25"]["server"]
    assert sc["stages_ms"]["synthesis"]["p50"] > 0 and sc["latency_ms"] == pytest.approx(40.0)
    barge = res["barge_in"]
    assert barge["trials"] == 2 and barge["interrupt_to_rest_ms"]["all"][0] is not None, barge
    assert res["algorithmic"]["25"]
    assert out.with_suffix(".png").stat().st_size > 1000
    if browser:
        assert set(res["browser"]) == {"floor@25", "stylecast@25"}
        for name, run in res["browser"].items():
            assert run["detected"] == run["bursts"] == 3, (name, run)
