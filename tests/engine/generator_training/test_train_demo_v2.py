"""engine.train_demo for demo world v2: a run started from the shipped generator (``--init``), the
adversarial term on top of the reconstruction (``--adv-weight``, balanced at the image), the
head-and-gaze curriculum (``pose_scale``) and the ``demo2`` schedule."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from engine.demo_world.latent import MOTION_Z, Z_DIM, Z_FIELDS
from engine.generator_training.config import (DEMO2_SCHEDULE_KIMG, POSE_FIELDS, STATE_FILE, TrainDemoConfig,
                                              recon_config, scheduled_settings)
from engine.generator_training.adversarial import adversarial_backward
from engine.generator_training.data import RenderedFaces
from engine.generator_training.trainer import DemoTrainer
from engine.synthesis.checkpoints import load_generator
from engine.train_demo import main, parse_generator_config


def recon(**kw) -> TrainDemoConfig:
    base = dict(objective="recon", kimg=6 * 8 / 1000, batch=8, r1_interval=2, r1_gamma=1.0, snap_kimg=1.0, grid=2)
    base.update(kw)
    return TrainDemoConfig(**base)


def tiny_gen():
    return recon_config(parse_generator_config("32,32,16", z_dim=16, w_dim=32, mapping_layers=2))


def test_init_starts_from_the_shipped_generator_and_its_directions(tmp_path):
    from engine.avatar import DEMO_DIRECTIONS
    from engine.latent.direction_set import DirectionSet
    tr = DemoTrainer(recon(batch=2, kimg=0.002, init="demo"), RenderedFaces(128), tmp_path / "run", seed=1)
    shipped = load_generator("demo").to(torch.float32)
    z = torch.randn(2, Z_DIM, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        for net in (tr.G, tr.G_ema):
            assert torch.allclose(net(z, noise_mode="const"), shipped(z, noise_mode="const"), atol=1e-5)
    from engine.demo_world.name_directions import ROLE_OF
    ds = DirectionSet.load(DEMO_DIRECTIONS)
    taken = 0
    for k, field in enumerate(MOTION_Z):
        role = ROLE_OF.get(field)
        if role in ds:                 # the shipped set's rows: its vectors times their stdev
            d = ds[role]
            np.testing.assert_allclose(tr.motion_dirs[k].detach().double().numpy(), d.vector * d.stdev, rtol=1e-5)
            taken += 1
    assert taken == len(ds.names) >= 3
    smile = MOTION_Z.index("smile")    # not in the shipped set: a small random start
    assert "smile" not in ROLE_OF
    assert 0 < tr.motion_dirs[smile].norm() < 0.2 * tr.motion_dirs[0].norm()
    tr.run(progress=False)             # one step from there
    state = torch.load(tmp_path / "run" / STATE_FILE, weights_only=True)
    assert json.loads(state["train_config"])["init"] == "demo"
    with pytest.raises(ValueError, match="not a generator of this run's shape"):
        DemoTrainer(recon(init="demo"), RenderedFaces(16), tmp_path / "tiny", gen_config=tiny_gen())


def test_the_adversarial_gradient_is_the_set_share_of_the_reconstructions(tmp_path):
    """G's image gradient is g_rec + s·g_adv with ‖s·g_adv‖ = adv_weight·‖g_rec‖, s·g_adv along
    the discriminator's own gradient of the non-saturating loss."""
    tr = DemoTrainer(recon(adv_weight=0.5), RenderedFaces(16), tmp_path / "run", gen_config=tiny_gen(), seed=3)
    assert tr.D is not None and tr.gamma == 1.0
    z = torch.randn(8, Z_DIM, generator=torch.Generator().manual_seed(1))
    target = torch.from_numpy(RenderedFaces(16).render(z.numpy())).permute(0, 3, 1, 2).float() / 127.5 - 1
    img = tr.G(z, noise_mode="const")
    loss = F.l1_loss(img, target)
    (g_rec,) = torch.autograd.grad(loss, img, retain_graph=True)
    (g_adv,) = torch.autograd.grad(F.softplus(-tr.D(img)).mean(), img, retain_graph=True)
    seen = []
    img.register_hook(lambda g: seen.append(g.detach().clone()))
    rec: dict = {}
    adversarial_backward(tr.D, img, loss, tr.config.adv_weight, rec)
    extra = seen[-1] - g_rec          # the hook sees each gradient taken of img, the applied one last
    assert extra.norm() / g_rec.norm() == pytest.approx(0.5, rel=1e-4)
    assert F.cosine_similarity(extra.flatten(), g_adv.flatten(), dim=0) > 0.9999
    assert rec["adv_scale"] > 0 and np.isfinite(rec["loss_adv"])
    assert all(p.grad is None for p in tr.D.parameters())         # D is not trained by G's step
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in tr.G.parameters())


def test_an_adversarial_run_trains_d_resumes_exactly_and_may_start_mid_run(tmp_path):
    data = RenderedFaces(16)
    one = DemoTrainer(recon(adv_weight=0.3), data, tmp_path / "one", gen_config=tiny_gen(), seed=5)
    d0 = {k: v.clone() for k, v in one.D.state_dict().items()}
    one.run(progress=False)
    assert all({"loss_adv", "adv_scale", "loss_D", "score_real", "score_fake"} <= set(r) for r in one.history)
    assert sum("r1_penalty" in r for r in one.history) == 3          # every r1_interval = 2 steps
    assert any(not torch.equal(v, one.D.state_dict()[k]) for k, v in d0.items())
    part = DemoTrainer(recon(adv_weight=0.3, kimg=3 * 8 / 1000), data, tmp_path / "two", gen_config=tiny_gen(), seed=5)
    part.run(progress=False)
    rest = DemoTrainer(recon(adv_weight=0.3), data, tmp_path / "two", resume=True)
    rest.run(progress=False)
    assert [r["loss_G"] for r in one.history] == [r["loss_G"] for r in rest.history]
    for k, v in one.G_ema.state_dict().items():
        assert torch.equal(v, rest.G_ema.state_dict()[k]), k
    for k, v in one.D.state_dict().items():
        assert torch.equal(v, rest.D.state_dict()[k]), k
    # a plain run can take the adversarial term on when resumed (a fresh D)
    plain = DemoTrainer(recon(kimg=2 * 8 / 1000), data, tmp_path / "three", gen_config=tiny_gen(), seed=5)
    plain.run(progress=False)
    assert plain.D is None
    later = DemoTrainer(recon(adv_weight=0.3), data, tmp_path / "three", resume=True)
    later.run(progress=False)
    assert later.D is not None and "loss_D" in later.history[-1] and "loss_D" not in later.history[0]
    with pytest.raises(ValueError, match="recon objective"):
        TrainDemoConfig(adv_weight=0.3).validate()


def test_pose_scale_narrows_the_head_and_gaze_of_the_targets_and_of_gs_code(tmp_path, monkeypatch):
    """pose_scale s: the renders (and the z G is given) have the head-angle and gaze coordinates
    of the drawn z times s; every other coordinate is the same draw."""
    seen: dict = {}

    def run(scale):
        data = RenderedFaces(16)
        real = data.render
        data.render = lambda z: seen.setdefault(scale, np.array(z)) is not None and real(z)   # noqa: E731
        tr = DemoTrainer(recon(kimg=0.008, pose_scale=scale), data, tmp_path / f"s{scale}", gen_config=tiny_gen(), seed=7)
        mapped = []
        real_map = tr.G.mapping.forward_w
        monkeypatch.setattr(tr.G.mapping, "forward_w", lambda z: mapped.append(z.clone()) or real_map(z))
        tr.train_step()
        return mapped[0]

    g_full, g_half = run(1.0), run(0.5)
    pose = [Z_FIELDS.index(f) for f in POSE_FIELDS]
    other = [i for i in range(Z_DIM) if i not in pose]
    np.testing.assert_allclose(seen[0.5][:, pose], 0.5 * seen[1.0][:, pose])
    np.testing.assert_array_equal(seen[0.5][:, other], seen[1.0][:, other])
    assert torch.allclose(g_half[:, pose], 0.5 * g_full[:, pose]) and torch.equal(g_half[:, other], g_full[:, other])
    assert np.abs(seen[1.0][:, pose]).max() > 0.3


def test_single_motion_rows_move_one_field_each_and_count_their_own_pixels(tmp_path):
    """single_motion 0.5 of a batch of 8 with half linear: rows 0 and 1 of the rendered codes have
    every motion field at rest but one (the drawn value), the others are the draw unchanged; the
    term over those rows' own moved pixels is logged and trains (the loss_G includes it)."""
    from engine.demo_world.latent import REST
    data = RenderedFaces(16)
    seen = []
    real = data.render
    data.render = lambda z: seen.append(np.array(z)) or real(z)      # noqa: E731
    cfg = recon(single_motion=0.5, motion_weight=3.0, frozen=("smile",))
    tr = DemoTrainer(cfg, data, tmp_path / "run", gen_config=tiny_gen(), seed=5)
    rec = tr.train_step()
    targets, rests = seen[0], seen[1]
    motion = [Z_FIELDS.index(f) for f in MOTION_Z]
    at_rest = np.isclose(targets[:, motion], np.array([REST[f] for f in MOTION_Z]))
    assert [int((~at_rest[i]).sum()) for i in range(2)] == [1, 1]
    assert at_rest[:, MOTION_Z.index("smile")].all()           # frozen: never the one field
    assert ((~at_rest[2:]).sum(axis=1) == len(MOTION_Z) - 1).all()
    np.testing.assert_allclose(rests[:, motion], np.tile([REST[f] for f in MOTION_Z], (8, 1)), atol=1e-6)
    assert rec["loss_single"] > 0 and np.isfinite(rec["loss_G"])
    plain = DemoTrainer(recon(motion_weight=3.0), RenderedFaces(16), tmp_path / "plain", gen_config=tiny_gen(), seed=5)
    assert "loss_single" not in plain.train_step()
    with pytest.raises(ValueError, match="single_motion must be a fraction"):
        recon(single_motion=1.5).validate()
    assert scheduled_settings("demo2", 0.0)["single_motion"] == 0.5
    assert scheduled_settings("demo2", DEMO2_SCHEDULE_KIMG)["single_motion"] == 0.5


def test_single_weights_draw_the_named_fields_that_much_more_often(tmp_path):
    tr = DemoTrainer(recon(single_weights={"yaw": 6.0, "blink": 0.0}), RenderedFaces(16), tmp_path / "run",
                     gen_config=tiny_gen(), seed=2)
    from engine.demo_world.latent import REST
    z = torch.zeros(4000, Z_DIM) + 5.0             # every field far from rest: the moved one is the one not at rest
    moved = tr._one_field_each(z, 4000)[:, [Z_FIELDS.index(f) for f in MOTION_Z]] != torch.tensor(
        [REST[f] for f in MOTION_Z])
    assert (moved.sum(dim=1) == 1).all()
    share = moved.float().mean(dim=0)               # 6 / (6 + 7 fields at 1): 0.46 yaw, 0.077 each other, no blink
    assert share[MOTION_Z.index("blink")] == 0
    assert abs(float(share[MOTION_Z.index("yaw")]) - 6 / 13) < 0.03
    assert abs(float(share[MOTION_Z.index("roll")]) - 1 / 13) < 0.015
    for bad in ({"nose": 1.0}, {"yaw": -1.0}, {"yaw": float("nan")}):
        with pytest.raises(ValueError, match="single_weights"):
            recon(single_weights=bad).validate()
    with pytest.raises(ValueError, match="every free motion field"):
        recon(single_weights={f: 0.0 for f in MOTION_Z}).validate()
    assert scheduled_settings("demo2", DEMO2_SCHEDULE_KIMG)["single_weights"] == {}
    assert scheduled_settings("demo2w", 79.0)["single_weights"] == {}
    assert scheduled_settings("demo2w", 112.0)["single_weights"]["yaw"] > 1


def test_the_demo2_schedule_widens_the_pose_and_keeps_the_loss_terms():
    first, last = scheduled_settings("demo2", 0.0), scheduled_settings("demo2", DEMO2_SCHEDULE_KIMG)
    assert first["pose_scale"] < 0.5 and last["pose_scale"] == 1.0 and first["frozen"] == last["frozen"] == ()
    scales = [scheduled_settings("demo2", k)["pose_scale"] for k in np.linspace(0, DEMO2_SCHEDULE_KIMG, 50)]
    assert scales == sorted(scales)
    assert {k: last[k] for k in ("grad_weight", "l2_weight", "motion_weight")} == \
        {k: first[k] for k in ("grad_weight", "l2_weight", "motion_weight")} == \
        {"grad_weight": 2.0, "l2_weight": 4.0, "motion_weight": 3.0}


def test_cli_adversarial_and_init_options(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["--objective", "recon", "--out", str(out), "--config", "32,32,16", "--z-dim", "16",
                 "--mapping-layers", "2", "--batch", "8", "--kimg", "0.016", "--grid", "2", "--quiet",
                 "--adv-weight", "0.2", "--schedule", "demo2", "--gamma", "1"])
    err = capsys.readouterr().err
    assert code == 0 and "adversarial term 0.2" in err and "schedule demo2" in err
    log = [json.loads(ln) for ln in (out / "train_log.jsonl").read_text().splitlines()]
    assert len(log) == 2 and all("loss_D" in r for r in log)
    with pytest.raises(SystemExit) as e:
        main(["--data", str(tmp_path), "--out", str(tmp_path / "gan"), "--adv-weight", "0.2", "--quiet"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "recon objective" in err and err.count("\n") == 1


def test_cli_demo2_defaults_reproduce_the_shipped_fine_tune(tmp_path):
    from engine.train_demo import _train_config, build_parser
    parse = lambda *a: _train_config(build_parser().parse_args(["--out", str(tmp_path / "a"), "--objective", "recon",  # noqa: E731
                                                                 *a]), None)
    cfg = parse("--init", "demo", "--schedule", "demo2")
    assert (cfg.lr, cfg.adv_weight, cfg.kimg, cfg.init, cfg.objective) == (0.002, 0.3, DEMO2_SCHEDULE_KIMG, "demo", "recon")
    cfg = parse("--init", "demo", "--schedule", "demo2", "--lr", "0.004", "--adv-weight", "0")
    assert (cfg.lr, cfg.adv_weight) == (0.004, 0.0)
    assert parse().lr == 0.008 and parse().adv_weight == 0.0          # the demo schedule: unchanged
