"""benchmarks.demo_quality: the sharpness measure on real renders, the shipped eye probe's gaze
reading, gains that are exactly 1 for the renderer itself, and one short run on the shipped
demo generator."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image, ImageFilter

from benchmarks import demo_quality as dq


def test_high_frequency_energy_falls_with_blur():
    imgs = dq.render_moved(dq.held_out_codes(4, 0), {})
    blurred = np.stack([np.asarray(Image.fromarray(im).filter(ImageFilter.GaussianBlur(1.0))) for im in imgs])
    sharp, soft = dq.hf_energy(imgs), dq.hf_energy(blurred)
    assert np.all(soft < 0.3 * sharp) and np.all(sharp > 0)
    assert dq.hf_energy(np.full((1, 64, 64, 3), 128, np.uint8))[0] == pytest.approx(0.0, abs=1e-12)


def test_the_shipped_eye_probe_reads_gaze_on_fresh_renders():
    from engine.demo_world.probes import load_probes
    probes = load_probes(dq.DEFAULT_EYE_PROBES)
    assert {"gaze_x", "gaze_y"} <= set(probes.names)
    z = dq.held_out_codes(24, 5)
    left, right = probes.predict(dq.render_moved(z, {"gaze_x": -1.0})), probes.predict(dq.render_moved(z, {"gaze_x": 1.0}))
    d = right["gaze_x"] - left["gaze_x"]
    assert d.mean() > 0.4 and (d > 0).mean() > 0.8, d       # 2 units = ±0.44 of the ±1 range
    down, up = probes.predict(dq.render_moved(z, {"gaze_y": 1.0})), probes.predict(dq.render_moved(z, {"gaze_y": -1.0}))
    assert (down["gaze_y"] - up["gaze_y"]).mean() > 0.1


class RendererAsSubject:
    """The renderer in a generator's place: every direction moves exactly as the renderer does."""
    dirs = {f: None for f in dq.FIELDS}

    @staticmethod
    def render(z, moves):
        return dq.render_moved(z, moves)


def test_the_renderer_scores_one_against_itself():
    z = dq.held_out_codes(6, 2)
    readers = dq.Readers(dq.DEFAULT_EYE_PROBES)
    ref = dq.renderer_reference(readers, z)
    assert set(ref["reads"]) == set(dq.FIELDS)
    out = dq.gains(RendererAsSubject(), readers, z, ref)
    for f, g in out.items():
        assert g["gain"] == pytest.approx(1.0), f
        assert g["identity_rms"] == pytest.approx(g["renderer_identity_rms"])
        assert g["leakage_sd_per_unit"] == pytest.approx(g["renderer_leakage_sd_per_unit"], abs=1e-3)
    assert dq.span("mouth_open") == (0.0, 1.0) and dq.span("yaw") == (-1.0, 1.0)


def test_a_short_run_on_the_shipped_generator(tmp_path):
    out = tmp_path / "dq.json"
    assert dq.main(["--faces", "6", "--out", str(out), "--grid", "3"]) == 0
    rep = json.loads(out.read_text())
    g = rep["generators"]["demo"]
    assert 0 < g["sharpness"] < 2 and g["fps_batch1"] > 0
    assert set(g["detected"]) == set(rep["renderer"]["detected"]) == {"hog", "mmod"}
    assert all(0 <= v <= 1 for v in [*g["detected"].values(), *rep["renderer"]["detected"].values()])
    assert rep["renderer"]["detected"]["mmod"] >= 0.8      # dlib's CNN finds the renderer's faces
    assert set(g["gains"]) == set(dq.FIELDS) and "mouth_open" in g["directions"]
    for f, r in g["gains"].items():
        if f in g["directions"]:
            assert np.isfinite(r["gain"]) and "identity_rms" in r, f
        else:
            assert r["gain"] == 0.0 and r["note"] == "no learned direction"
    assert g["gains"]["mouth_open"]["gain"] > 0.3
    assert set(g["landmark_pose"]) == {f for f in ("yaw", "pitch", "roll") if f in g["directions"]}
    assert all(v["faces"] <= 6 for v in g["landmark_pose"].values())
    grid = np.asarray(Image.open(out.with_suffix(".png")))
    assert grid.shape[1] == 3 * 128 and grid.shape[0] >= 2 * 128
