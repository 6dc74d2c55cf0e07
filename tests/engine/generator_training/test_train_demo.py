"""engine.synthesis.discriminator and engine.train_demo: D shapes/gradients, the trainer's losses,
lazy R1, EMA, exact resume, export round trip, CLI errors. Tiny networks on 16 px synthetic images."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.synthesis.checkpoints import load_generator
from engine.synthesis.discriminator import (Discriminator, DiscriminatorConfig, MinibatchStdLayer,
                                            downsample2d)
from engine.synthesis.networks import GeneratorConfig
from engine.demo_world.latent import Z_DIM
from engine.generator_training.config import (EXPORT_FILE, LOG_FILE, MAX_EXPORT_BYTES, STATE_FILE, TrainDemoConfig,
                                              export_bytes, recon_config)
from engine.generator_training.data import DataError, RenderedFaces, load_images
from engine.generator_training.trainer import DemoTrainer
from engine.train_demo import main, parse_generator_config

TINY = "32,32,16"          # 4, 8, 16 px
RECON_STEPS = 400


def blobs(n: int, res: int, seed: int = 0) -> np.ndarray:
    """uint8 [n, res, res, 3]: a coloured disc on a coloured background per image."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:res, 0:res] / res
    out = np.empty((n, res, res, 3), np.uint8)
    for i in range(n):
        cx, cy, r = rng.uniform(0.3, 0.7, 2).tolist() + [rng.uniform(0.15, 0.3)]
        disc = ((xx - cx) ** 2 + (yy - cy) ** 2 < r * r)[..., None]
        out[i] = np.where(disc, rng.integers(0, 256, 3), rng.integers(0, 256, 3))
    return out


@pytest.fixture
def shards(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    np.savez(d / "shard-00000.npz", images=blobs(24, 16, 0), identity=np.zeros((24, 3), np.float32))
    np.savez(d / "shard-00001.npz", images=blobs(16, 16, 1))
    return d


def tiny_config(**kw) -> TrainDemoConfig:
    base = dict(kimg=6 * 8 / 1000, batch=8, r1_interval=2, r1_gamma=1.0, style_mixing=0.9, snap_kimg=1.0, grid=2)
    base.update(kw)
    return TrainDemoConfig(**base)


def tiny_gen() -> GeneratorConfig:
    return parse_generator_config(TINY, z_dim=16, w_dim=16, mapping_layers=2)


# -- discriminator --------------------------------------------------------------------------------
@pytest.mark.parametrize("res", [4, 8, 32])
def test_discriminator_shape_and_gradients_reach_every_parameter(res):
    torch.manual_seed(0)
    cfg = DiscriminatorConfig(img_resolution=res, channels={r: 8 for r in (4, 8, 16, 32, 64)}, mbstd_group_size=2)
    D = Discriminator(cfg)
    x = torch.randn(4, 3, res, res, requires_grad=True)
    logits = D(x)
    assert logits.shape == (4, 1) and torch.isfinite(logits).all()
    logits.square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, p in D.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_discriminator_names_config_and_errors():
    cfg = DiscriminatorConfig.nvlabs(img_resolution=32, channel_base=512, channel_max=64)
    assert cfg.channels == {4: 64, 8: 64, 16: 32, 32: 16}
    assert DiscriminatorConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    D = Discriminator(cfg)
    names = set(D.state_dict())
    assert {"b32.fromrgb.weight", "b32.conv0.weight", "b32.conv1.bias", "b32.skip.weight", "b8.conv1.weight",
            "b4.conv.weight", "b4.fc.weight", "b4.out.bias"} <= names
    assert "b32.skip.bias" not in names and "b16.fromrgb.weight" not in names
    assert D.b4.conv.weight.shape == (64, 65, 3, 3)          # + the minibatch-stddev channel
    with pytest.raises(ValueError, match="expected shape"):
        D(torch.zeros(4, 3, 16, 16))
    with pytest.raises(ValueError, match="multiple of the group size"):
        D(torch.zeros(6, 3, 32, 32))
    with pytest.raises(ValueError, match="power of two"):
        DiscriminatorConfig(img_resolution=48, channels={})
    gen = GeneratorConfig(z_dim=8, w_dim=8, img_resolution=16, channels={4: 8, 8: 4, 16: 2})
    assert DiscriminatorConfig.matching(gen).channels == {4: 8, 8: 4, 16: 2}


def test_minibatch_stddev_matches_direct_computation():
    torch.manual_seed(1)
    x = torch.randn(8, 6, 3, 3, dtype=torch.float64)
    y = MinibatchStdLayer(group_size=4, num_channels=2)(x)
    assert y.shape == (8, 8, 3, 3)
    torch.testing.assert_close(y[:, :6], x)
    for i in range(8):                      # group of sample i: every (8 / 4) = 2nd sample from i % 2
        members = x[i % 2::2]
        for f in range(2):
            sd = members[:, 3 * f:3 * f + 3].std(dim=0, unbiased=False)
            expect = (sd.square() + 1e-8).sqrt().mean()
            torch.testing.assert_close(y[i, 6 + f], torch.full((3, 3), float(expect), dtype=torch.float64))


def test_downsample_is_the_normalised_binomial_filter():
    x = torch.zeros(1, 1, 8, 8, dtype=torch.float64)
    x[0, 0, 4, 4] = 1.0
    y = downsample2d(x, pad=2, stride=1)                     # the blur before a 3x3 stride-2 conv
    assert y.shape == (1, 1, 9, 9)
    taps = torch.tensor([1.0, 3, 3, 1], dtype=torch.float64) / 8
    torch.testing.assert_close(y[0, 0, 3:7, 3:7], torch.outer(taps, taps))
    assert math.isclose(float(y.sum()), 1.0)
    c = torch.full((1, 2, 8, 8), 0.5)
    d = downsample2d(c, pad=1, stride=2)
    assert d.shape == (1, 2, 4, 4)
    torch.testing.assert_close(d[:, :, 1:3, 1:3], torch.full((1, 2, 2, 2), 0.5))   # interior keeps a constant


# -- data -----------------------------------------------------------------------------------------
def test_load_images_npz_and_png(shards, tmp_path):
    data = load_images(shards)
    assert len(data) == 40 and data.resolution == 16
    np.testing.assert_array_equal(data.batch(np.array([0, 23, 24, 39])),
                                  np.concatenate([blobs(24, 16, 0)[[0, 23]], blobs(16, 16, 1)[[0, 15]]]))
    from PIL import Image
    pngs = tmp_path / "pngs"
    pngs.mkdir()
    for i, img in enumerate(blobs(5, 8, 2)):
        Image.fromarray(img).save(pngs / f"{i:03d}.png")
    p = load_images(pngs)
    assert len(p) == 5 and p.resolution == 8
    np.testing.assert_array_equal(p.batch(np.arange(5)), blobs(5, 8, 2))


@pytest.mark.parametrize("make,match", [
    (lambda d: None, "no .npz shards or .png images"),
    (lambda d: np.savez(d / "shard-0.npz", pixels=np.zeros((2, 8, 8, 3), np.uint8)), "no 'images' array"),
    (lambda d: np.savez(d / "shard-0.npz", images=np.zeros((2, 8, 8, 3), np.float32)), "must be uint8"),
    (lambda d: np.savez(d / "shard-0.npz", images=np.zeros((2, 8, 12, 3), np.uint8)), "power-of-two"),
    (lambda d: (d / "shard-0.npz").write_bytes(b"PK\x03\x04 broken"), "unreadable .npz shard"),
])
def test_load_images_errors(tmp_path, make, match):
    d = tmp_path / "bad"
    d.mkdir()
    make(d)
    with pytest.raises(DataError, match=match):
        load_images(d)
    with pytest.raises(DataError, match="does not exist"):
        load_images(tmp_path / "missing")


def test_parse_generator_config():
    assert parse_generator_config("demo").img_resolution == 128
    c = parse_generator_config("4:64,8:64,16:32", z_dim=32, w_dim=32)
    assert c.channels == {4: 64, 8: 64, 16: 32} and c.img_resolution == 16 and c.z_dim == 32
    assert parse_generator_config("64,64,32").channels == c.channels
    for bad in ("", "64,x", "8:64,16:32", "64,0"):
        with pytest.raises(Exception, match="--config"):
            parse_generator_config(bad)
    assert export_bytes(parse_generator_config("demo")) < MAX_EXPORT_BYTES


# -- trainer --------------------------------------------------------------------------------------
def test_training_steps_losses_r1_interval_and_ema(shards, tmp_path):
    tr = DemoTrainer(tiny_config(r1_interval=3), load_images(shards), tmp_path / "run", gen_config=tiny_gen(), seed=3)
    for _ in range(7):
        before_ema = {k: v.clone() for k, v in tr.G_ema.named_parameters()}
        rec = tr.train_step()
        for key in ("loss_G", "loss_D", "score_real", "score_fake"):
            assert math.isfinite(rec[key]), key
        # G_ema = G + beta (G_ema_before - G), beta from the ramped-up half-life
        ema_nimg = min(8 * 10 / 32 * 1000, tr.nimg * 0.05)
        beta = 0.5 ** (8 / ema_nimg)
        for name, p in tr.G.named_parameters():
            torch.testing.assert_close(dict(tr.G_ema.named_parameters())[name], p.lerp(before_ema[name], beta))
    assert [r["step"] for r in tr.history if "r1_penalty" in r] == [1, 4, 7]   # step indices 0, 3, 6
    assert all(math.isfinite(r["r1_penalty"]) and r["r1_penalty"] >= 0 for r in tr.history if "r1_penalty" in r)
    diff = max(float((a - b).detach().abs().max()) for a, b in zip(tr.G.parameters(), tr.G_ema.parameters()))
    assert diff > 0                                            # EMA lags G
    assert not torch.equal(tr.G.mapping.w_avg, torch.zeros_like(tr.G.mapping.w_avg))   # tracked
    torch.testing.assert_close(tr.G_ema.mapping.w_avg, tr.G.mapping.w_avg)             # buffers copied


def _states(tr: DemoTrainer) -> dict:
    return {f"{net}.{k}": v for net in ("G", "D", "G_ema") for k, v in getattr(tr, net).state_dict().items()}


def test_resume_equals_one_run(shards, tmp_path):
    data = load_images(shards)
    one = DemoTrainer(tiny_config(), data, tmp_path / "one", gen_config=tiny_gen(), seed=5)
    assert one.run(progress=False)["steps"] == 6
    part = DemoTrainer(tiny_config(kimg=3 * 8 / 1000), data, tmp_path / "two", gen_config=tiny_gen(), seed=5)
    assert part.run(progress=False)["steps"] == 3
    with pytest.raises(FileExistsError):
        DemoTrainer(tiny_config(), data, tmp_path / "two", gen_config=tiny_gen(), seed=5)
    with pytest.raises(ValueError, match="resume: lr"):
        DemoTrainer(tiny_config(lr=0.001), data, tmp_path / "two", resume=True)
    rest = DemoTrainer(tiny_config(), data, tmp_path / "two", resume=True, seed=99)   # the saved seed wins
    assert rest.resumed and rest.step == 3
    assert rest.run(progress=False)["steps"] == 3
    a, b = _states(one), _states(rest)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert [r["loss_D"] for r in one.history] == [r["loss_D"] for r in rest.history]
    other = DemoTrainer(tiny_config(kimg=8 / 1000), data, tmp_path / "three", gen_config=tiny_gen(), seed=6)
    other.run(progress=False)
    assert not torch.equal(other.G.synthesis.b4.const, one.G.synthesis.b4.const)


def test_export_round_trips_through_load_generator(shards, tmp_path):
    tr = DemoTrainer(tiny_config(kimg=2 * 8 / 1000), load_images(shards), tmp_path / "run", gen_config=tiny_gen())
    paths = tr.run(progress=False)["last"]
    path = paths["export"]
    assert path == tmp_path / "run" / EXPORT_FILE and path.with_suffix(".json").exists()
    assert path.stat().st_size < MAX_EXPORT_BYTES
    G = load_generator(path)
    assert G.config.to_dict() == tr.G_ema.config.to_dict()
    for k, v in tr.G_ema.state_dict().items():
        assert torch.equal(G.state_dict()[k], v.to(torch.float16).to(torch.float32)), k
    z = torch.randn(2, G.z_dim)
    with torch.no_grad():
        torch.testing.assert_close(G(z), tr.G_ema(z), atol=2e-2, rtol=0)
    assert paths["samples"].exists() and (tmp_path / "run" / "reals.png").exists()
    from PIL import Image
    with Image.open(paths["samples"]) as im:
        assert im.size == (2 * 16, 2 * 16)


# -- command line ---------------------------------------------------------------------------------
def run_cli(capsys, *argv) -> tuple[int, str, str]:
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("python -m engine.train_demo: error: "), err
    return lines[0]


def test_cli_trains_resumes_and_reports(shards, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["--data", shards, "--out", out, "--config", TINY, "--z-dim", 16, "--mapping-layers", 2,
            "--batch", 8, "--snap", 0.016, "--grid", 2, "--quiet"]
    code, stdout, _ = run_cli(capsys, *args, "--kimg", 0.024)
    assert code == 0 and "demo_generator.safetensors" in stdout and "MB float16" in stdout
    assert len((out / LOG_FILE).read_text().splitlines()) == 3
    assert (out / STATE_FILE).exists() and (out / "samples-0000.016kimg.png").exists()
    code, _, err = run_cli(capsys, *args, "--kimg", 0.04)
    assert code == 2 and "--resume" in one_line_error(err)
    code, _, err = run_cli(capsys, "--data", shards, "--out", out, "--kimg", 0.04, "--lr", 0.001, "--resume")
    assert code == 2 and "resume: lr was 0.0025" in one_line_error(err)
    code, _, _ = run_cli(capsys, "--data", shards, "--out", out, "--kimg", 0.04, "--quiet", "--resume")  # saved settings
    assert code == 0
    log = [json.loads(ln) for ln in (out / LOG_FILE).read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5]
    assert load_generator(out / EXPORT_FILE).img_resolution == 16
    (out / STATE_FILE).write_bytes(b"not a state")
    code, _, err = run_cli(capsys, "--data", shards, "--out", out, "--resume", "--quiet")
    assert code == 2 and "unreadable trainer state" in one_line_error(err)


@pytest.mark.parametrize("extra,match", [
    (["--data", "{missing}"], "does not exist"),
    (["--data", "{empty}"], "no .npz shards"),
    (["--data", "{shards}", "--config", "demo"], "images are 16 px"),
    (["--data", "{shards}", "--config", "512,512,512,512,512,512"], "MB"),
    (["--data", "{shards}", "--config", TINY, "--batch", "6"], "multiple of the minibatch-stddev"),
    (["--data", "{shards}", "--config", "64,x"], "bad --config entry"),
    (["--data", "{shards}", "--config", TINY, "--device", "cuda:7"], "cuda"),
])
def test_cli_errors_are_one_line(shards, tmp_path, capsys, extra, match):
    (tmp_path / "empty").mkdir()
    subs = {"{missing}": str(tmp_path / "nope"), "{empty}": str(tmp_path / "empty"), "{shards}": str(shards)}
    argv = [subs.get(a, a) for a in extra] + ["--out", str(tmp_path / "run"), "--quiet", "--kimg", "0.01"]
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and match in one_line_error(err)
    assert not (tmp_path / "run" / STATE_FILE).exists()


def test_early_stop_saves_a_resumable_state(shards, tmp_path):
    data = load_images(shards)
    tr = DemoTrainer(tiny_config(), data, tmp_path / "run", gen_config=tiny_gen(), seed=1)
    res = tr.run(progress=False, should_stop=lambda: tr.step >= 2)
    assert res["stopped"] and res["steps"] == 2
    state = torch.load(tmp_path / "run" / STATE_FILE, weights_only=True)
    assert state["step"] == 2 and state["nimg"] == 16
    again = DemoTrainer(tiny_config(), data, tmp_path / "run", resume=True)
    assert again.step == 2 and again.run(progress=False, max_seconds=0)["stopped"] and again.step == 2


# -- the recon objective (decoder of the demo world's code) -----------------------------------------
def tiny_recon_gen() -> GeneratorConfig:
    return recon_config(parse_generator_config(TINY, z_dim=16, w_dim=32, mapping_layers=2))


def recon_config_for_test(**kw) -> TrainDemoConfig:
    return tiny_config(objective="recon", **kw)


def test_recon_objective_steps_resume_and_export(tmp_path):
    data = RenderedFaces(16)
    one = DemoTrainer(recon_config_for_test(), data, tmp_path / "one", gen_config=tiny_recon_gen(), seed=2)
    assert one.D is None and one.G.z_dim == Z_DIM and not one.G.mapping.normalize_z
    assert one.run(progress=False)["steps"] == 6
    assert all(set(r) >= {"loss_G", "kimg", "sec"} and "loss_D" not in r for r in one.history)
    part = DemoTrainer(recon_config_for_test(kimg=3 * 8 / 1000), data, tmp_path / "two", gen_config=tiny_recon_gen(),
                       seed=2)
    part.run(progress=False)
    with pytest.raises(ValueError, match="resume: objective"):
        DemoTrainer(tiny_config(), data, tmp_path / "two", resume=True)
    rest = DemoTrainer(recon_config_for_test(), data, tmp_path / "two", resume=True)
    assert rest.step == 3 and rest.run(progress=False)["steps"] == 3
    for net in ("G", "G_ema"):
        for k, v in getattr(one, net).state_dict().items():
            assert torch.equal(v, getattr(rest, net).state_dict()[k]), (net, k)
    assert [r["loss_G"] for r in one.history] == [r["loss_G"] for r in rest.history]
    assert torch.equal(one.motion_dirs, rest.motion_dirs) and torch.equal(one.motion_dirs_ema, rest.motion_dirs_ema)
    G = load_generator(tmp_path / "one" / EXPORT_FILE)
    assert G.z_dim == Z_DIM and not G.config.normalize_z and G.config.z_rest
    # the learned motion directions are exported beside it, tied to the exported weights
    from engine.latent.latent_basis import generator_hash
    from engine.latent.direction_set import DirectionSet
    ds = DirectionSet.load(tmp_path / "one" / "demo_directions.json", num_ws=G.num_ws, w_dim=G.w_dim,
                           checkpoint_hash=generator_hash(G))
    assert ds.names == ["mouth_open", "jaw", "blink", "head_yaw", "head_pitch", "head_roll", "gaze_x", "gaze_y"]
    A = one.motion_dirs_ema.double().numpy()
    d = ds["mouth_open"]
    np.testing.assert_allclose(d.vector * d.stdev, A[0], rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError):
        DirectionSet.load(tmp_path / "one" / "demo_directions.json", checkpoint_hash=generator_hash(one.G))
    # reals.png holds the renders of the samples grid's z: the targets of samples-*.png
    from PIL import Image
    from engine.demo_world.latent import render_z
    from engine.synthesis.networks import seed_to_z
    with Image.open(tmp_path / "one" / "reals.png") as im:
        reals = np.asarray(im.convert("RGB"))
    assert np.array_equal(reals[:16, 16:32], render_z(seed_to_z(1, Z_DIM)[0], 16))
    with pytest.raises(ValueError, match="recon objective trains on RenderedFaces"):
        DemoTrainer(recon_config_for_test(), np.zeros(1), tmp_path / "x", gen_config=tiny_recon_gen())
    with pytest.raises(ValueError, match="z_dim"):
        DemoTrainer(recon_config_for_test(), data, tmp_path / "y", gen_config=tiny_gen())


def test_recon_objective_learns_the_code(tmp_path):
    """After a short run G(z) is nearer the render of its own z than the renders of other z:
    the generator has learned to decode the demo world's parameters, not an average face."""
    torch.manual_seed(0)
    data = RenderedFaces(16)
    tr = DemoTrainer(recon_config_for_test(kimg=RECON_STEPS * 16 / 1000, batch=16, lr=0.005, snap_kimg=100.0),
                     data, tmp_path / "run", gen_config=tiny_recon_gen(), seed=0)
    init = tr.motion_dirs.detach().clone()
    tr.run(progress=False)
    assert (tr.motion_dirs.detach() - init).abs().max() > 3 * init.abs().max()   # the directions learn
    losses = [r["loss_G"] for r in tr.history]
    assert np.mean(losses[-20:]) < 0.6 * np.mean(losses[:5]), (losses[:5], losses[-20:])
    z = np.random.default_rng(123).standard_normal((12, Z_DIM))
    target = data.render(z).astype(np.float64)
    with torch.no_grad():
        out = (tr.G_ema(torch.from_numpy(z).float()).clamp(-1, 1) + 1) * 127.5
    out = out.permute(0, 2, 3, 1).numpy()
    dist = np.abs(out[:, None] - target[None]).mean(axis=(2, 3, 4))    # [generated, render]
    own = np.diag(dist)
    others = (dist.sum(axis=1) - own) / (len(z) - 1)
    assert np.mean(own < others) >= 0.9, (own, others)
    assert own.mean() < 0.7 * others.mean(), (own.mean(), others.mean())


def test_motion_mask_covers_what_moves_and_nothing_at_rest():
    """--motion-weight's mask: the pixels a face's motion changes against the same face at rest.
    An open mouth marks the mouth (lower middle of the face) and nothing else; a face at rest
    marks nothing; it works on a dark face as on a light one."""
    from engine.demo_world.latent import REST, _I
    from engine.generator_training.data import motion_mask
    as_image = lambda a: torch.from_numpy(a).permute(0, 3, 1, 2).float() / 127.5 - 1   # noqa: E731
    rest = np.zeros((2, Z_DIM))
    for name, v in REST.items():
        rest[:, _I[name]] = v
    rest[:, _I["skin_tone"]] = [-2.0, 2.0]                      # a light and a dark face
    talking = rest.copy()
    talking[:, _I["mouth_open"]] = 2.0                          # mouth wide open
    data = RenderedFaces(64)
    mask = motion_mask(as_image(data.render(talking)), as_image(data.render(rest)))[:, 0].numpy()
    assert not motion_mask(as_image(data.render(rest)), as_image(data.render(rest))).any()
    for m in mask:
        ys, xs = np.nonzero(m)
        assert 20 < m.sum() < 0.08 * m.size, m.sum()           # a mouth, not the face
        assert ys.min() > 32 and 16 < xs.mean() < 48, (ys.min(), xs.mean())
    assert 0.5 < mask[1].sum() / mask[0].sum() < 2.0            # the dark face's mouth is marked as fully


def test_cli_recon_objective(tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, err = run_cli(capsys, "--objective", "recon", "--out", out, "--config", TINY, "--z-dim", 32,
                                "--mapping-layers", 2, "--batch", 8, "--kimg", 0.016, "--grid", 2, "--quiet")
    assert code == 0 and "demo_generator.safetensors" in stdout and "decoder of the demo world" in err
    code, _, _ = run_cli(capsys, "--out", out, "--kimg", 0.024, "--resume", "--quiet")   # the saved objective
    assert code == 0 and len((out / LOG_FILE).read_text().splitlines()) == 3
    # loss weights and frozen fields may change on resume; frozen fields export no direction
    from engine.latent.direction_set import DirectionSet
    assert "head_yaw" in DirectionSet.load(out / "demo_directions.json").names
    code, _, _ = run_cli(capsys, "--out", out, "--kimg", 0.04, "--resume", "--quiet", "--l2-weight", 4,
                         "--grad-weight", 2, "--freeze", "yaw,pitch,roll,gaze_x,gaze_y", "--motion-weight", 1)
    assert code == 0
    log = [json.loads(ln) for ln in (out / LOG_FILE).read_text().splitlines()]
    assert all(k in log[-1] for k in ("loss_l2", "loss_edge", "loss_motion"))
    assert "loss_l2" not in log[2] and "loss_motion" not in log[2]
    assert DirectionSet.load(out / "demo_directions.json").names == ["mouth_open", "jaw", "blink"]
    code, _, err = run_cli(capsys, "--out", out, "--resume", "--quiet", "--freeze", "nose")
    assert code == 2 and "unknown motion fields" in one_line_error(err)
    code, _, err = run_cli(capsys, "--objective", "recon", "--data", tmp_path, "--out", tmp_path / "b", "--quiet")
    assert code == 2 and "leave --data out" in one_line_error(err)
    code, _, err = run_cli(capsys, "--objective", "gan", "--out", tmp_path / "c", "--quiet")
    assert code == 2 and "needs --data" in one_line_error(err)


def test_demo_schedule_settings_by_kimg():
    """--schedule demo: the shipped generator's curriculum, cumulative, by images seen."""
    from engine.generator_training.config import scheduled_settings
    head = ("yaw", "pitch", "roll", "gaze_x", "gaze_y")
    assert scheduled_settings("none", 100.0) == {}
    rest = {"pose_scale": 1.0, "single_motion": 0.0, "single_weights": {}}
    assert scheduled_settings("demo", 0.0) == {"l2_weight": 0.0, "grad_weight": 0.0, "frozen": (), "motion_weight": 0.0,
                                               **rest}
    assert scheduled_settings("demo", 34.99) == scheduled_settings("demo", 0.0)
    assert scheduled_settings("demo", 35.0) == {"l2_weight": 0.0, "grad_weight": 2.0, "frozen": (), "motion_weight": 0.0,
                                                **rest}
    assert scheduled_settings("demo", 50.0) == {"l2_weight": 4.0, "grad_weight": 2.0, "frozen": (), "motion_weight": 0.0,
                                                **rest}
    assert scheduled_settings("demo", 100.0) == {"l2_weight": 4.0, "grad_weight": 2.0, "frozen": head,
                                                 "motion_weight": 0.0, **rest}
    assert scheduled_settings("demo", 205.0)["motion_weight"] == 1.0
    assert scheduled_settings("demo", 257.0) == {"l2_weight": 4.0, "grad_weight": 2.0, "frozen": head,
                                                 "motion_weight": 3.0, **rest}


def test_a_schedule_switches_loss_terms_mid_run_and_resumes_exactly(tmp_path, monkeypatch):
    import engine.generator_training.config as td
    monkeypatch.setitem(td.SCHEDULES, "tiny", ((0.0, {}), (0.024, {"l2_weight": 1.0, "motion_weight": 1.0}),
                                               (0.04, {"frozen": ("yaw",)})))
    data = RenderedFaces(16)
    cfg = lambda **kw: recon_config_for_test(schedule="tiny", **kw)     # noqa: E731  (batch 8: 3 steps = 0.024)
    one = DemoTrainer(cfg(), data, tmp_path / "one", gen_config=tiny_recon_gen(), seed=4)
    one.run(progress=False)
    terms = [("loss_l2" in r, "loss_motion" in r) for r in one.history]
    assert terms == [(False, False)] * 3 + [(True, True)] * 3, terms
    assert one.config.frozen == ("yaw",) and one.config.l2_weight == 1.0
    part = DemoTrainer(cfg(kimg=4 * 8 / 1000), data, tmp_path / "two", gen_config=tiny_recon_gen(), seed=4)
    part.run(progress=False)
    rest = DemoTrainer(cfg(), data, tmp_path / "two", resume=True)
    rest.run(progress=False)
    assert [r["loss_G"] for r in one.history] == [r["loss_G"] for r in rest.history]
    for k, v in one.G_ema.state_dict().items():
        assert torch.equal(v, rest.G_ema.state_dict()[k]), k
    with pytest.raises(ValueError, match="schedule must be one of"):
        DemoTrainer(recon_config_for_test(schedule="fast"), data, tmp_path / "x", gen_config=tiny_recon_gen())


def test_cli_a_new_recon_run_follows_the_demo_schedule(tmp_path, capsys):
    from engine.generator_training.config import DEMO_SCHEDULE_KIMG
    from engine.train_demo import _train_config, build_parser
    cfg = _train_config(build_parser().parse_args(["--out", str(tmp_path / "a"), "--objective", "recon"]), None)
    assert cfg.schedule == "demo" and cfg.kimg == DEMO_SCHEDULE_KIMG
    cfg = _train_config(build_parser().parse_args(["--out", str(tmp_path / "a"), "--objective", "recon",
                                                   "--l2-weight", "1"]), None)
    assert cfg.schedule == "none" and cfg.kimg == TrainDemoConfig().kimg and cfg.l2_weight == 1.0
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "--out", out, "--config", TINY, "--z-dim", 32, "--mapping-layers", 2,
                           "--batch", 8, "--kimg", 0.016, "--grid", 2, "--quiet")
    assert code == 0 and "schedule demo" in err
    state = torch.load(out / STATE_FILE, weights_only=True)
    assert json.loads(state["train_config"])["schedule"] == "demo"
    code, _, err = run_cli(capsys, "--out", out, "--resume", "--quiet", "--schedule", "demo", "--motion-weight", 1)
    assert code == 2 and "--schedule none" in one_line_error(err)
    code, _, err = run_cli(capsys, "--out", out, "--resume", "--quiet", "--kimg", 0.024, "--motion-weight", 1)
    assert code == 0 and "schedule none" in err
