"""Hostile checkpoints (built here by benchmarks.hostile) cannot crash, hang or blow up the readers:
each is refused with one CheckpointError naming the file and the limit, before anything is built."""
from __future__ import annotations

import io
import pickle
import subprocess
import sys
import time

import pytest

from benchmarks import hostile
from engine.synthesis.checkpoints import CheckpointError, read_checkpoint
from engine.synthesis.pickle_scan import PickleLimitError, PickleLimits, scan_pickle

IN_PROCESS = [c for c in hostile.CASES if c not in ("deep_keys_1m", "fifo")] + list(hostile.DEVICE_CASES)


@pytest.mark.parametrize("case", IN_PROCESS)
def test_each_hostile_file_is_refused_naming_the_limit(case, tmp_path):
    path, phrase = hostile.build(case, tmp_path)
    t0 = time.monotonic()
    with pytest.raises(CheckpointError) as err:
        read_checkpoint(path)
    msg = str(err.value)
    assert msg.startswith(str(path)) and phrase in msg and "\n" not in msg, msg
    assert time.monotonic() - t0 < 10


@pytest.mark.parametrize("case", ["deep_keys_1m", "fifo"])
def test_the_cli_survives_the_segfault_and_the_fifo(case, tmp_path):
    """Before: a million-deep key killed the process (SIGSEGV); a FIFO blocked it for ever."""
    path, phrase = hostile.build(case, tmp_path)
    r = hostile.run_case(path, timeout=60)
    assert r["exit"] == 2 and r["stderr_lines"] == 1 and not r["traceback"], r
    assert phrase in r["stderr"] and str(path) in r["stderr"], r


def test_a_real_network_pickle_passes_the_scan_with_room(tmp_path):
    """The fixture NVlabs pickle sits far inside every limit (depth ~33 of 200, fewer expanded
    nodes than opcodes), so the limits refuse bombs, not networks."""
    from engine.synthesis.networks import demo_generator
    from formats import write_nvlabs_pkl

    path = write_nvlabs_pkl(demo_generator(), tmp_path / "g.pkl")
    with open(path, "rb") as f:
        report = scan_pickle(f, path.stat().st_size)
    assert 20 <= report.depth <= 60 and report.nodes <= report.ops and report.end == path.stat().st_size
    assert read_checkpoint(path).config.img_resolution == 128


def test_limits_are_configurable_and_exact():
    nested = hostile.deep_keys(50)          # depth: the dict, 50 tuples, the None inside
    scan_pickle(io.BytesIO(nested), len(nested), PickleLimits(max_depth=52))
    with pytest.raises(PickleLimitError, match="deeper than 51"):
        scan_pickle(io.BytesIO(nested), len(nested), PickleLimits(max_depth=51))
    bomb = hostile.laughs(12)               # 2^12 leaves from ~30 opcodes
    scan_pickle(io.BytesIO(bomb), len(bomb), PickleLimits(min_nodes=10_000))
    with pytest.raises(PickleLimitError, match="billion laughs"):
        scan_pickle(io.BytesIO(bomb), len(bomb), PickleLimits(min_nodes=4_000, node_factor=1))


def test_the_scan_deadline_stops_a_slow_file():
    big = pickle.dumps(list(range(200_000)), protocol=4)
    with pytest.raises(PickleLimitError, match="longer than 0 s"):
        scan_pickle(io.BytesIO(big), len(big), PickleLimits(deadline_s=0.0))


def test_truncated_and_garbage_pickles_are_corrupt_not_limits():
    for data in (b"\x80\x04(K\x01K\x02", b"\x80\x04\xffgarbage"):
        with pytest.raises(pickle.UnpicklingError) as err:
            scan_pickle(io.BytesIO(data), len(data))
        assert not isinstance(err.value, PickleLimitError) and "corrupt" in str(err.value)


def test_hostile_benchmark_runs_one_case(tmp_path):
    out = tmp_path / "hostile.json"
    r = subprocess.run([sys.executable, "-m", "benchmarks.hostile", "--case", "laughs", "--out", str(out)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    import json
    data = json.loads(out.read_text())
    assert data["benchmark"] == "hostile" and data["cases"][0]["ok"] and data["cases"][0]["exit"] == 2
