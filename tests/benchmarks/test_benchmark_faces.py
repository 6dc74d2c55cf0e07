"""Smoke test of ``python -m benchmarks.faces``: one size, one repeat, into a temporary folder.

No timing assertions: it checks that every configuration ran and the promised JSON (+ PNG) exists.
"""
import importlib.util
import json

import pytest

pytest.importorskip("dlib", reason="needs the faces extra: pip install 'stylecast[faces]'")
pytest.importorskip("cv2", reason="needs the faces extra: pip install 'stylecast[faces]'")
pytest.importorskip("skimage", reason="needs scikit-image (the dev extra) for its astronaut photo")
if importlib.util.find_spec("face_recognition_models") is None:
    pytest.skip("needs the faces extra: pip install 'stylecast[faces]'", allow_module_level=True)

from benchmarks import faces  # noqa: E402


def test_quick_run_writes_json(tmp_path):
    report = faces.main(["--sizes", "128", "--repeats", "1", "--out-dir", str(tmp_path), "--quiet"])
    data = json.loads((tmp_path / "faces.json").read_text())
    assert data == json.loads(json.dumps(report))
    assert data["benchmark"] == "faces" and data["repeats"] == 1
    (row,) = data["sizes"]
    assert row["size"] == 128
    assert set(row["read_ms"]) == set(faces.CONFIGS) and all(v > 0 for v in row["read_ms"].values())
    assert row["found"]["hog"] == "detector" and row["found"]["aligned"] == "aligned"
    assert set(row["parts_ms"]) == {"hog_detect", "landmarks68", "pose", "embedding"}
    assert row["read_ms"]["hog_embed"] > row["read_ms"]["hog"]          # the ResNet is the costly part
    png = tmp_path / "faces.png"
    assert not png.exists() or png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "1" in faces.format_table(data["sizes"])
