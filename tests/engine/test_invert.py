"""Photo inversion into the demo generator: the projection recovers a face the generator made
(ground truth known), the identity file round-trips and is refused by another checkpoint, the
CLI turns a real photo (scikit-image's astronaut, from the installed package) into an identity a
session talks with, and bad input is a one-line error that writes nothing."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from engine.frames import images_to_uint8
from engine.inversion.identity_file import IdentityFile, IdentityFileError, read_identity, write_identity
from engine.inversion.losses import WPrior, ms_ssim_loss, pixel_loss
from engine.inversion.project import Settings, project
from engine.latent.identity import w_from_seed
from engine.synthesis import load_generator
from engine.synthesis.fingerprint import generator_hash
from repo_paths import REPO


@pytest.fixture(scope="module")
def G():
    torch.set_num_threads(1)
    return load_generator("demo")


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0 ** 2 / max(mse, 1e-12)))


def test_losses_are_zero_for_equal_images_and_grow_with_the_difference():
    x = torch.rand(1, 3, 128, 128) * 2 - 1
    assert float(pixel_loss(x, x)) == 0.0 and float(ms_ssim_loss(x, x)) == pytest.approx(0.0, abs=1e-5)
    small, big = x + 0.05 * torch.randn_like(x), x + 0.3 * torch.randn_like(x)
    assert 0 < float(pixel_loss(small, x)) < float(pixel_loss(big, x))
    assert 0 < float(ms_ssim_loss(small.clamp(-1, 1), x)) < float(ms_ssim_loss(big.clamp(-1, 1), x))


def test_the_prior_scores_mapped_faces_near_one_and_far_latents_high(G):
    prior = WPrior(G, n=4000)
    with torch.no_grad():
        w = G.mapping.forward_w(torch.randn(256, G.z_dim, generator=torch.Generator().manual_seed(5)))
    typical = float(prior(w))
    assert 0.5 < typical < 2.0
    assert float(prior(w + 3 * w.std(0))) > 5 * typical
    ws = w[:1, None].repeat(1, G.num_ws, 1)
    spread = ws + 0.5 * torch.randn_like(ws)
    assert float(prior(spread)) > float(prior(ws))          # W+ layers pulled together


def test_projection_recovers_a_face_the_generator_made(G):
    """A held-out seed's face (truncation 0.7) projected from the best start: the reconstruction
    is much closer than the start and the latent lands near the true one in the image."""
    true_ws = w_from_seed(G, 987_654, truncation_psi=0.7)
    with torch.no_grad():
        target = images_to_uint8(G.synthesis(true_ws))[0]
        start = images_to_uint8(G.synthesis(G.mapping.w_avg.view(1, 1, -1).expand(1, G.num_ws, -1)))[0]
    result = project(G, target, Settings(steps=80, wplus_steps=40, init_samples=16), progress=False)
    recon = images_to_uint8(result.image)[0]
    assert result.ws.shape == (1, G.num_ws, G.w_dim) and result.w.shape == (1, G.w_dim)
    assert _psnr(recon, target) > _psnr(start, target) + 6.0, (_psnr(recon, target), _psnr(start, target))
    assert _psnr(recon, target) > 24.0
    assert [h["stage"] for h in result.history][0] == "w" and result.history[-1]["stage"] == "w+"
    assert result.history[-1]["total"] < result.history[0]["total"]
    # the caller's generator is untouched (the projector works on a copy)
    assert torch.equal(G.synthesis(true_ws), G.synthesis(true_ws))
    assert set(result.noise) and all(torch.isfinite(v).all() for v in result.noise.values())


def test_without_noise_projection_the_generators_noise_maps_are_kept(G):
    from engine.inversion.project import noise_layers

    target = images_to_uint8(G.synthesis(w_from_seed(G, 11, truncation_psi=0.7)))[0]
    result = project(G, target, Settings(steps=3, wplus_steps=0, init_samples=0, optimize_noise=False), progress=False)
    theirs = {name: m.noise_const for name, m in noise_layers(G)}
    assert set(result.noise) == set(theirs) and all(torch.equal(result.noise[k], theirs[k]) for k in theirs)


def test_identity_file_round_trip_and_refusals(G, tmp_path):
    ws = w_from_seed(G, 3).numpy()
    path = write_identity(tmp_path / "me.npz", IdentityFile(ws=ws, meta={"generator_hash": generator_hash(G)}))
    back = read_identity(path, generator_hash=generator_hash(G), num_ws=G.num_ws, w_dim=G.w_dim)
    assert np.array_equal(back.ws, ws) and back.meta["format"] == "stylecast-identity"
    other = load_generator("random")
    with pytest.raises(IdentityFileError, match="made for checkpoint"):
        read_identity(path, generator_hash=generator_hash(other))
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 not really")
    with pytest.raises(IdentityFileError, match="not a readable"):
        read_identity(tmp_path / "bad.npz")
    np.savez(tmp_path / "plain.npz", ws=ws)
    with pytest.raises(IdentityFileError, match="not a StyleCast identity"):
        read_identity(tmp_path / "plain.npz")


def _run(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "engine.invert", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, cwd=REPO)


def test_cli_inverts_a_real_photo_and_a_session_talks_with_it(tmp_path, G):
    skdata = pytest.importorskip("skimage.data", reason="needs scikit-image (the dev extra) for its astronaut photo")
    pytest.importorskip("dlib", reason="needs the faces extra to find the face")
    from PIL import Image

    photo = tmp_path / "astronaut.jpg"
    Image.fromarray(skdata.astronaut()).save(photo, quality=95)
    out = tmp_path / "me.npz"
    r = _run(photo, "--out", out, "--steps", 30, "--wplus-steps", 10, "--quiet")
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["psnr_db"] > 10 and 0 < summary["ssim"] <= 1
    ident = read_identity(out, generator_hash=generator_hash(G))
    assert ident.meta["transform"]["size"] == 128 and ident.meta["report"]["steps"] == 30
    # the astronaut smiles with her teeth showing: said, since the avatar's mouth will rest open
    assert ident.meta["report"]["photo_face"]["mouth_open"] > 0.08
    assert any("lips are apart" in w for w in ident.meta["report"]["warnings"]) and "lips are apart" in r.stderr
    from engine.session import AvatarEngine, AvatarSession

    engine = AvatarEngine("demo")
    session = AvatarSession(engine, fps=25, identity=str(out))
    try:
        rest = session.next_frame(fill_silence=True).image
        assert rest.shape == (128, 128, 3)
        assert np.allclose(session.identity_ws.cpu().numpy(), ident.ws[0], atol=1e-6)
    finally:
        session.close()


def test_cli_bad_input_is_one_line_and_writes_nothing(tmp_path):
    not_image = tmp_path / "notes.jpg"
    not_image.write_text("hello")
    out = tmp_path / "x.npz"
    r = _run(not_image, "--out", out, "--steps", 1)
    assert r.returncode == 2 and "not an image" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    from PIL import Image

    blank = tmp_path / "blank.png"
    Image.fromarray(np.full((300, 300, 3), 200, np.uint8)).save(blank)
    r = _run(blank, "--out", out, "--steps", 1)
    assert r.returncode == 2 and "no face found" in r.stderr, r.stderr
    r = _run(blank, "--out", tmp_path / "x.npy", "--steps", 1)
    assert r.returncode == 2 and ".npz" in r.stderr
    assert not out.exists() and not list(tmp_path.glob("*.part"))


def test_render_refuses_an_identity_made_for_another_checkpoint(tmp_path, G):
    import wave

    audio = tmp_path / "a.wav"
    with wave.open(str(audio), "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(16000)
        w.writeframes(np.zeros(8000, np.int16).tobytes())
    ident = tmp_path / "me.npz"
    write_identity(ident, IdentityFile(ws=w_from_seed(G, 1).numpy(), meta={"generator_hash": generator_hash(G)}))
    out = tmp_path / "x.mp4"
    r = subprocess.run([sys.executable, "-m", "engine.render", "--audio", str(audio), "--identity", str(ident),
                        "--generator", "random", "--out", str(out), "--quiet"], capture_output=True, text=True,
                       timeout=300, cwd=REPO)
    # the random generator's own fallback lines (directions) come first; the error is the last line
    assert r.returncode == 2 and "made for checkpoint" in r.stderr.strip().splitlines()[-1], r.stderr
    assert "Traceback" not in r.stderr and not out.exists()


def test_photo_warnings_name_open_lips_and_a_turned_head():
    from engine.inversion.run import photo_warnings

    assert photo_warnings({"mouth_open": 0.01, "head_yaw": 3.0, "head_pitch": -5.0}) == []
    lips, = photo_warnings({"mouth_open": 0.2, "head_yaw": 0.0, "head_pitch": 0.0})
    assert "lips are apart" in lips and "0.20" in lips
    turned, = photo_warnings({"mouth_open": float("nan"), "head_yaw": -35.0, "head_pitch": 2.0})
    assert "yaw -35°" in turned and "pitch" not in turned
