"""engine.demo_world.latent and engine.demo_world.assets: the demo world's code z (a face's
parameters through the normal CDF), its rest pose and motion units, and the latent trajectories
of talking data on the named mouth direction."""
from __future__ import annotations

import json
import wave

import numpy as np
import pytest
import torch

from engine.demo_world import latent
from engine.demo_world.assets import main as assets_main, mouth_x, utterance_trajectory, write_targets
from engine.demo_world.params import IDENTITY_FIELDS, sample_identity, sample_motion
from engine.demo_world.faces import render_face
from engine.latent.identity import rest_z, w_from_seed
from engine.synthesis.networks import Generator, seed_to_z
from engine.generator_training.config import recon_config
from engine.train_demo import parse_generator_config


def test_params_from_z_is_deterministic_and_matches_the_samplers():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((3000, latent.Z_DIM))
    pairs = [latent.params_from_z(row) for row in z]
    again = latent.params_from_z(z[7])
    assert again == pairs[7]
    ident = np.array([p[0].to_vector() for p in pairs])
    motion = np.array([p[1].to_vector() for p in pairs])
    ref_rng = np.random.default_rng(1)
    ref = [(sample_identity(ref_rng), sample_motion(ref_rng)) for _ in range(3000)]
    ref_ident = np.array([p[0].to_vector() for p in ref])
    # every identity field has the samplers' distribution: means and spreads agree
    for j, name in enumerate(IDENTITY_FIELDS):
        assert abs(ident[:, j].mean() - ref_ident[:, j].mean()) < 0.06 * max(ref_ident[:, j].std(), 0.05) * 10, name
        assert abs(ident[:, j].std() - ref_ident[:, j].std()) < 0.2 * ref_ident[:, j].std() + 0.01, name
    assert sorted(set(ident[:, IDENTITY_FIELDS.index("hair_style")].astype(int))) == list(range(6))
    mouth, blink = motion[:, 0], motion[:, 3]
    assert abs(np.mean(mouth == 0) - latent.MOUTH_CLOSED_U) < 0.03
    assert abs(np.mean(blink == 0) - latent.BLINK_OPEN_U) < 0.03
    assert abs(np.mean(blink == 1) - (1 - latent.BLINK_CLOSED_U)) < 0.03
    assert np.all(np.abs(motion[:, 4:]) <= 1) and 0.3 < motion[:, 4].std() < 0.5
    img = latent.render_z(z[0], 32)
    assert img.shape == (32, 32, 3) and np.array_equal(img, render_face(*pairs[0], 32))


def test_mouth_code_inverts_and_errors():
    m = np.linspace(0, 1, 21)
    np.testing.assert_allclose(latent.mouth_from_z(latent.z_for_mouth(m)), m, atol=1e-5)
    assert latent.mouth_from_z(latent.z_for_mouth(0.0)) == 0.0
    u = np.array([1e-6, 0.3, 0.5, 0.97])
    np.testing.assert_allclose(latent.normal_cdf(latent.normal_ppf(u)), u, atol=1e-10)
    with pytest.raises(ValueError, match="38 values"):
        latent.params_from_z(np.zeros(5))
    with pytest.raises(ValueError, match="finite"):
        latent.params_from_z(np.full(latent.Z_DIM, np.nan))
    rest = np.zeros(latent.Z_DIM)
    for i, v in latent.rest_pairs():
        rest[i] = v
    motion = latent.params_from_z(rest)[1]
    assert motion.mouth_open == 0 and motion.blink == 0 and motion.yaw == 0 and motion.smile == 0
    np.testing.assert_allclose(latent.rest_motion(), motion.to_vector())
    # one x unit is one standard deviation of the field over random faces
    z = np.random.default_rng(3).standard_normal((4000, latent.Z_DIM))
    std = latent.motion_params(z).std(axis=0)
    for name, s in zip(latent.MOTION_Z, std):
        assert abs(s - latent.MOTION_SCALE[name]) < 0.03 * latent.MOTION_SCALE[name], name


def tiny_code_generator(seed: int = 0) -> Generator:
    torch.manual_seed(seed)
    return Generator(recon_config(parse_generator_config("32,32,16", z_dim=16, w_dim=32, mapping_layers=2)))


def test_seed_identity_is_at_rest():
    G = tiny_code_generator()
    z = torch.from_numpy(seed_to_z(3, G.z_dim)).float()
    zr = rest_z(G, z)
    assert zr[0, latent.Z_FIELDS.index("mouth_open")] == pytest.approx(latent.REST["mouth_open"])
    assert torch.equal(zr[0, :29], z[0, :29])                 # identity coordinates untouched
    torch.testing.assert_close(w_from_seed(G, 3)[0, 0], G.mapping.forward_w(zr)[0])
    plain = Generator(parse_generator_config("32,32,16", z_dim=16, w_dim=32, mapping_layers=2))
    assert rest_z(plain, z) is z


def learned_like_directions(G):
    """A direction set shaped like the trainer's export: one random direction per role."""
    from engine.demo_world.name_directions import ROLE_OF
    from engine.latent.latent_basis import generator_hash
    from engine.latent.direction_set import Direction, DirectionSet
    rng = np.random.default_rng(0)
    ds = DirectionSet()
    for name in latent.MOTION_Z:
        if name in ROLE_OF:
            ds.add(Direction(ROLE_OF[name], rng.standard_normal(G.w_dim), stdev=0.5, origin="learned"),
                   checkpoint_hash=generator_hash(G))
    return ds


def test_trajectories_follow_the_mouth_track_on_the_mouth_direction(tmp_path):
    G = tiny_code_generator()
    ds = learned_like_directions(G)
    d = ds["mouth_open"]
    track = np.array([0.0, 0.3, 0.9, 0.0])
    w_t, anchor = utterance_trajectory(G, ds, 5, track, truncation_psi=0.5)
    # the anchor is the identity as the engine shows it: the seed at rest, truncated
    np.testing.assert_allclose(anchor, w_from_seed(G, 5, truncation_psi=0.5)[0, 0].numpy(), atol=1e-6)
    np.testing.assert_allclose(w_t[0], anchor, atol=1e-6)             # closed mouth = rest
    np.testing.assert_allclose(w_t[3], anchor, atol=1e-6)
    x = (w_t - anchor) @ d.vector / d.stdev                            # exactly on the direction
    np.testing.assert_allclose(x, track / latent.MOTION_SCALE["mouth_open"], atol=1e-4)
    np.testing.assert_allclose(mouth_x(track), x, atol=1e-4)
    resid = (w_t - anchor) - np.outer(x * d.stdev, d.vector)
    assert np.abs(resid).max() < 1e-4

    # a talking folder becomes (wav, w_t, json) triples the motion trainer reads, losing nothing
    talk = tmp_path / "talk"
    (talk / "holdout").mkdir(parents=True)
    for folder, name in ((talk, "a"), (talk, "b"), (talk / "holdout", "c")):
        with wave.open(str(folder / f"{name}.wav"), "wb") as f:
            f.setnchannels(1), f.setsampwidth(2), f.setframerate(16000)
            f.writeframes((np.random.default_rng(0).standard_normal(16000) * 3000).astype(np.int16).tobytes())
        np.save(folder / f"{name}.mouth.npy", np.clip(np.sin(np.arange(25) / 3), 0, 1))
        (folder / f"{name}.json").write_text(json.dumps({"fps": 25.0}))
    out = tmp_path / "pairs"
    assert write_targets(talk, G, ds, out) == 3
    assert sorted(p.name for p in out.iterdir()) == ["a.json", "a.npy", "a.wav", "b.json", "b.npy", "b.wav", "holdout"]
    meta = json.loads((out / "b.json").read_text())
    assert meta["seed"] == 1001 and meta["fps"] == 25.0 and len(meta["anchor"]) == 32
    assert np.load(out / "b.npy").shape == (25, 32)
    ds.save(tmp_path / "dirs.json")
    from engine import train_motion
    assert train_motion.main(["--data", str(out), "--out", str(tmp_path / "lstm"), "--steps", "2", "--directions",
                              str(tmp_path / "dirs.json"), "--names", "mouth_open", "--num-ws", str(G.num_ws),
                              "--crop", "8-16", "--quiet"]) == 0
    log = [json.loads(line) for line in (tmp_path / "lstm" / "train_log.jsonl").read_text().splitlines()]
    assert len(log) == 2


def test_assets_cli_refuses_a_generator_without_the_code(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        assets_main(["targets", "--talking", str(tmp_path), "--generator", "random", "--out", str(tmp_path / "p")])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "not the demo world's code" in err and len(err.strip().splitlines()) == 1
