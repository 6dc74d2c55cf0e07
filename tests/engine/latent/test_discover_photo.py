"""Discovery on a photoreal test generator whose directions are known (issue 13, point 6).

The "generator" is the FFHQ-aligned astronaut photo (scikit-image's, loaded from the installed
package) warped as a fixed linear function of w: the lower lip drops, the upper eyelids close and
the image turns in-plane along three planted W directions; the other W dimensions move nothing.
``discover`` with the landmark measure must find those three directions and name them right.
"""
from __future__ import annotations

import numpy as np
import pytest

from engine.latent.defaults import faces_available
from repo_paths import REPO  # noqa: E402

pytestmark = pytest.mark.skipif(not faces_available(), reason="the faces extra (dlib-bin, face-recognition-models, "
                                "opencv-python-headless) is not installed")
skimage = pytest.importorskip("skimage", reason="scikit-image ships the astronaut photo")

W_DIM = 10
PLANTED = ("mouth_open", "blink", "head_roll")


class PhotoGenerator:
    """ws [B, 1, W_DIM] → 256 px warps of one aligned photo: lip drop 4 + 3·(w·u_mouth) px,
    eyelids 0.25 + 0.15·(w·u_blink) closed, rotation 6·(w·u_roll) degrees (clipped to stay a face)."""

    num_ws, w_dim = 1, W_DIM
    checkpoint_hash = "a" * 64

    def __init__(self, image, landmarks, seed=0):
        import face_edits

        self.fe, self.image, self.lm = face_edits, image, landmarks
        q, _ = np.linalg.qr(np.random.default_rng(seed).standard_normal((W_DIM, W_DIM)))
        self.u = dict(zip(PLANTED, q.T[:3]))

    def sample_w(self, n, seed):
        return np.random.default_rng(seed).standard_normal((n, W_DIM))

    def render(self, ws):
        out = []
        for w in np.asarray(ws, np.float64)[:, 0]:
            img = self.fe.drop_lower_lip(self.image, self.lm, float(np.clip(4 + 3 * w @ self.u["mouth_open"], 0, 12)))
            img = self.fe.close_eyelids(img, self.lm, float(np.clip(0.25 + 0.15 * w @ self.u["blink"], 0, 0.7)))
            out.append(self.fe.rotate(img, float(np.clip(6 * w @ self.u["head_roll"], -20, 20))))
        return np.stack(out)


@pytest.fixture(scope="module")
def photo_generator():
    import face_edits

    from engine.faces import FaceMeasure

    photo = skimage.data.astronaut()
    reading = FaceMeasure(embed=False).read(photo)
    assert reading.found
    aligned = face_edits.ffhq_align(photo, reading.landmarks, 256)
    lm = FaceMeasure(embed=False).read(aligned).landmarks
    return PhotoGenerator(aligned, lm)


def test_landmark_discovery_recovers_the_planted_directions(photo_generator):
    from engine.faces.landmark_measure import LandmarkMeasure
    from engine.latent.discover import discover

    gen = photo_generator
    ds, rep = discover(gen, LandmarkMeasure(), n=48, holdout=4, batch=16, progress=False)
    assert rep["detected"] == rep["images"]                       # a real face in every image
    for role in PLANTED:
        cos = float(ds[role].vector @ gen.u[role])
        assert cos >= 0.9, (role, cos, rep["roles"][role])
        assert rep["roles"][role]["gain_per_sigma"] > 0
    for role in set(ds.names) - set(PLANTED):                     # anything else found is not a planted one
        assert all(abs(float(ds[role].vector @ u)) < 0.5 for u in gen.u.values()), role
    # the mouth moves the mouth, not the roll; the identity stays the same person
    assert rep["roles"]["mouth_open"]["leakage"]["head_roll"] < 0.05
    assert rep["roles"]["mouth_open"]["identity_distance_2sigma"] < 0.35


def test_lipsync_landmark_reader_follows_the_lips_and_tracks_identity(photo_generator):
    """benchmarks.lipsync --measure landmarks: the reader's mouth opening follows a planted lip
    drop, and the identity distance to the first frame is read every N-th frame."""
    from benchmarks.lipsync import LandmarkReader

    gen = photo_generator
    t = (np.arange(4) * 3.0 - 4.0) / 3.0
    # the lip drop 0, 3, 6, 9 px (beyond ~10 px the warp stretches her teeth and the gap stops growing)
    w = np.outer(t, gen.u["mouth_open"])
    frames = gen.render(w[:, None, :])
    reader = LandmarkReader(embed_every=2)
    first = reader(frames[:3])
    second = reader(frames[3:])
    mouth = np.concatenate([first["mouth_open"], second["mouth_open"]])
    assert np.all(np.diff(mouth) > 0), mouth
    dist = np.concatenate([first["identity_distance"], second["identity_distance"]])
    read = np.isfinite(dist)
    assert list(np.flatnonzero(read)) == [0, 2] and dist[0] == 0.0
    assert np.all(dist[read] < 0.35)                               # the same person with the mouth open


def test_cli_on_a_freshly_initialised_nvlabs_pickle_says_how_many_had_no_face(tmp_path):
    """A random-weights NVlabs-format network pickle: no face in its images, so discovery stops in
    one line with the count and writes nothing (nor caches a set)."""
    import subprocess
    import sys

    import formats

    from engine.synthesis.networks import GeneratorConfig

    cfg = GeneratorConfig.nvlabs(z_dim=64, w_dim=64, img_resolution=64, channel_base=2048, channel_max=64,
                                 mapping_layers=2)
    pkl = formats.write_nvlabs_pkl(formats.random_generator(cfg, seed=3), tmp_path / "network-snapshot-000000.pkl")
    out = tmp_path / "d.json"
    repo = REPO
    r = subprocess.run([sys.executable, "-m", "engine.directions", "discover", "--generator", str(pkl),
                        "--out", str(out), "--quiet"], cwd=repo, capture_output=True, text=True, timeout=300,
                       env={**__import__("os").environ, "STYLECAST_CACHE": str(tmp_path / "cache"),
                            "OMP_NUM_THREADS": "1"})
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "64 of 64 samples had no face the landmarks measure could find" in lines[0], r.stderr
    assert not out.exists() and not list((tmp_path / "cache").glob("**/*.json"))
