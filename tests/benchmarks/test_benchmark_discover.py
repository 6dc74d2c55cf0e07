"""Smoke test of ``python -m benchmarks.discover``: a few images, into a temporary folder (no timing
assertions: every part ran and the JSON holds it)."""
import json

from benchmarks import discover
from engine.latent.defaults import faces_available


def test_quick_run_writes_json(tmp_path):
    report = discover.main(["--images", "4", "--out-dir", str(tmp_path)])
    data = json.loads((tmp_path / "discover.json").read_text())
    assert data == json.loads(json.dumps(report)) and data["images"] == 4
    assert all(v > 0 for v in data["render_per_1000_s"].values())
    assert set(data["render_per_1000_s"]) == {"demo_128", "ffhq_shape_256"}
    m = data["measure_ms_per_image_demo"]
    assert m["probes_ms"] > 0
    if faces_available():
        assert m["landmarks_ms"] > 0 and m["embedding_ms"] > 0 and 0 <= m["landmarks_detected_fraction"] <= 1
