"""``python -m benchmarks.photo_upload`` end to end, shortened: a real server process, a streaming
client uploading scikit-image's astronaut; the inversion finishes, progress arrived, the JSON
holds the frame rates (no timing assertions)."""
import json

import pytest

from benchmarks import photo_upload

pytest.importorskip("skimage.data", reason="needs scikit-image (the dev extra) for its astronaut photo")
pytest.importorskip("dlib", reason="needs the faces extra to find the face")


def test_short_photo_upload_run(tmp_path):
    out = tmp_path / "photo_upload.json"
    assert photo_upload.main(["--baseline", "2", "--timeout", "300", "--out", str(out), "--server-args",
                              "--no-admission", "--photo-steps", "10", "--photo-wplus-steps", "5"]) == 0
    report = json.loads(out.read_text())
    assert report["upload_status"] == 202 and report["upload_answer"]["steps"] == 15
    assert report["identity_message"]["photo"] is True and report["identity_message"]["psnr_db"] > 5
    assert report["during"]["progress_messages"] >= 1
    assert report["baseline_fps"] > 10 and report["after_fps"] > 10     # the client streamed throughout
