"""Smoke test of ``python -m benchmarks.inversion``: two held-out demo faces through the photo
path three ways (W, W+, tuned) with few steps, and the real photos of the installed packages (no
timing assertions: every part ran and the JSON and grid hold it)."""
import json

import pytest

from benchmarks import inversion

pytest.importorskip("dlib", reason="needs the faces extra (the photo path searches for the face)")


def test_quick_run_writes_json_and_grid(tmp_path):
    out = tmp_path / "inversion.json"
    pytest.importorskip("skimage.data", reason="needs scikit-image (the dev extra) for its astronaut photo")
    assert inversion.main(["--faces", "2", "--steps", "8", "--wplus-steps", "4", "--tune-steps", "4", "--sizes",
                           "--grid-rows", "2", "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert len(report["faces"]) == 2
    assert all(f[v]["psnr_db"] > 5 for f in report["faces"] for v in inversion.VARIANTS)
    assert {f["path"] for f in report["faces"]} <= {"detected and aligned", "no face found: resized"}
    assert set(report["identity_fields"]["skin_r"]) == {*inversion.VARIANTS, "photo (ceiling)"}
    assert "mouth_open" in report["faces"][0]["w+ tuned"]["motion"]
    assert report["seconds_per_step_ffhq_shape"] == {}
    photos = report["real_photos"]
    assert set(photos) == {"astronaut (scikit-image)", "Grace Hopper (matplotlib)"}
    for row in photos.values():
        check = row["alignment_ffhq_1024"]
        assert len(check["offset_px"]) == 3 and check["offset_over_eye_distance"] < 0.5, check
        assert row["demo w+ tuned"]["psnr_db"] > 5
    from PIL import Image

    with Image.open(out.with_suffix(".png")) as grid:
        assert grid.size == (7 * 128, 2 * 128)
