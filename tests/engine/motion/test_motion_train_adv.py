"""engine.motion.train: latent (w_t / ws_t) targets projected onto a DirectionSet, the sequence
discriminator (MoCoGAN-HD's adversarial term), and names stored with the model."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from engine.latent.direction_set import Direction, DirectionSet
from engine.motion.lstm import AudioLSTMConfig
from engine.motion.lstm_driver import AudioLSTMDriver
from engine.motion.lstm_file import load_motion_model
from engine.motion.dataset import DatasetError, MotionDataset
from engine.motion.train import (MODEL_FILE, STATE_FILE, SequenceDiscriminator, TrainConfig, discriminator_loss,
                                 train)
from test_motion_train import TINY, _cli, _weights, make_pair, random_dataset

W_DIM, NUM_WS = 6, 4


def direction_set(seed=0) -> DirectionSet:
    rng = np.random.default_rng(seed)
    q, _ = np.linalg.qr(rng.standard_normal((W_DIM, W_DIM)))
    ds = DirectionSet()
    ds.add(Direction("mouth_open", q[0], stdev=2.0, layers=(1, 2)))
    ds.add(Direction("jaw", q[1], stdev=0.5))
    ds.add(Direction("blink", q[2], stdev=1.0, layers=(2, 3)))
    return ds


def ws_of(ds: DirectionSet, anchor: np.ndarray, x: np.ndarray) -> np.ndarray:
    """ws_t = anchor + Σ_i x_i · stdev_i · mask_i ⊗ v_i, the LatentPath formula, [T, NUM_WS, W_DIM]."""
    out = np.broadcast_to(anchor, (x.shape[0], NUM_WS, W_DIM)).astype(np.float64).copy()
    for i, d in enumerate(ds):
        out += x[:, i, None, None] * d.stdev * d.layer_mask(NUM_WS)[None, :, None] * d.vector[None, None, :]
    return out


def test_latent_targets_are_projected_to_x(tmp_path):
    ds = direction_set()
    rng = np.random.default_rng(1)
    root = tmp_path / "data"
    root.mkdir()
    make_pair(root, "a", 30, k=3)
    make_pair(root, "b", 30, k=3, seed=1)
    x_a = rng.standard_normal((30, 3)).astype(np.float32)
    anchor = rng.standard_normal(W_DIM)
    # clip a: ws_t with the identity's anchor given in its JSON -> x exactly
    np.save(root / "a.npy", ws_of(ds, anchor, x_a).astype(np.float32))
    (root / "a.json").write_text(json.dumps({"anchor": anchor.tolist()}))
    # clip b: w_t [T, w_dim] of a W (not W+) inversion plus motion outside the directions; the
    # first frame is the reference
    x_b = rng.standard_normal((30, 3))
    x_b[:, [0, 2]] = 0                              # layer-masked directions cannot be one w for all layers
    w_b = ws_of(ds, anchor, x_b)[:, 0] + np.outer(rng.standard_normal(30), np.linalg.qr(
        np.stack([d.vector for d in ds] + [rng.standard_normal(W_DIM)], 1))[0][:, 3])
    np.save(root / "b.npy", w_b.astype(np.float32))
    data = MotionDataset(root, directions=ds, num_ws=NUM_WS, window_frames=8)
    assert data.k == 3 and data.names == ["mouth_open", "jaw", "blink"] and data.w_dim == W_DIM
    a, b = data.clips
    np.testing.assert_allclose(a.x, x_a, atol=2e-5)
    assert a.projection_loss < 1e-9
    np.testing.assert_allclose(a.anchor, anchor.astype(np.float32), atol=1e-6)
    np.testing.assert_allclose(b.x[:, 1], x_b[:, 1] - x_b[0, 1], atol=2e-5)   # jaw, offsets from frame 0
    np.testing.assert_allclose(b.x[:, [0, 2]], 0, atol=2e-5)
    assert 0.05 < b.projection_loss < 0.99                                    # the orthogonal motion is dropped
    np.testing.assert_allclose(b.anchor, w_b[0], atol=1e-6)
    # a subset of names, in another order
    sub = MotionDataset(root, directions=ds, names=["jaw", "mouth_open"], num_ws=NUM_WS, window_frames=8)
    np.testing.assert_allclose(sub.clips[0].x, x_a[:, [1, 0]], atol=2e-5)


@pytest.mark.parametrize("case,kw,match", [
    ("no_dirs", dict(targets="w"), "need a DirectionSet"),
    ("no_num_ws", dict(directions="ds"), "need num_ws"),
    ("layers", dict(directions="ds", num_ws=5), "has 4 layers"),
    ("name", dict(directions="ds", names=["smile"]), "'smile' is not in the direction set"),
    ("width", dict(directions="ds", targets="w"), "latent targets must be"),
])
def test_latent_target_errors_are_one_line(tmp_path, case, kw, match):
    ds = direction_set()
    root = tmp_path / "data"
    root.mkdir()
    make_pair(root, "a", 20, k=3)
    if case == "no_num_ws":
        np.save(root / "a.npy", np.zeros((20, W_DIM), np.float32))
    elif case == "layers":
        np.save(root / "a.npy", np.zeros((20, NUM_WS, W_DIM), np.float32))
    if kw.get("directions") == "ds":
        kw["directions"] = ds
    with pytest.raises(DatasetError, match=match) as exc:
        MotionDataset(root, window_frames=8, **kw)
    assert "\n" not in str(exc.value)


def test_sequence_discriminator_tells_smooth_motion_from_jitter():
    """D learns what real motion looks like: smooth trajectories vs the same trajectories with
    frame-to-frame jitter of equal variance (per-frame marginals match; only the dynamics differ)."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)

    def batch(n, T=24):
        walk = torch.cumsum(torch.randn(n, T + 8, 3, generator=gen), 1)
        smooth = torch.nn.functional.avg_pool1d(walk.transpose(1, 2), 9, 1).transpose(1, 2)
        smooth = (smooth - smooth.mean(1, keepdim=True)) / smooth.std(1, keepdim=True)
        perm = torch.argsort(torch.rand(n, T, generator=gen), dim=1)            # same values, shuffled in time
        jitter = torch.gather(smooth, 1, perm[..., None].expand(-1, -1, 3))
        return smooth, jitter

    D = SequenceDiscriminator(3, 32)
    opt = torch.optim.Adam(D.parameters(), lr=2e-3, betas=(0.5, 0.999))
    for _ in range(150):
        real, fake = batch(32)
        loss = discriminator_loss(D, real, fake)
        opt.zero_grad()
        loss.backward()
        opt.step()
    real, fake = batch(200)
    with torch.no_grad():
        acc = 0.5 * (float((D(real) > 0).float().mean()) + float((D(fake) < 0).float().mean()))
        # crop length does not matter to the score's shape; T = 1 works
        assert D(real[:, :1]).shape == (200,) and D(real[:, :17]).shape == (200,)
    assert acc > 0.9, acc
    with pytest.raises(ValueError, match="expected x"):
        D(torch.zeros(2, 5, 4))


def test_adversarial_training_deterministic_and_resume_exact(tmp_path):
    ds = random_dataset()
    kw = dict(batch_size=3, crop_min=4, crop_max=12, lr=1e-2, checkpoint_every=4, adv_weight=0.1, d_hidden=8)
    cfg = TrainConfig(steps=6, **kw)
    a = train(cfg, ds, tmp_path / "a", model_config=AudioLSTMConfig(**TINY), seed=3, progress=False)
    b = train(cfg, ds, tmp_path / "b", model_config=AudioLSTMConfig(**TINY), seed=3, progress=False)
    assert all(torch.equal(v, _weights(b)[k]) for k, v in _weights(a).items())
    assert all({"adv", "d_loss"} <= set(r) and np.isfinite(r["d_loss"]) for r in a.history)
    state = torch.load(tmp_path / "a" / STATE_FILE, weights_only=True)
    assert "discriminator" in state and "d_optimizer" in state
    # the model file holds the model only
    assert set(_weights(load_motion_model(tmp_path / "a" / MODEL_FILE))) == set(_weights(a))
    # the adversarial term changes the result
    plain = train(TrainConfig(steps=6, **{**kw, "adv_weight": 0.0}), ds, tmp_path / "p",
                  model_config=AudioLSTMConfig(**TINY), seed=3, progress=False)
    assert not all(torch.equal(v, _weights(plain)[k]) for k, v in _weights(a).items())
    # 12 at once == 6 + resume to 12 (discriminator and its optimiser restored too)
    full = train(TrainConfig(steps=12, **kw), ds, tmp_path / "full", model_config=AudioLSTMConfig(**TINY),
                 seed=3, progress=False)
    resumed = train(TrainConfig(steps=12, **kw), ds, tmp_path / "a", resume=True, progress=False)
    assert all(torch.equal(v, _weights(resumed)[k]) for k, v in _weights(full).items())
    sf = torch.load(tmp_path / "full" / STATE_FILE, weights_only=True)["discriminator"]
    sr = torch.load(tmp_path / "a" / STATE_FILE, weights_only=True)["discriminator"]
    assert all(torch.equal(sf[k], sr[k]) for k in sf)
    with pytest.raises(ValueError, match="adv_weight was"):
        train(TrainConfig(steps=14, **{**kw, "adv_weight": 0.2}), ds, tmp_path / "a", progress=False)


def test_cli_latent_targets_store_names_for_the_driver(tmp_path, capsys):
    ds = direction_set()
    ds_path = ds.save(tmp_path / "directions.json")
    root = tmp_path / "data"
    root.mkdir()
    rng = np.random.default_rng(2)
    for i in range(2):
        make_pair(root, f"c{i}", 30, k=3, seed=i)
        np.save(root / f"c{i}.npy", ws_of(ds, rng.standard_normal(W_DIM), rng.standard_normal((30, 3))).astype(np.float32))
    out = tmp_path / "run"
    rc, stdout, err = _cli(["--data", root, "--out", out, "--steps", 3, "--batch-size", 2, "--crop", "4-8",
                            "--window-frames", 8, "--hidden", 16, "--audio-dim", 8, "--directions", ds_path,
                            "--names", "blink,jaw", "--adv-weight", 0.05, "--identity", "w", "--quiet"], capsys)
    assert rc == 0, err
    model = load_motion_model(out / MODEL_FILE)
    assert model.config.names == ["blink", "jaw"] and model.config.k == 2 and model.config.w_dim == W_DIM
    driver = AudioLSTMDriver(model)                   # names from the file
    assert driver.names == ["blink", "jaw"] and driver.step(None).shape == (2,)
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert len(log) == 3 and all("d_loss" in r for r in log)
    rc, _, err = _cli(["--data", root, "--out", tmp_path / "r2", "--steps", 1, "--names", "jaw"], capsys)
    assert rc == 2 and "--names needs --directions" in err and err.count("\n") == 1


def test_learnability_holds_with_the_adversarial_term(tmp_path):
    """The causal-audio learnability task of test_motion_train, trained with the discriminator on:
    the adversarial term must not break what the reconstruction loss learns."""
    from engine.motion.dataset import Clip, frame_windows
    from engine.motion.train import predict
    from test_motion_train import synth_clip

    rng = np.random.default_rng(0)
    W = 16
    clips = []
    for i in range(14):
        audio, x = synth_clip(rng, 200)
        clips.append(Clip(f"c{i}", frame_windows(audio, 25.0, W, 40.0), x, np.zeros(8, np.float32)))
    mc = AudioLSTMConfig(window_frames=W, w_dim=8, k=2, hidden=48, audio_dim=32, conv_channels=16)
    cfg = TrainConfig(steps=250, batch_size=8, crop_min=16, crop_max=32, lr=3e-3, smooth_weight=0.01,
                      checkpoint_every=10_000, adv_weight=0.05, d_hidden=32)
    model = train(cfg, MotionDataset.from_clips(clips[:10], window_frames=W), tmp_path / "run", model_config=mc,
                  seed=0, progress=False)
    pred = np.concatenate([predict(model, c.windows) for c in clips[10:]])
    target = np.concatenate([c.x for c in clips[10:]])
    corr = [float(np.corrcoef(pred[:, j], target[:, j])[0, 1]) for j in range(2)]
    d_first = np.mean([r["d_loss"] for r in model.history[:20]])
    d_last = np.mean([r["d_loss"] for r in model.history[-20:]])
    print(f"learnability with adv 0.05: corr {corr}, D loss {d_first:.3f} -> {d_last:.3f}")
    assert min(corr) >= 0.9, corr
    assert np.isfinite(d_last)
