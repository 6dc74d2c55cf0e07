"""engine.demo_world.faces + dataset: parameters, determinism, anti-aliasing, each motion field
moves the right part of the face, and the resumable shard writer."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest

from engine.demo_world import dataset as ds
from engine.demo_world.params import (HAIR_STYLES, IDENTITY_FIELDS, MOTION_FIELDS, Identity, Motion, sample_identity,
                                      sample_motion)
from engine.demo_world.faces import render_face

# light hair and background so that the darkest pixels of the face are the pupils and lashes
IDENT = Identity(hair_style=0, hair_rgb=(0.85, 0.7, 0.45), bg_rgb=(0.8, 0.85, 0.9), eye_rgb=(0.3, 0.5, 0.8))
REST = Motion.rest()


def render(**motion) -> np.ndarray:
    return render_face(IDENT, Motion(**motion)).astype(np.int32)


def diff_box(a, b, rows, cols) -> float:
    return float(np.abs(a - b)[rows[0]:rows[1], cols[0]:cols[1]].mean())


def dark_centroid(img, rows, cols, thresh=60):
    """(row, col) centroid of near-black pixels (pupils, lash lines) in a box."""
    box = img[rows[0]:rows[1], cols[0]:cols[1]].sum(-1) < 3 * thresh
    r, c = np.nonzero(box)
    assert len(r) > 0
    return r.mean() + rows[0], c.mean() + cols[0]


# rough boxes at 128 px for the default head (eyes around row 55, mouth around row 76)
EYES, MOUTH = (40, 66), (68, 92)
LEFT, RIGHT, MID = (30, 64), (64, 98), (34, 94)


# -- parameters --------------------------------------------------------------------------------
def test_vectors_round_trip_and_fields():
    rng = np.random.default_rng(0)
    for _ in range(5):
        ident, motion = sample_identity(rng), sample_motion(rng)
        v = ident.to_vector()
        assert v.dtype == np.float32 and v.shape == (len(IDENTITY_FIELDS),)
        assert Identity.from_vector(v).to_vector().tolist() == pytest.approx(v.tolist(), abs=1e-6)
        m = motion.to_vector()
        assert m.shape == (len(MOTION_FIELDS),)
        assert Motion.from_vector(m) == Motion(*m.tolist())
    assert len(set(IDENTITY_FIELDS) | set(MOTION_FIELDS)) == len(IDENTITY_FIELDS) + len(MOTION_FIELDS)
    assert Motion.rest() == Motion(0.0, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)


def test_sampling_is_deterministic_and_in_range():
    a = [sample_identity(np.random.default_rng(7)) for _ in range(2)]
    assert a[0] == a[1]
    assert sample_motion(np.random.default_rng(3)) == sample_motion(np.random.default_rng(3))
    rng = np.random.default_rng(1)
    styles = {sample_identity(rng).hair_style for _ in range(200)}
    assert styles == set(range(HAIR_STYLES))
    blinks = np.array([sample_motion(rng).blink for _ in range(400)])
    assert (blinks == 0).mean() > 0.2 and (blinks == 1).mean() > 0.05 and ((blinks > 0) & (blinks < 1)).mean() > 0.2


def test_out_of_range_values_are_refused_and_vectors_clipped():
    with pytest.raises(ValueError, match="mouth_open"):
        Motion(mouth_open=1.5)
    with pytest.raises(ValueError, match="yaw"):
        Motion(yaw=float("nan"))
    with pytest.raises(ValueError, match="hair_style"):
        Identity(hair_style=HAIR_STYLES)
    with pytest.raises(ValueError, match="skin"):
        Identity(skin=(1.2, 0.5, 0.5))
    with pytest.raises(ValueError, match="expected 9"):
        Motion.from_vector([0.0] * 3)
    m = Motion.from_vector([2, 0.5, 0, -1, 0, 0, 0, 0, 5])
    assert m.mouth_open == 1.0 and m.blink == 0.0 and m.gaze_y == 1.0
    assert Identity.from_vector(np.r_[IDENT.to_vector()[:6], 2.6, IDENT.to_vector()[7:]]).hair_style == 3


# -- rendering ---------------------------------------------------------------------------------
def test_render_shape_dtype_determinism():
    rng = np.random.default_rng(11)
    ident, motion = sample_identity(rng), sample_motion(rng)
    a = render_face(ident, motion)
    assert a.shape == (128, 128, 3) and a.dtype == np.uint8
    assert np.array_equal(a, render_face(ident, motion))
    assert render_face(ident, motion, 64).shape == (64, 64, 3)
    assert render_face(ident, motion, 200).shape == (200, 200, 3)
    assert not np.array_equal(a, render_face(sample_identity(rng), motion))
    with pytest.raises(ValueError):
        render_face(ident, motion, 8)


def test_supersampling_anti_aliases_edges():
    hard = render_face(IDENT, REST, supersample=1)
    soft = render_face(IDENT, REST)
    # a row through the cheeks: the face edge against the background gets in-between values
    n_hard = len(np.unique(hard.reshape(-1, 3), axis=0))
    n_soft = len(np.unique(soft.reshape(-1, 3), axis=0))
    assert n_soft > 2 * n_hard
    bg = soft[5, 5].astype(int)
    row = soft[60].astype(int)
    face = soft[60, 64].astype(int)
    between = [(np.abs(p - bg).sum() > 6) and (np.abs(p - face).sum() > 6) for p in row[:40]]
    assert any(between)


def test_hair_styles_differ():
    imgs = [render_face(Identity(hair_style=s), REST) for s in range(HAIR_STYLES)]
    for i in range(HAIR_STYLES):
        for j in range(i + 1, HAIR_STYLES):
            assert np.abs(imgs[i].astype(int) - imgs[j]).mean() > 1.0, (i, j)


def test_mouth_fields_move_the_mouth_only():
    rest = render()
    for field, value in [("mouth_open", 1.0), ("smile", 1.0), ("smile", -1.0), ("mouth_width", 1.0)]:
        img = render(**{field: value})
        assert diff_box(img, rest, MOUTH, MID) > 4 * diff_box(img, rest, EYES, MID) + 1.0, field
        assert np.array_equal(img[:EYES[1]], rest[:EYES[1]]), field
    # opening changes more of the mouth (and chin), monotonically
    changed = [int((np.abs(render(mouth_open=v) - rest).sum(-1) > 40).sum()) for v in (0.2, 0.4, 0.7, 1.0)]
    assert changed == sorted(changed) and changed[-1] > changed[0] + 100
    # a wider mouth spans more columns of lip colour (redder than the skin)
    def span(img):
        box = img[MOUTH[0]:MOUTH[1]]
        cols = np.nonzero(((box[..., 0] - box[..., 1]) > 55).any(0))[0]
        return cols.max() - cols.min()
    assert span(render(mouth_width=1.0)) > span(render(mouth_width=0.0)) + 6


def test_blink_closes_the_eyes_only():
    rest = render()
    closed = render(blink=1.0)
    assert diff_box(closed, rest, EYES, MID) > 3.0
    assert np.array_equal(closed[MOUTH[0]:], rest[MOUTH[0]:])
    # visible eye white (all channels bright) shrinks as the lids close
    def white(img):
        e = img[EYES[0]:EYES[1], MID[0]:MID[1]]
        return int(np.clip(e.min(-1) - 180, 0, None).sum())
    w = [white(render(blink=b)) for b in (0.0, 0.25, 0.5, 1.0)]
    assert w[0] > w[1] > w[2] >= w[3] and w[3] == 0


def test_gaze_moves_the_pupils():
    def pupils(**m):
        img = render(**m)
        return dark_centroid(img, (48, 62), MID, thresh=40)
    left, right = pupils(gaze_x=-1.0), pupils(gaze_x=1.0)
    assert right[1] > left[1] + 1.5
    up, down = pupils(gaze_y=-1.0), pupils(gaze_y=1.0)
    assert down[0] > up[0] + 0.5


def test_head_pose_moves_the_features():
    def feats(**m):
        return dark_centroid(render(**m), (30, 100), (20, 108), thresh=60)
    assert feats(yaw=1.0)[1] > feats(yaw=-1.0)[1] + 6
    assert feats(pitch=-1.0)[0] > feats(pitch=1.0)[0] + 4
    rolled = render(roll=1.0)
    l_row = dark_centroid(rolled, (30, 90), LEFT)[0]
    r_row = dark_centroid(rolled, (30, 90), RIGHT)[0]
    assert r_row > l_row + 4                   # top towards image right: the right eye drops
    assert np.abs(render(yaw=0.5) - render()).sum() > 0


# -- data set ----------------------------------------------------------------------------------
def test_dataset_writer_shards_meta_resume(tmp_path):
    out = tmp_path / "faces"
    meta = ds.write_dataset(out, 10, seed=5, size=32, shard_size=4, progress=False)
    assert meta["complete"] and meta["count"] == 10
    assert [s["count"] for s in meta["shards"]] == [4, 4, 2]
    on_disk = json.loads((out / "meta.json").read_text())
    assert on_disk["identity_fields"] == list(IDENTITY_FIELDS) and on_disk["seed"] == 5
    data = ds.load_shards(out)
    assert data["images"].shape == (10, 32, 32, 3) and data["images"].dtype == np.uint8
    assert data["identity"].shape == (10, len(IDENTITY_FIELDS)) and data["motion"].dtype == np.float32
    # deterministic per (seed, index)
    ident, motion = ds.sample_pair(5, 6)
    assert np.array_equal(data["images"][6], render_face(ident, motion, 32))
    assert np.array_equal(data["identity"][6], ident.to_vector())
    # resume: complete shards are kept, a missing one is rebuilt identically, n can grow
    first = out / "shard-00000.npz"
    stamp = os.stat(first).st_mtime_ns
    (out / "shard-00001.npz").unlink()
    (out / "shard-00002.npz").write_bytes(b"truncated")
    meta = ds.write_dataset(out, 14, seed=5, size=32, shard_size=4, progress=False)
    assert meta["count"] == 14 and os.stat(first).st_mtime_ns == stamp
    again = ds.load_shards(out)
    assert np.array_equal(again["images"][:10], data["images"])
    batches = list(ds.iter_images(out, batch_size=6))
    assert [len(b) for b in batches] == [6, 6, 2]
    assert np.array_equal(np.concatenate(batches), again["images"])
    assert len(ds.load_shards(out, limit=5)["images"]) == 5


def test_dataset_per_identity_groups():
    a, ma = ds.sample_pair(0, 3, per_identity=3)
    b, mb = ds.sample_pair(0, 5, per_identity=3)
    c, _ = ds.sample_pair(0, 6, per_identity=3)
    assert a == b and b != c and ma != mb


def test_dataset_cli(tmp_path, capsys):
    out = tmp_path / "d"
    assert ds.main(["--out", str(out), "--n", "3", "--size", "32", "--no-progress"]) == 0
    assert "3 samples in 1 shards" in capsys.readouterr().out
    with pytest.raises(SystemExit) as e:
        ds.main(["--out", str(out), "--n", "3", "--size", "32", "--seed", "2", "--no-progress"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "other settings" in err and "seed 0 != 2" in err
    with pytest.raises(SystemExit):
        ds.main(["--out", str(out), "--n", "0"])
    assert capsys.readouterr().err.count("\n") == 1
    with pytest.raises(ds.DatasetError, match="no such data-set folder"):
        ds.load_shards(tmp_path / "missing")
