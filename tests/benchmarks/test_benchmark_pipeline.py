"""Smoke test of ``python -m benchmarks.pipeline``: runs a real AvatarSession with aiortc's VP8
encoder and writes the per-stage JSON (no timing assertions)."""
import json

import pytest

pytest.importorskip("aiortc", reason="the encode stage uses aiortc's encoder (the serve extra)")

from benchmarks import pipeline  # noqa: E402


def test_pipeline_benchmark_writes_every_stage(tmp_path):
    report = pipeline.main(["--seconds", "1.5", "--warmup", "2", "--out-dir", str(tmp_path), "--no-plot"])
    data = json.loads((tmp_path / "pipeline.json").read_text())
    assert data == json.loads(json.dumps(report))
    # the last frames wait for audio past the end (lookahead) or still inside the resampler
    expected = int((1.5 - data["settings"]["latency_ms"] / 1000) * 25) - 2
    assert expected - 1 <= data["frames"] <= expected + 1
    for stage in pipeline.STAGES:
        st = data["stages_ms"][stage]
        assert st["n"] == data["frames"] and st["p50"] >= 0 and st["p99"] >= st["p50"]
    assert data["stages_ms"]["synthesis"]["p50"] > 0 and data["stages_ms"]["encode"]["p50"] > 0
    # 48 kHz audio: features at 48 kHz, no resampler lag; the shipped driver's 20 ms lookahead only
    assert data["settings"]["latency_ms"] == pytest.approx(20.0)
    assert data["sustained_fps"] > 0
