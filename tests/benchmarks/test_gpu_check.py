"""The prepared GPU check, ``benchmarks/gpu_check.sh``, in its dry run: every step on the CPU at the
smallest size (about 1.5 min on one core), into a tmp folder. The summary lists every step with
exit code 0 and each step's JSON exists and parses. The GPU run itself needs an NVIDIA GPU."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from repo_paths import REPO  # noqa: E402

SCRIPT = REPO / "benchmarks" / "gpu_check.sh"
STEPS = ["install", "preflight", "parity", "synthesis", "synthesis_graphs", "checkpoint", "sessions", "loopback"]
OUTPUTS = {"preflight": "preflight.json", "parity": "parity.json", "synthesis": "synthesis/synthesis.json",
           "synthesis_graphs": "synthesis_graphs/synthesis.json", "sessions": "sessions.json",
           "loopback": "loopback.json"}

pytestmark = pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None,
                                reason="the check is a bash script that needs coreutils' timeout")


def run_check(out: Path, **env_extra) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("OUT", "GPU_CHECK_DEADLINE", "GPU_CHECK_DRY")}
    env.update(OMP_NUM_THREADS="1", PYTHON=sys.executable, **env_extra)
    return subprocess.run(["bash", str(SCRIPT), "--dry-run", str(out)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=400, stdin=subprocess.DEVNULL)


def test_script_parses():
    assert subprocess.run(["bash", "-n", str(SCRIPT)], capture_output=True).returncode == 0
    if shutil.which("shellcheck"):
        res = subprocess.run(["shellcheck", "-x", str(SCRIPT)], capture_output=True, text=True)
        assert res.returncode == 0, res.stdout


def test_dry_run_runs_every_step(tmp_path):
    out = tmp_path / "out"
    proc = run_check(out)
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    summary = json.loads((out / "gpu_check_summary.json").read_text())
    assert summary["mode"] == "dry-run (CPU)" and summary["all_ok"] is True
    assert [s["name"] for s in summary["steps"]] == STEPS
    for s in summary["steps"]:
        assert s["exit_code"] == 0 and not s["timed_out"] and s["output_ok"], s
        assert 0 <= s["seconds"] <= s["timeout_s"]
    by_name = {s["name"]: s for s in summary["steps"]}
    for name, rel in OUTPUTS.items():
        assert by_name[name]["output"] == rel
    data = {name: json.loads((out / rel).read_text()) for name, rel in OUTPUTS.items()}

    pre = data["preflight"]
    assert pre["dry_run"] is True and pre["torch"]["version"] and pre["problems"] == []
    # the GPU commands' flags, checked against each CLI's --help
    assert set(pre["gpu_command_flags"]) == {"benchmarks.gpu_parity", "benchmarks.synthesis", "benchmarks.sessions",
                                             "benchmarks.loopback"}
    assert "--cuda-graphs" in pre["gpu_command_flags"]["benchmarks.synthesis"]["flags"]
    assert "--no-discover" in pre["gpu_command_flags"]["benchmarks.sessions"]["flags"]
    assert all(c["missing"] == [] for c in pre["gpu_command_flags"].values())

    par = data["parity"]
    assert par["ok"] is True and [r["generator"] for r in par["results"]] == ["demo", "ffhq-shape-32"]
    for r in par["results"]:
        v = r["variants"]
        assert v["float16_channels_last_cuda_graphs"] == {"skipped": "needs CUDA"}
        assert v["bfloat16_channels_last"]["ok"] and v["float32_channels_last"]["max_abs"] < 1e-4

    for name in ("synthesis", "synthesis_graphs"):
        rows = data[name]["results"]
        assert rows and all("error" not in r and r["ms_per_frame"] > 0 for r in rows)
    assert data["synthesis_graphs"]["settings"]["channels_last"] is True

    ses = data["sessions"]
    assert {(r["mode"], r["sessions"]) for r in ses["results"]} == {(m, n) for m in ("plain", "batching")
                                                                   for n in (1, 2)}
    assert ses["settings"]["discover"] is False and ses["resolution"] == 32

    lb = data["loopback"]
    assert lb["benchmark"] == "loopback" and lb["end_to_end"]["frames_received"] > 0

    # flat, at most 8 files (what the device tool brings back), the log holds every step
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert files == sorted(["gpu_check.log", "gpu_check_summary.json", *OUTPUTS.values()])
    log = (out / "gpu_check.log").read_text()
    assert all(f"===== {name}: exit 0" in log for name in STEPS)


def test_a_spent_deadline_records_every_step_and_fails(tmp_path):
    """Steps past the run's deadline are not run but still recorded (exit 124); the run goes on to
    the end and exits non-zero."""
    out = tmp_path / "out"
    proc = run_check(out, GPU_CHECK_DEADLINE="12")
    assert proc.returncode != 0
    summary = json.loads((out / "gpu_check_summary.json").read_text())
    assert [s["name"] for s in summary["steps"]] == STEPS and summary["all_ok"] is False
    last = summary["steps"][-1]
    assert last["exit_code"] == 124 and last["timed_out"] and last["timeout_s"] == 0
    assert any("deadline" in line for line in last["log_tail"])
    assert summary["seconds"] < 60
