"""`python -m engine.generate` run as a user runs it: real processes, real files decoded back."""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from engine.frames import images_to_uint8
from engine.synthesis.networks import seed_to_z
from repo_paths import REPO  # noqa: E402



def run_cli(*args, cwd=None):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "engine.generate", *map(str, args)], cwd=cwd or REPO,
                          env=env, capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def demo(demo_G):
    return demo_G


def test_seeds_raw_and_png_match_the_generator(tmp_path, demo):
    out = tmp_path / "out"
    r = run_cli("--generator", "demo", "--seeds", "0-2", "--truncation", "0.7", "--noise-mode", "const",
                "--out", out, "--raw")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.iterdir()) == [
        "seed0000.npy", "seed0000.png", "seed0001.npy", "seed0001.png", "seed0002.npy", "seed0002.png"]
    for seed in range(3):
        raw = np.load(out / f"seed{seed:04d}.npy")
        assert raw.shape == (1, 3, 128, 128) and raw.dtype == np.float32
        with torch.no_grad():
            want = demo(torch.from_numpy(seed_to_z(seed, demo.z_dim)).float(), truncation_psi=0.7)
        np.testing.assert_allclose(raw, want.numpy(), rtol=0, atol=1e-5)
        png = np.asarray(Image.open(out / f"seed{seed:04d}.png").convert("RGB"))
        assert png.shape == (128, 128, 3)
        # The PNG is the quantised raw output (at most one level off where float noise straddles .5).
        assert np.abs(png.astype(int) - images_to_uint8(torch.from_numpy(raw))[0].astype(int)).max() <= 1
    a = np.asarray(Image.open(out / "seed0000.png"))
    b = np.asarray(Image.open(out / "seed0001.png"))
    assert not np.array_equal(a, b)


def test_ws_file_renders_the_same_image_as_its_seed(tmp_path, demo):
    with torch.no_grad():
        ws = demo.mapping(torch.from_numpy(seed_to_z(5, demo.z_dim)).float())
    np.save(tmp_path / "ws.npy", ws.numpy())
    np.save(tmp_path / "w.npy", ws[:, 0].numpy())  # [1, w_dim]: broadcast to all layers
    r1 = run_cli("--ws", tmp_path / "ws.npy", "--out", tmp_path / "a", "--raw")
    r2 = run_cli("--ws", tmp_path / "w.npy", "--out", tmp_path / "b", "--raw")
    r3 = run_cli("--seeds", "5", "--truncation", "1", "--out", tmp_path / "c", "--raw")   # ws above: untruncated
    assert r1.returncode == r2.returncode == r3.returncode == 0, (r1.stderr, r2.stderr, r3.stderr)
    a = np.load(tmp_path / "a" / "ws0000.npy")
    b = np.load(tmp_path / "b" / "ws0000.npy")
    c = np.load(tmp_path / "c" / "seed0005.npy")
    np.testing.assert_allclose(a, c, atol=1e-6)
    np.testing.assert_allclose(b, c, atol=1e-6)


@pytest.mark.parametrize("args,needle", [
    (["--generator", "no_such_preset_or_file"], "no_such_preset_or_file"),
    (["--seeds", "3-1"], "end is before start"),
    (["--seeds", "a-b"], "bad seed range"),
    (["--truncation", "nan"], "must be finite"),
    (["--trunc", "inf"], "must be finite"),             # the hidden alias of --truncation
    (["--ws", "missing.npy"], "missing.npy"),
    (["--device", "cuda:0"], "CUDA is not available"),
    (["--batch-size", "0"], "batch-size"),
    (["--expect-sha256", "12ab"], "64 hex digits"),
    (["--expect-sha256", "0" * 64], "does not match --expect-sha256"),   # the demo asset's is not 0...0
])
def test_bad_input_is_one_line_exit_2(tmp_path, args, needle):
    if "cuda" in " ".join(args) and torch.cuda.is_available():
        pytest.skip("this machine has CUDA, so asking for it is not an error")
    r = run_cli(*args, "--out", tmp_path / "o", cwd=tmp_path)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert "Traceback" not in r.stderr and needle in r.stderr
    assert len(lines) == 1, r.stderr
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_default_truncation_and_the_old_flag_spellings(tmp_path, demo):
    """--truncation defaults to 0.7 (the engine's and the NVlabs video default); --outdir and --trunc
    still work as hidden aliases of --out and --truncation."""
    r1 = run_cli("--seeds", "3", "--out", tmp_path / "a", "--raw")
    r2 = run_cli("--seeds", "3", "--trunc", "0.5", "--outdir", tmp_path / "b", "--raw")
    assert r1.returncode == r2.returncode == 0, (r1.stderr, r2.stderr)
    z = torch.from_numpy(seed_to_z(3, demo.z_dim)).float()
    for folder, psi in (("a", 0.7), ("b", 0.5)):
        with torch.no_grad():
            want = demo(z, truncation_psi=psi).numpy()
        np.testing.assert_allclose(np.load(tmp_path / folder / "seed0003.npy"), want, rtol=0, atol=1e-5)


def test_missing_out_is_one_line_exit_2(tmp_path):
    r = run_cli("--seeds", "0", cwd=tmp_path)
    assert r.returncode == 2 and "--out" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not any(tmp_path.iterdir())


def test_bad_ws_shape_is_reported(tmp_path):
    np.save(tmp_path / "bad.npy", np.zeros((2, 5, 7), np.float32))
    r = run_cli("--ws", tmp_path / "bad.npy", "--out", tmp_path / "o")
    assert r.returncode == 2 and "needs [N, 12, 128]" in r.stderr and "Traceback" not in r.stderr


def test_help_shows_examples():
    r = run_cli("--help")
    assert r.returncode == 0 and "examples:" in r.stdout and "--seeds 0-3" in r.stdout
