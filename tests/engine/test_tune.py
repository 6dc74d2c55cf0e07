"""Pivotal tuning (``engine.invert --tune``): on a face the demo generator cannot draw exactly (a
held-out demo-world code drawn by the renderer), tuning brings the reconstruction closer while
the motion directions still make the same image change and other identities keep their looks;
the tuned weights round-trip through their safetensors file (checked by SHA-256) and an engine
renders them in every session, on the torch and ONNX backends alike."""
from __future__ import annotations

import copy
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from engine.avatar import DEMO_DIRECTIONS, AvatarEngine
from engine.frames import images_to_uint8
from engine.inversion.identity_file import IdentityFile, IdentityFileError, read_identity, tuned_path, write_identity
from engine.inversion.project import Settings, apply_noise, as_target, project
from engine.inversion.tune import TuneSettings, apply_tuned, motion_report, tunable_state, tune
from engine.latent.direction_set import DirectionSet
from engine.synthesis import load_generator
from engine.synthesis.fingerprint import generator_hash
from repo_paths import REPO


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0 ** 2 / max(mse, 1e-12)))


@pytest.fixture(scope="module")
def G():
    torch.set_num_threads(1)
    return load_generator("demo")


@pytest.fixture(scope="module")
def directions(G):
    return DirectionSet.load(DEMO_DIRECTIONS, num_ws=G.num_ws, w_dim=G.w_dim, checkpoint_hash=generator_hash(G))


@pytest.fixture(scope="module")
def pivot(G):
    """A renderer-drawn held-out face (at rest), projected in W+: (target uint8, projection). The
    projection gets to about 29.5 dB; 60 tuning steps add about 1 dB."""
    from engine.demo_world.latent import MOTION_Z, Z_DIM, at_rest, render_z

    z = at_rest(np.random.default_rng(4242).standard_normal((1, Z_DIM)).astype(np.float32), MOTION_Z)
    target = np.asarray(render_z(z, 128)[0])
    result = project(G, target, Settings(steps=60, wplus_steps=30, init_samples=8), progress=False)
    return target, result


@pytest.fixture(scope="module")
def tuned(G, directions, pivot):
    target, result = pivot
    G0 = copy.deepcopy(G)
    apply_noise(G0, result.noise)
    t = tune(G0, as_target(target, 128, "cpu"), result.ws, directions, TuneSettings(steps=60), progress=False)
    Gt = copy.deepcopy(G0)
    apply_tuned(Gt, t.state)
    return G0, Gt, t


def test_tuning_improves_the_reconstruction_and_keeps_motion_and_other_faces(G, directions, pivot, tuned):
    target, result = pivot
    G0, Gt, t = tuned
    before, after = images_to_uint8(result.image)[0], images_to_uint8(t.image)[0]
    assert _psnr(after, target) > _psnr(before, target) + 0.6, (_psnr(after, target), _psnr(before, target))
    report = motion_report(G0, Gt, result.ws, directions)
    assert set(report["directions"]) == set(directions.names)
    for name, d in report["directions"].items():        # the same image change, about as strong
        assert d["cosine"] > 0.9 and 0.8 < d["gain"] < 1.25, (name, d)
    assert report["others_psnr_db"] > 35, report
    # the tuned network really differs, and only in the synthesis parameters
    assert any(not torch.equal(a, b) for a, b in zip(tunable_state(G0).values(), tunable_state(Gt).values()))
    assert torch.equal(G0.mapping.w_avg, Gt.mapping.w_avg)
    # the caller's generator is untouched
    assert generator_hash(G) != generator_hash(Gt)


def test_without_the_motion_term_the_directions_drift_further(G, directions, pivot, tuned):
    """The motion term is what holds the directions: without it (same steps) they change more."""
    target, result = pivot
    G0, Gt, _ = tuned
    loose = tune(G0, as_target(target, 128, "cpu"), result.ws, directions, TuneSettings(steps=60, motion=0.0),
                 progress=False)
    G_loose = copy.deepcopy(G0)
    apply_tuned(G_loose, loose.state)
    held = motion_report(G0, Gt, result.ws, directions)["directions"]
    free = motion_report(G0, G_loose, result.ws, directions)["directions"]
    err = lambda d: (1 - d["cosine"]) + abs(np.log(d["gain"]))  # noqa: E731
    assert sum(err(d) for d in free.values()) > 1.5 * sum(err(d) for d in held.values()), (held, free)


def test_tuned_weights_round_trip_and_are_checked(G, pivot, tuned, tmp_path):
    _, result = pivot
    G0, Gt, t = tuned
    ident = IdentityFile(ws=result.ws.numpy(), noise={k: v.numpy() for k, v in result.noise.items()},
                         meta={"generator_hash": generator_hash(G), "tuned": {"generator_hash": generator_hash(Gt)}},
                         tuned={k: v.numpy() for k, v in t.state.items()})
    path = write_identity(tmp_path / "me.npz", ident)
    weights = tuned_path(path)
    assert weights.name == "me.tuned.safetensors" and weights.is_file()
    back = read_identity(path, generator_hash=generator_hash(G))
    assert set(back.tuned) == set(t.state)
    assert all(np.array_equal(back.tuned[k].reshape(v.shape), v.numpy()) for k, v in t.state.items())
    G_back = copy.deepcopy(G0)
    apply_tuned(G_back, {k: torch.from_numpy(v) for k, v in back.tuned.items()})
    assert generator_hash(G_back) == back.meta["tuned"]["generator_hash"]
    # a changed byte in the weights, or the weights missing: refused, naming the file
    blob = bytearray(weights.read_bytes())
    blob[-5] ^= 0x01
    weights.write_bytes(bytes(blob))
    with pytest.raises(IdentityFileError, match="do not match the recorded SHA-256"):
        read_identity(path)
    weights.unlink()
    with pytest.raises(IdentityFileError, match="tuned weights me.tuned.safetensors are missing"):
        read_identity(path)
    # weights that do not fit the generator are refused before anything is copied
    wrong = {k: v[..., :1] if v.ndim else v for k, v in t.state.items()}
    with pytest.raises(ValueError, match="shape"):
        apply_tuned(copy.deepcopy(G0), wrong)


def test_an_engine_renders_a_tuned_identity_in_every_session_and_on_onnx(G, pivot, tuned, tmp_path):
    _, result = pivot
    G0, Gt, t = tuned
    meta = {"generator_hash": generator_hash(G), "tuned": {"generator_hash": generator_hash(Gt)}}
    path = write_identity(tmp_path / "me.npz", IdentityFile(
        ws=result.ws.numpy(), noise={k: v.numpy() for k, v in result.noise.items()}, meta=meta,
        tuned={k: v.numpy() for k, v in t.state.items()}))
    with torch.no_grad():
        expected = Gt.synthesis(result.ws)
    lines: list[str] = []
    engine = AvatarEngine("demo", log=lines.append)
    ws = engine.identity_ws(str(path))
    assert generator_hash(engine.G) == meta["tuned"]["generator_hash"]
    assert engine.checkpoint_hash == generator_hash(G)
    again = engine.identity_ws(str(path))                # a second session of the same identity
    assert torch.equal(ws, again)
    assert float((engine.synthesize(ws[None]) - expected).abs().max()) < 1e-5
    assert sum("tuned synthesis weights" in line for line in lines) == 1, lines
    # a second, different tuned identity is refused in one line
    other = write_identity(tmp_path / "other.npz", IdentityFile(
        ws=result.ws.numpy(), meta=meta, tuned={k: v.numpy() * 1.001 for k, v in t.state.items()}))
    with pytest.raises(ValueError, match="already renders the tuned weights"):
        engine.identity_ws(str(other))
    # with batching, the weights go in between the batcher's rounds (no deadlock, the same image)
    batched = AvatarEngine("demo", batching=True)
    try:
        ws_b = batched.identity_ws(str(path))
        assert float((batched.synthesize(ws_b[None]) - expected).abs().max()) < 1e-5
    finally:
        batched.close()
    pytest.importorskip("onnxruntime", reason="the ONNX backend needs onnxruntime (the dev extra)")
    onnx_lines: list[str] = []
    on_onnx = AvatarEngine("demo", backend="onnx", log=onnx_lines.append)
    ws = on_onnx.identity_ws(str(path))
    assert any("rebuilding the onnx backend" in line for line in onnx_lines), onnx_lines
    assert float((on_onnx.synthesize(ws[None]) - expected).abs().max()) < 1e-4


def test_an_identity_with_noise_maps_opens_in_a_second_session(G, pivot, tmp_path):
    """Regression: after the first session put the file's noise maps in, the generator's hash
    changed and a second session of the same identity was refused as "made for another checkpoint"."""
    _, result = pivot
    path = write_identity(tmp_path / "me.npz", IdentityFile(
        ws=result.ws.numpy(), noise={k: v.numpy() for k, v in result.noise.items()},
        meta={"generator_hash": generator_hash(G)}))
    engine = AvatarEngine("demo")
    first, second = engine.identity_ws(str(path)), engine.identity_ws(str(path))
    assert torch.equal(first, second)


def test_cli_tune_writes_both_files_and_reports_motion(tmp_path, G):
    skdata = pytest.importorskip("skimage.data", reason="needs scikit-image (the dev extra) for its astronaut photo")
    pytest.importorskip("dlib", reason="needs the faces extra to find the face")
    from PIL import Image

    photo = tmp_path / "astronaut.png"
    Image.fromarray(skdata.astronaut()).save(photo)
    out = tmp_path / "me.npz"
    r = subprocess.run([sys.executable, "-m", "engine.invert", str(photo), "--out", str(out), "--steps", "30",
                        "--wplus-steps", "10", "--tune", "--tune-steps", "30", "--quiet"],
                       capture_output=True, text=True, timeout=600, cwd=REPO)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["tuned"] == "me.tuned.safetensors" and (tmp_path / "me.tuned.safetensors").is_file()
    assert summary["psnr_db"] > summary["untuned"]["psnr_db"], summary
    # the least of 8 directions' cosines: the weakest (gaze_y, yaw: a few pixels per unit) sit lowest
    assert summary["tuning"]["motion_cosine_min"] > 0.8, summary
    ident = read_identity(out, generator_hash=generator_hash(G))
    assert ident.tuned is not None and ident.meta["settings"]["tune"]["steps"] == 30
    r = subprocess.run([sys.executable, "-m", "engine.invert", str(photo), "--out", str(tmp_path / "x.npz"),
                        "--tune-steps", "0", "--tune"], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert r.returncode == 2 and "--tune-steps" in r.stderr and not (tmp_path / "x.npz").exists()
