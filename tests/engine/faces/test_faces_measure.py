"""The face measure (``engine.faces``) on real photographs and known edits of them.

The photos ship inside installed packages (scikit-image's astronaut, Eileen Collins; matplotlib's
Grace Hopper); the edits (``tests/face_edits.py``) move landmarks by known amounts with a
piecewise-affine warp: the lower lip down k px, the upper lids toward the lower lids, an in-plane
rotation, a mirror. Most checks run on FFHQ-recipe aligned 256 px crops, the kind of image a
face generator makes. Skipped without the ``faces`` extra or scikit-image.
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("dlib", reason="needs the faces extra: pip install 'stylecast[faces]'")
cv2 = pytest.importorskip("cv2", reason="needs the faces extra: pip install 'stylecast[faces]'")
skdata = pytest.importorskip("skimage.data", reason="needs scikit-image (the dev extra) for its astronaut photo")
if importlib.util.find_spec("face_recognition_models") is None:
    pytest.skip("needs the faces extra: pip install 'stylecast[faces]'", allow_module_level=True)

import face_edits as fe  # noqa: E402
from PIL import Image  # noqa: E402

from engine.faces import (FFHQ_BOX, KEYS, SAME_PERSON, FaceMeasure, FaceModelsMissing, FaceReading,  # noqa: E402
                          identity_distance, model_path)
from engine.faces.pose import line_of_sight, matrix_from_euler, project_model, POSE_POINTS, head_pose  # noqa: E402
from repo_paths import REPO  # noqa: E402

REPO_ROOT = REPO


def grace_hopper() -> np.ndarray:
    import matplotlib.cbook
    with Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as im:
        return np.asarray(im.convert("RGB"))


def iod(landmarks: np.ndarray) -> float:
    return float(np.linalg.norm(landmarks[42:48].mean(0) - landmarks[36:42].mean(0)))


@pytest.fixture(scope="module")
def fm() -> FaceMeasure:
    cv2.setNumThreads(1)
    return FaceMeasure()


@pytest.fixture(scope="module")
def photos(fm) -> dict[str, tuple[np.ndarray, FaceReading]]:
    out = {}
    for name, im in (("astronaut", skdata.astronaut()), ("hopper", grace_hopper())):
        out[name] = (im, fm.read(im))
    return out


@pytest.fixture(scope="module")
def crops(fm, photos) -> dict[str, tuple[np.ndarray, FaceReading]]:
    out = {}
    for name, (im, r) in photos.items():
        crop = fe.ffhq_align(im, r.landmarks, 256)
        out[name] = (crop, fm.read(crop))
    return out


def test_reads_both_photographs(photos):
    for name, (im, r) in photos.items():
        assert r.found and r.source == "detector" and r.score > 0, name
        assert r.landmarks.shape == (68, 2) and r.landmarks.dtype == np.float64
        assert r.embedding.shape == (128,) and r.embedding.dtype == np.float32
        for k in ("eye_open_left", "eye_open_right"):
            assert 0.2 < getattr(r, k) < 0.45, (name, k, getattr(r, k))
        assert all(abs(a) < 15 for a in (r.head_yaw, r.head_pitch, r.head_roll)), name
    ast, hop = photos["astronaut"][1], photos["hopper"][1]
    assert ast.mouth_open > 0.1 > hop.mouth_open          # a smile with teeth vs a closed mouth
    assert ast.mouth_width > hop.mouth_width
    # the astronaut photo has a second, weaker "face" (the mission patch): the real face wins
    l, t, r_, b = ast.box
    assert l < 220 < r_ and t < 120 < b


def test_choose_largest_then_best_score():
    small, big, big_better = ((0, 0, 10, 10), 3.0), ((0, 0, 100, 100), 0.5), ((50, 50, 148, 148), 0.9)
    assert FaceMeasure.choose([small, big]) == big
    assert FaceMeasure.choose([big, big_better, small]) == big_better     # within 10 % area: score decides
    assert FaceMeasure.choose([]) is None


def test_mouth_open_rises_with_the_lip_drop(fm, crops, photos):
    for name, (im, r0) in (("hopper crop", crops["hopper"]), ("astronaut photo", photos["astronaut"])):
        readings = [fm.read(fe.drop_lower_lip(im, r0.landmarks, k)) for k in (0, 3, 6, 9)]
        assert all(r.found and r.source == "detector" for r in readings), name
        mouth = [r.mouth_open for r in readings]
        assert all(b > a for a, b in zip(mouth, mouth[1:])), (name, mouth)
        expected = 9 / iod(r0.landmarks)                   # the gap opened by 9 px, in inter-ocular units
        assert 0.4 * expected < mouth[-1] - mouth[0] < 1.5 * expected, (name, mouth, expected)
        assert max(identity_distance(r0, r) for r in readings[1:]) < 0.35


def test_eye_openness_falls_with_the_lids(fm, crops):
    for name, (im, r0) in crops.items():
        readings = [fm.read(fe.close_eyelids(im, r0.landmarks, f)) for f in (0.0, 0.3, 0.6)]
        assert all(r.found for r in readings), name
        ear = [(r.eye_open_left + r.eye_open_right) / 2 for r in readings]
        blink = [r.blink for r in readings]
        assert ear[0] > ear[1] > ear[2], (name, ear)
        assert blink[0] < blink[1] < blink[2], (name, blink)
        assert readings[0].eye_open_left > readings[2].eye_open_left
        assert readings[0].eye_open_right > readings[2].eye_open_right
        assert max(identity_distance(r0, r) for r in readings[1:]) < 0.35


def test_roll_follows_the_image_rotation(fm, crops):
    for name, (im, r0) in crops.items():
        for deg in (-20, -10, 10, 20):
            r = fm.read(fe.rotate(im, deg))
            assert r.found, (name, deg)
            assert abs((r.head_roll - r0.head_roll) - deg) <= 3.0, (name, deg, r0.head_roll, r.head_roll)
            assert identity_distance(r0, r) < 0.35


def test_mirror_flips_yaw_and_roll(fm, photos, crops):
    cases = [("astronaut photo", photos["astronaut"]), ("hopper photo", photos["hopper"]),
             ("astronaut crop", crops["astronaut"])]
    for name, (im, r0) in cases:
        m = fm.read(fe.mirror(im))
        assert m.found, name
        assert abs(r0.head_yaw + m.head_yaw) <= 2.0, (name, r0.head_yaw, m.head_yaw)
        assert abs(r0.head_roll + m.head_roll) <= 3.0, (name, r0.head_roll, m.head_roll)
        assert abs(r0.head_pitch - m.head_pitch) <= 3.0, (name, r0.head_pitch, m.head_pitch)
        assert identity_distance(r0, m) < 0.35
    # the astronaut's yaw is small but clearly signed: the mirror reads the opposite sign
    ast, ast_m = photos["astronaut"][1], fm.read(fe.mirror(photos["astronaut"][0]))
    assert ast.head_yaw > 0.5 and ast_m.head_yaw < -0.5


def test_identity_separates_people_and_keeps_crops(photos, crops):
    assert identity_distance(photos["astronaut"][1], photos["hopper"][1]) > SAME_PERSON
    for name in photos:
        assert identity_distance(photos[name][1], crops[name][1]) < 0.35
    a, b = photos["astronaut"][1].embedding, photos["hopper"][1].embedding
    d = identity_distance(np.stack([a, a]), np.stack([a, b]))
    assert d.shape == (2,) and d[0] == 0.0 and d[1] > SAME_PERSON
    assert math.isnan(identity_distance(FaceReading.none(), a))


def test_no_face_is_a_value(fm):
    coffee = skdata.coffee()
    gradient = np.broadcast_to(np.linspace(0, 255, coffee.shape[1]).astype(np.uint8)[None, :, None], coffee.shape)
    r = fm.read(coffee)
    assert not r.found and r.source == "none" and r.landmarks is None and r.embedding is None
    assert math.isnan(r.mouth_open) and math.isnan(r.head_yaw)
    values = fm(np.stack([coffee, gradient]))
    assert set(values) == set(KEYS)
    assert np.array_equal(values["found"], [0.0, 0.0])
    assert all(np.isnan(values[k]).all() for k in KEYS if k != "found")
    assert np.isnan(fm.embed([gradient])).all()


def test_batch_equals_single_reads(fm, crops):
    images = np.stack([crops["astronaut"][0], crops["hopper"][0], fe.mirror(crops["hopper"][0])])
    singles = [fm.read(im) for im in images]
    values = fm(images)
    assert set(values) == set(KEYS) and all(v.shape == (3,) and v.dtype == np.float64 for v in values.values())
    for k in KEYS:
        assert np.array_equal(values[k], [r.values()[k] for r in singles]), k
    batch = fm.read_batch(list(images))
    assert all(np.array_equal(a.landmarks, b.landmarks) for a, b in zip(batch, singles))
    emb = fm.embed(images)
    assert emb.shape == (3, 128) and np.allclose(emb[0], singles[0].embedding)
    assert fm.roles == {k: k for k in ("mouth_open", "jaw", "blink", "head_yaw", "head_pitch", "head_roll")}


def test_input_conversion(fm, crops):
    im, r = crops["hopper"]
    rgba = np.concatenate([im, np.full(im.shape[:2] + (1,), 255, np.uint8)], axis=2)
    assert np.array_equal(fm.read(rgba, embed=False).landmarks, r.landmarks)
    assert np.array_equal(fm.read(im.astype(np.float32) / 255.0, embed=False).landmarks, r.landmarks)
    gray = fm.read(np.asarray(Image.fromarray(im).convert("L")), embed=False)
    assert gray.found and np.abs(gray.landmarks - r.landmarks).mean() < 0.1 * iod(r.landmarks)
    for bad in (im.astype(np.float32) * 2 - 1, im.astype(np.int16), im[:, :, :2], im[:4, :4]):
        with pytest.raises(ValueError):
            fm.read(bad)
    with pytest.raises(ValueError):
        fm(im)                                             # one image is not a batch
    with pytest.raises(ValueError):
        FaceMeasure(detector="none")                        # no detector and no box


def test_ffhq_box_is_where_hog_puts_aligned_faces(fm, photos):
    for name, (im, r) in photos.items():
        for size in (256, 512):
            crop = fm.read(fe.ffhq_align(im, r.landmarks, size), embed=False)
            assert crop.found, (name, size)
            assert np.abs(np.array(crop.box) / size - FFHQ_BOX).max() < 0.09, (name, size, crop.box)


def test_aligned_mode_reads_a_face_the_detector_misses(fm, crops):
    aligned = FaceMeasure(aligned="auto", embed=False)
    no_detector = FaceMeasure(detector="none", aligned="auto", embed=False)
    for name, (im, sharp) in crops.items():
        blurred = fe.blur(im, 8.0)                           # too soft for HOG (it still finds sigma 6)
        assert not fm.read(blurred, embed=False).found, name
        r = aligned.read(blurred)
        assert r.found and r.source == "aligned" and math.isnan(r.score), name
        err = np.linalg.norm(r.landmarks - sharp.landmarks, axis=1).mean() / iod(sharp.landmarks)
        assert err < 0.15, (name, err)
        assert abs(r.head_roll - sharp.head_roll) < 3.0 and abs(r.head_yaw - sharp.head_yaw) < 5.0
        direct = no_detector.read(im)
        assert direct.source == "aligned"
        assert np.linalg.norm(direct.landmarks - sharp.landmarks, axis=1).mean() / iod(sharp.landmarks) < 0.05
        assert aligned.read(im).source == "detector"        # the detector comes first when it finds the face


def test_pose_recovers_known_angles():
    for angles in ((0, 0, 0), (25, -10, 5), (-30, 15, -40), (10, 5, 75)):
        for t in (np.array([0.0, 0.0, 600.0]), np.array([150.0, -90.0, 700.0])):
            r = line_of_sight(t) @ matrix_from_euler(*angles)        # angles relative to the line of sight
            lm = np.zeros((68, 2))
            lm[POSE_POINTS] = project_model(r, t, 512, 384)
            assert np.allclose(head_pose(cv2, lm, 512, 384), angles, atol=0.05), (angles, t)


def test_warp_moves_only_the_face():
    img = skdata.astronaut()
    pts = np.array([[100.0, 100.0], [140, 100], [120, 140], [100, 160], [150, 160]])
    assert np.array_equal(fe.piecewise_affine_warp(img, pts, pts), img)
    lm = FaceMeasure(embed=False).read(img).landmarks
    out = fe.drop_lower_lip(img, lm, 6)
    changed = np.argwhere(np.any(out != img, axis=2))
    halo = fe.face_halo(lm, 512, 512)
    assert changed.size                                        # only inside the fixed ring around the face
    assert halo[:, 0].min() - 1 <= changed[:, 1].min() and changed[:, 1].max() <= halo[:, 0].max() + 1
    assert lm[:, 1].min() <= changed[:, 0].min() and changed[:, 0].max() <= halo[:, 1].max() + 1
    # rotate() turns the same way as PIL's Image.rotate (counter-clockwise for +deg)
    pil = np.asarray(Image.fromarray(img).rotate(15, resample=Image.BICUBIC), dtype=np.float64)
    ours = fe.rotate(img, 15).astype(np.float64)
    centre = np.s_[128:384, 128:384]
    assert np.abs(pil[centre] - ours[centre]).mean() < 6 < np.abs(pil[centre] - fe.rotate(img, -15)[centre]).mean()


def _cli(*args: str, prelude: str = "") -> subprocess.CompletedProcess:
    code = f"import sys; {prelude}from engine.faces.__main__ import main; sys.exit(main(sys.argv[1:]))"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO_ROOT))
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env,
                          cwd=REPO_ROOT, timeout=120)


def test_cli_json_table_and_errors(tmp_path):
    face, coffee, bad = tmp_path / "astronaut.png", tmp_path / "coffee.png", tmp_path / "broken.png"
    Image.fromarray(skdata.astronaut()).save(face)
    Image.fromarray(skdata.coffee()).save(coffee)
    bad.write_bytes(b"not an image")
    res = _cli("measure", str(face), str(coffee), "--json")
    assert res.returncode == 0, res.stderr
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    assert [r["found"] for r in rows] == [True, False]
    assert len(rows[0]["landmarks"]) == 68 and "embedding" not in rows[0]
    assert set(KEYS) - {"found"} <= set(rows[0]) and rows[0]["source"] == "detector"
    assert rows[1]["mouth_open"] is None and rows[1]["landmarks"] is None
    res = _cli("measure", str(bad), str(face))
    assert res.returncode == 1
    assert res.stderr.count("\n") == 1 and "cannot read" in res.stderr and str(bad) in res.stderr
    table = res.stdout.splitlines()
    assert table[0].split()[:3] == ["image", "found", "source"] and table[1].split()[1:3] == ["1", "detector"]
    res = _cli("measure", str(face), prelude="sys.modules['dlib'] = None; ")
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "pip install 'stylecast[faces]'" in res.stderr


def test_models_are_found_without_importing_face_recognition_models():
    assert model_path("landmarks68").stat().st_size > 50_000_000
    assert issubclass(FaceModelsMissing, ImportError)
    assert "face_recognition_models" not in sys.modules      # its __init__ needs pkg_resources
    with pytest.raises(ValueError):
        model_path("nope")
