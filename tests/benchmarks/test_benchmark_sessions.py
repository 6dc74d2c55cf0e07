"""Smoke test of ``python -m benchmarks.sessions``: real paced sessions in threads, batching on
and off; rows and the summary are written (no timing assertions)."""
import json

from benchmarks import sessions


def test_sessions_benchmark_writes_rows_for_both_modes(tmp_path):
    report = sessions.main(["--seconds", "1", "--max-sessions", "2", "--max-drop", "1.0", "--out-dir", str(tmp_path),
                            "--no-plot"])
    data = json.loads((tmp_path / "sessions.json").read_text())
    assert data == json.loads(json.dumps(report))
    got = {(r["mode"], r["sessions"]) for r in data["results"]}
    assert got == {(m, n) for m in ("plain", "batching") for n in (1, 2)}      # max-drop 100 %: never stops early
    for r in data["results"]:
        assert r["delivered"] > 0 and 0.0 <= r["drop_rate"] <= 1.0 and r["synthesis_p50_ms"] > 0
        if r["mode"] == "batching":
            assert 1.0 <= r["mean_batch"] <= r["sessions"]
    assert data["max_sessions_holding"] == {"plain": 2, "batching": 2}
