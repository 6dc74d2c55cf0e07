"""``python -m benchmarks.churn_objects`` shortened: sessions churned against an in-process server;
the report holds the traced growth and every session is gone at the end (no numbers asserted)."""
import json

from benchmarks import churn_objects


def test_short_churn_objects_run(tmp_path):
    out = tmp_path / "churn.json"
    assert churn_objects.main(["--sessions", "2", "--warmup", "1", "--seconds", "1.5", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["sessions"] == 2 and report["clients_left"] == 0
    assert isinstance(report["traced_growth_kib"], float) and report["top_lines"]
    assert all("churn_objects.py" not in line["where"] for line in report["top_lines"])
