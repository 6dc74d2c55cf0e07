"""Smoke test of ``python -m benchmarks.inversion``: two held-out demo faces through the photo
path with few steps (no timing assertions: every part ran and the JSON and grid hold it)."""
import json

import pytest

from benchmarks import inversion

pytest.importorskip("dlib", reason="needs the faces extra (the photo path searches for the face)")


def test_quick_run_writes_json_and_grid(tmp_path):
    out = tmp_path / "inversion.json"
    assert inversion.main(["--faces", "2", "--steps", "8", "--wplus-steps", "4", "--sizes", "--grid-rows", "2",
                           "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert len(report["faces"]) == 2 and all(f["psnr_db"] > 5 for f in report["faces"])
    assert {f["path"] for f in report["faces"]} <= {"detected and aligned", "no face found: resized"}
    assert "skin_r" in report["identity_fields"] and report["seconds_per_step_ffhq_shape"] == {}
    from PIL import Image

    with Image.open(out.with_suffix(".png")) as grid:
        assert grid.size == (5 * 128, 2 * 128)
