"""``python -m benchmarks.abuse`` end to end, shortened: a real server process, a streaming client,
the JSON and control-flood phases; every answer expected, the server alive with a clean log."""
import json

from benchmarks import abuse
from benchmarks.abuse_cases import STATUS_OK


def test_short_abuse_run(tmp_path):
    out = tmp_path / "abuse.json"
    assert abuse.main(["--phases", "json", "control", "--control-seconds", "2", "--baseline", "2", "--gap", "1",
                       "--out", str(out), "--", "--no-admission"]) == 0
    report = json.loads(out.read_text())
    assert report["server_alive_at_end"] and report["server_tracebacks"] == 0 and report["server_errors"] == 0
    answers = report["phases"]["json"]["answers"]
    assert sum(answers.values()) >= 60 and {int(k) for k in answers if k.isdigit()} <= STATUS_OK
    assert not report["phases"]["json"]["unexpected"]
    control = report["phases"]["control"]["answers"]
    assert control["sent"] == 2000 and 0 < control["answered"] < control["sent"]
    assert report["baseline_fps"] > 10                        # the client streamed
