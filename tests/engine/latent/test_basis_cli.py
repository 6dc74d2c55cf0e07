"""``python -m engine.basis``: global / local / show / name on the demo generator, and bad input."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from engine import basis as cli
from engine.frames import images_to_uint8
from engine.latent.direction_set import DirectionSet
from engine.latent.latent_basis import LatentBasis, generator_hash
from engine.synthesis.networks import seed_to_z

N = "5000"


@pytest.fixture(scope="module")
def G(demo_G):
    return demo_G


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("STYLECAST_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def global_npz(tmp_path_factory):
    out = tmp_path_factory.mktemp("basis") / "global.npz"
    assert cli.main(["global", "--n-samples", N, "--k", "12", "--no-cache", "--out", str(out)]) == 0
    return out


def run_error(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("python -m engine.basis") and "Traceback" not in err, err
    return err


def test_global_writes_basis_and_summary(global_npz, G, capsys, tmp_path):
    b = LatentBasis.load(global_npz)
    assert b.origin == "global" and b.k == 12 and b.w_dim == G.w_dim
    assert b.checkpoint_hash == generator_hash(G) and b.meta["n_samples"] == 5000
    assert np.allclose(b.directions @ b.directions.T, np.eye(12), atol=1e-4)
    out = tmp_path / "g2.npz"
    assert cli.main(["global", "--n-samples", "3000", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "var ratio" in text and "components needed" in text and out.is_file()
    assert list((tmp_path / "cache" / "latent").glob("global-*.npz"))  # cached per checkpoint


def test_local_writes_basis_and_spectrum_plot(G, capsys, tmp_path):
    out, png = tmp_path / "l.npz", tmp_path / "spec.png"
    assert cli.main(["local", "--seed", "3", "--k", "20", "--out", str(out), "--plot", str(png),
                     "--plot-seeds", "2"]) == 0
    text = capsys.readouterr().out
    b = LatentBasis.load(out)
    assert b.origin == "local" and b.k == 20 and b.checkpoint_hash == generator_hash(G)
    assert np.allclose(b.meta["z"], seed_to_z(3, G.z_dim)[0], atol=1e-6)
    assert "~0 singular values (< 0.001 x largest =" in text and "seed 4:" in text
    with Image.open(png) as im:
        im.load()
        assert im.format == "PNG" and im.size[0] > 100


def test_show_grid_shape_and_identity_column(global_npz, G, tmp_path):
    out = tmp_path / "grid.png"
    assert cli.main(["show", "--seed", "5", "--basis", str(global_npz), "--components", "0-2,7",
                     "--steps", "5", "--trunc", "1", "--out", str(out)]) == 0   # --trunc: --truncation's alias
    grid = np.asarray(Image.open(out).convert("RGB"))
    R = G.img_resolution
    assert grid.shape == (4 * R, 5 * R, 3)
    with torch.inference_mode():
        z = torch.from_numpy(seed_to_z(5, G.z_dim)).float()
        plain = images_to_uint8(G.synthesis(G.mapping(z), noise_mode="const"))[0]
    for r in range(4):
        tile = grid[r * R:(r + 1) * R, 2 * R:3 * R]
        assert np.array_equal(tile, plain)
        assert not np.array_equal(grid[r * R:(r + 1) * R, 0:R], plain)  # the edges move


def test_show_local_with_layer_range(G, tmp_path):
    out = tmp_path / "grid_local.png"
    assert cli.main(["show", "--seed", "1", "--local", "--components", "0", "--steps", "3",
                     "--layers", "10-11", "--out", str(out)]) == 0          # --truncation: 0.7 by default
    grid = np.asarray(Image.open(out).convert("RGB"))
    R = G.img_resolution
    assert grid.shape == (R, 3 * R, 3)
    with torch.inference_mode():
        z = torch.from_numpy(seed_to_z(1, G.z_dim)).float()
        plain = images_to_uint8(G.synthesis(G.mapping(z, truncation_psi=0.7), noise_mode="const"))[0]
    assert np.array_equal(grid[:, R:2 * R], plain)


def test_name_builds_a_direction_set(global_npz, G, tmp_path):
    ds_path = tmp_path / "sub" / "directions.json"
    assert cli.main(["name", "--basis", str(global_npz), "--component", "7", "--name", "mouth_open",
                     "--layers", "4-7", "--set", str(ds_path)]) == 0
    assert cli.main(["name", "--basis", str(global_npz), "--component", "0", "--name", "pose",
                     "--set", str(ds_path), "--generator", "demo"]) == 0
    ds = DirectionSet.load(ds_path, num_ws=G.num_ws, w_dim=G.w_dim, checkpoint_hash=generator_hash(G))
    b = LatentBasis.load(global_npz)
    d = ds["mouth_open"]
    assert ds.names == ["mouth_open", "pose"] and d.layers == (4, 7) and d.component == 7
    assert d.origin == "global" and np.array_equal(d.vector, b.directions[7]) and d.stdev == pytest.approx(b.stdev[7])
    assert json.loads(ds_path.read_text())["checkpoint_hash"] == generator_hash(G)

    from engine.latent.path import LatentPath

    basis, masks = ds.to_path(G.num_ws, ["mouth_open"])
    path = LatentPath(basis, G.num_ws, layer_masks=masks)
    path.set_anchor(z=seed_to_z(0, G.z_dim), G=G)
    ws = path(np.array([[1.5]]))[0]
    moved = (ws - path.anchor_ws).abs().amax(dim=1) > 0
    assert moved.tolist() == [4 <= layer <= 7 for layer in range(G.num_ws)]


def test_name_refuses_other_checkpoint(global_npz, tmp_path, capsys):
    ds_path = tmp_path / "d.json"
    b = LatentBasis.load(global_npz)
    b.checkpoint_hash = "f" * 64
    other = b.save(tmp_path / "other.npz")
    assert cli.main(["name", "--basis", str(global_npz), "--component", "1", "--name", "a", "--set", str(ds_path)]) == 0
    err = run_error(["name", "--basis", str(other), "--component", "1", "--name", "b", "--set", str(ds_path)], capsys)
    assert "checkpoint" in err
    err = run_error(["show", "--seed", "0", "--basis", str(other), "--out", str(tmp_path / "x.png")], capsys)
    assert "checkpoint" in err


@pytest.mark.parametrize("argv, needle", [
    (["global", "--k", "129", "--n-samples", "100"], "w_dim"),
    (["global", "--n-samples", "0"], "at least 1"),
    (["local", "--seed", "0", "--k", "1000"], "min(w_dim, z_dim)"),
    (["local"], "--seed"),
    (["show", "--seed", "0", "--basis", "missing.npz"], "no such file"),
    (["show", "--seed", "0", "--local", "--steps", "4"], "odd"),
    (["show", "--seed", "0", "--local", "--layers", "7-4"], "layer range"),
    (["show", "--seed", "0", "--local", "--layers", "4-99"], "outside"),
    (["show", "--seed", "0", "--local", "--components", "200"], "out of range"),
    (["show", "--seed", "0", "--local", "--components", "a-b"], "bad component"),
    (["show", "--seed", "0", "--basis", "x.npz", "--local"], "not allowed"),
    (["global", "--generator", "nope.pkl"], "no such file"),
    (["frobnicate"], "invalid choice"),
])
def test_bad_input_is_one_line_exit_2(argv, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert needle in run_error(argv, capsys)


def test_name_bad_input(global_npz, tmp_path, capsys):
    ds_path = tmp_path / "d.json"
    base = ["name", "--basis", str(global_npz), "--set", str(ds_path)]
    assert "out of range" in run_error(base + ["--component", "12", "--name", "x"], capsys)
    assert "bad direction name" in run_error(base + ["--component", "1", "--name", "no spaces"], capsys)
    assert "layer range" in run_error(base + ["--component", "1", "--name", "x", "--layers", "3-1"], capsys)
    assert "outside" in run_error(base + ["--component", "1", "--name", "x", "--layers", "3-40",
                                          "--generator", "demo"], capsys)
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    assert "bad.npz" in run_error(["name", "--basis", str(bad), "--component", "0", "--name", "x",
                                   "--set", str(ds_path)], capsys)
    ds_path.write_text("{broken")
    assert "JSON" in run_error(base + ["--component", "1", "--name", "x"], capsys)
    assert cli.main(base[:-1] + [str(tmp_path / "ok.json"), "--component", "1", "--name", "x"]) == 0
    assert "already" in run_error(base[:-1] + [str(tmp_path / "ok.json"), "--component", "2", "--name", "x"], capsys)
