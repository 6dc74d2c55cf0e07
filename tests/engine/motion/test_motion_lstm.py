"""AudioMotionModel / AudioLSTMDriver: step == sequence forward, bounded anchored output (no identity
drift over an hour), defined silence / flush / reset, save/load round trip and clear file errors."""
import json
import math
import time

import numpy as np
import pytest
import torch

from engine.audio.features import LOG_FLOOR, FeatureStream, FrameFeatures
from engine.motion import MotionDriver
from engine.motion.lstm import AudioLSTMConfig, AudioMotionModel, MotionModelError
from engine.motion.lstm_driver import AudioLSTMDriver
from engine.motion.lstm_file import load_motion_model, save_motion_model

SR = 16000
FPS = 25.0
W_DIM = 64
K = 8
NAMES = [f"pc{i}" for i in range(K)]


def small_config(**kw):
    base = dict(w_dim=W_DIM, k=K, hidden=32, audio_dim=16, conv_channels=16, noise_dim=4)
    base.update(kw)
    return AudioLSTMConfig(**base)


def make_model(seed=0, **kw):
    torch.manual_seed(seed)
    return AudioMotionModel(small_config(**kw)).eval()


def perturb(model, seed=1, scale=2.0):
    """A "trained-ish" model: every weight moved far from its initialisation (saturating gates)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(scale).add_(0.5 * torch.randn(p.shape, generator=g) * p.abs().mean())
    return model


def random_mel(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g) * 6.0 - 10.0


# ------------------------------------------------------------------------------------------------
# step == forward

@pytest.mark.parametrize("trained", [False, True])
@pytest.mark.parametrize("noise_dim", [0, 4])
def test_step_by_step_equals_sequence_forward(trained, noise_dim):
    model = make_model(noise_dim=noise_dim)
    if trained:
        perturb(model)
    B, T = 3, 50
    mel = random_mel((B, T, 32, 80))
    mel[:, 10:20] = LOG_FLOOR                      # a silent stretch
    w = torch.randn(B, W_DIM, generator=torch.Generator().manual_seed(2))
    noise = torch.randn(B, T, noise_dim, generator=torch.Generator().manual_seed(3)) if noise_dim else None
    with torch.no_grad():
        x_seq = model(mel, w, noise)
        state = model.init_state(w)
        xs = []
        for t in range(T):
            x, state = model.step(mel[:, t], state, None if noise is None else noise[:, t])
            xs.append(x)
            assert state[0].shape == (B, 32) and state[1].shape == (B, 32)   # O(1) state
    x_step = torch.stack(xs, dim=1)
    assert x_seq.shape == (B, T, K) and x_seq.dtype == torch.float32
    assert torch.allclose(x_step, x_seq, atol=1e-5, rtol=0), float((x_step - x_seq).abs().max())
    assert float(x_seq.abs().max()) <= model.config.clamp_sigma
    if trained:   # the perturbation really moves the output around (not a trivial all-zero case)
        assert float(x_seq.std()) > 0.3


def test_forward_is_differentiable_and_noise_changes_the_output():
    model = make_model().train()
    mel = random_mel((2, 8, 32, 80))
    w = torch.randn(2, W_DIM)
    x = model(mel, w, torch.randn(2, 8, 4))
    x.square().mean().backward()
    assert all(p.grad is not None for p in model.parameters())
    with torch.no_grad():
        assert not torch.allclose(model(mel, w, torch.zeros(2, 8, 4)), model(mel, w, torch.ones(2, 8, 4)))
        assert torch.equal(model(mel, w, None), model(mel, w, torch.zeros(2, 8, 4)))


def test_identity_enters_through_the_initial_state():
    model = make_model()
    mel = random_mel((1, 5, 32, 80))
    with torch.no_grad():
        a = model(mel, torch.zeros(1, W_DIM))
        b = model(mel, torch.ones(1, W_DIM))
    assert not torch.allclose(a, b)


def test_audio_only_model_ignores_the_identity_and_drives_any_generator(tmp_path):
    """w_dim = 0: a learned initial state, no identity input; the same file drives anchors of any
    width (a 128-wide demo w, a 512-wide FFHQ ws) and gives the same x for the same audio."""
    model = perturb(make_model(w_dim=0, noise_dim=0))
    assert not model.uses_identity and not any(k.startswith("id_encoder") for k in model.state_dict())
    mel = random_mel((2, 20, 32, 80))
    with torch.no_grad():
        x = model(mel)                                   # no anchor needed
        assert torch.equal(x, model(mel, torch.randn(2, 7)))   # an anchor, if given, is not read
        state = model.init_state(batch=2)
        steps = []
        for t in range(20):
            xt, state = model.step(mel[:, t], state)
            steps.append(xt)
    assert torch.allclose(torch.stack(steps, 1), x, atol=1e-5, rtol=0)
    assert float(x.std()) > 0.3                          # a real, audio-dependent output
    loaded = load_motion_model(save_motion_model(model, tmp_path / "m.safetensors"))
    assert loaded.config.w_dim == 0
    outs = []
    for anchor in (np.zeros(128, np.float32), np.ones((12, 128), np.float32), np.full((16, 512), 3.0, np.float32)):
        d = AudioLSTMDriver(loaded, NAMES)
        d.reset(anchor)
        outs.append(np.stack([d.step(feat(t, mel[0, t].numpy())) for t in range(20)]))
    assert np.array_equal(outs[0], outs[1]) and np.array_equal(outs[0], outs[2])
    assert np.allclose(outs[0], x[0].numpy(), atol=1e-5)


def test_identity_model_on_another_generator_says_what_it_expected():
    d = AudioLSTMDriver(make_model(), NAMES)
    with pytest.raises(ValueError, match=r"w_dim 64 .*got \[16, 512\].*--identity none"):
        d.reset(np.zeros((16, 512), np.float32))


def test_bad_shapes_raise():
    model = make_model()
    with pytest.raises(ValueError, match="w_anchor"):
        model.init_state(torch.zeros(1, W_DIM + 1))
    with pytest.raises(ValueError, match="mel"):
        model(torch.zeros(1, 3, 31, 80), torch.zeros(1, W_DIM))
    with pytest.raises(ValueError, match="noise"):
        model(torch.zeros(1, 3, 32, 80), torch.zeros(1, W_DIM), torch.zeros(1, 3, 5))


# ------------------------------------------------------------------------------------------------
# config

def test_config_round_trip_and_validation():
    c = small_config(stdev=[float(i + 1) for i in range(K)], fps=30.0)
    d = c.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert AudioLSTMConfig.from_dict(d) == c
    with pytest.raises(ValueError, match="unknown"):
        AudioLSTMConfig.from_dict({**d, "bogus": 1})
    with pytest.raises(ValueError, match="hidden"):
        AudioLSTMConfig(hidden=0)
    with pytest.raises(ValueError, match="stdev"):
        AudioLSTMConfig(k=3, stdev=[1.0, 2.0])
    with pytest.raises(ValueError, match="clamp_sigma"):
        AudioLSTMConfig(clamp_sigma=float("nan"))


# ------------------------------------------------------------------------------------------------
# driver

def feat(k, mel):
    return FrameFeatures(frame_index=k, t_end=round((k + 1) / FPS * SR), mel=np.asarray(mel, np.float32),
                         rms=0.0, voiced=0.0)


def test_driver_matches_the_model_and_is_reproducible():
    model = perturb(make_model())
    w = torch.randn(W_DIM, generator=torch.Generator().manual_seed(5))
    d = AudioLSTMDriver(model, NAMES, seed=7)
    assert isinstance(d, MotionDriver) and d.names == NAMES and d.k == K and d.fps == FPS
    d.reset(w)
    mel = random_mel((40, 32, 80)).numpy()
    x1 = np.stack([d.step(feat(t, mel[t])) for t in range(40)])
    assert x1.shape == (40, K) and x1.dtype == np.float32
    assert np.abs(x1).max() <= model.config.clamp_sigma
    # same as the sequence forward with the driver's noise stream
    g = torch.Generator().manual_seed(7)
    noise = torch.stack([torch.randn(1, 4, generator=g) for _ in range(40)], dim=1)
    with torch.no_grad():
        ref = model(torch.from_numpy(mel)[None], w[None], noise)[0].numpy()
    np.testing.assert_allclose(x1, ref, atol=1e-5, rtol=0)
    # reset with the same anchor replays exactly; ws [num_ws, w_dim] uses ws[0]
    d.reset(np.stack([w.numpy()] * 6))
    x2 = np.stack([d.step(feat(t, mel[t])) for t in range(40)])
    np.testing.assert_array_equal(x1, x2)
    # a different identity gives different motion
    d.reset(-w)
    x3 = np.stack([d.step(feat(t, mel[t])) for t in range(40)])
    assert not np.allclose(x1, x3)


def test_step_none_is_silence():
    model = perturb(make_model())
    d = AudioLSTMDriver(model, NAMES, seed=0)
    d.reset(np.zeros(W_DIM, np.float32))
    a = np.stack([d.step(None) for _ in range(10)])
    d.reset()
    silent = np.full((32, 80), LOG_FLOOR, np.float32)
    b = np.stack([d.step(feat(t, silent)) for t in range(10)])
    np.testing.assert_array_equal(a, b)
    assert np.isfinite(a).all() and np.abs(a).max() <= 3.0


def test_bad_features_raise_before_state_changes():
    model = make_model(noise_dim=0)
    d = AudioLSTMDriver(model, NAMES)
    d.step(None)
    h = d._state[0].clone()
    with pytest.raises(ValueError, match="mel"):
        d.step(feat(0, np.zeros((31, 80))))
    bad = np.zeros((32, 80), np.float32)
    bad[3, 4] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        d.step(feat(0, bad))
    assert torch.equal(d._state[0], h)
    with pytest.raises(ValueError, match="anchor"):
        d.reset(np.zeros(W_DIM + 1))
    with pytest.raises(ValueError, match="k = 8"):
        AudioLSTMDriver(model, NAMES[:3])


def test_flush_ramps_to_zero_within_a_few_frames():
    model = perturb(make_model())
    d = AudioLSTMDriver(model, NAMES, flush_frames=3)
    d.reset(torch.randn(W_DIM))
    mel = random_mel((30, 32, 80)).numpy()
    for t in range(20):
        x = d.step(feat(t, mel[t]))
    assert np.abs(x).max() > 0.1
    d.flush()
    ramp = [np.abs(d.step(feat(20 + j, mel[20 + j]))).max() for j in range(3)]
    assert ramp[0] < np.abs(x).max() and ramp[-1] == 0.0
    assert ramp[0] >= ramp[1] >= ramp[2]
    after = d.step(feat(23, mel[23]))            # the model drives again
    assert after.shape == (K,) and np.isfinite(after).all() and np.abs(after).max() > 0


def test_flush_resumes_from_a_reinitialised_state():
    model = perturb(make_model(noise_dim=0))
    w = torch.randn(W_DIM)
    mel = random_mel((30, 32, 80)).numpy()
    d = AudioLSTMDriver(model, NAMES, flush_frames=2)
    d.reset(w)
    for t in range(10):
        d.step(feat(t, mel[t]))
    d.flush()
    got = np.stack([d.step(feat(10 + j, mel[10 + j])) for j in range(8)])
    fresh = AudioLSTMDriver(model, NAMES)
    fresh.reset(w)
    ref = np.stack([fresh.step(feat(10 + j, mel[10 + j])) for j in range(8)])
    assert np.abs(got[1]).max() == 0.0                                   # end of the ramp
    np.testing.assert_allclose(got[2:], ref[2:], atol=1e-6)


# ------------------------------------------------------------------------------------------------
# files

def test_save_load_round_trip_is_exact(tmp_path):
    model = perturb(make_model(stdev=[0.5 + i for i in range(K)]))
    path = save_motion_model(model, tmp_path / "motion.safetensors")
    side = tmp_path / "motion.json"
    assert path.is_file() and side.is_file()
    info = json.loads(side.read_text())
    assert info["config"] == model.config.to_dict()
    loaded = load_motion_model(path)
    assert loaded.config == model.config and not loaded.training
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    mel = random_mel((2, 12, 32, 80))
    w = torch.randn(2, W_DIM)
    n = torch.randn(2, 12, 4)
    with torch.no_grad():
        assert torch.equal(model(mel, w, n), loaded(mel, w, n))


def test_config_from_the_sidecar_when_metadata_is_missing(tmp_path):
    from safetensors.torch import save_file
    model = make_model()
    path = save_motion_model(model, tmp_path / "m.safetensors")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))   # no metadata
    loaded = load_motion_model(path)
    assert loaded.config == model.config
    (tmp_path / "m.json").unlink()
    with pytest.raises(ValueError, match=r"m\.safetensors.*sidecar"):
        load_motion_model(path)


def test_bad_files_raise_a_clear_value_error(tmp_path):
    model = make_model()
    path = save_motion_model(model, tmp_path / "good.safetensors")
    with pytest.raises(MotionModelError, match="missing.safetensors: no such file"):
        load_motion_model(tmp_path / "missing.safetensors")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"this is not a safetensors file at all")
    with pytest.raises(ValueError, match="junk.safetensors"):
        load_motion_model(junk)
    trunc = tmp_path / "trunc.safetensors"
    trunc.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ValueError, match="trunc.safetensors"):
        load_motion_model(trunc)
    # config that does not match the tensors
    from safetensors.torch import save_file
    other = tmp_path / "other.safetensors"
    meta = {"stylecast_motion_config": json.dumps(small_config(hidden=16).to_dict())}
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(other), metadata=meta)
    with pytest.raises(ValueError, match="other.safetensors: tensor '.*' has shape"):
        load_motion_model(other)
    badcfg = tmp_path / "badcfg.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(badcfg),
              metadata={"stylecast_motion_config": "{not json"})
    with pytest.raises(ValueError, match="badcfg.safetensors: bad motion model config"):
        load_motion_model(badcfg)
    with pytest.raises(ValueError, match="json"):
        save_motion_model(model, tmp_path / "x.json")


# ------------------------------------------------------------------------------------------------
# identity drift: one hour of audio, every frame anchored

def speech_audio(seconds, seed=0):
    """Speech-like 16 kHz audio: harmonic voice (f0 90-220 Hz) + breath noise under a syllable-rate
    (3-6 Hz) envelope, in bursts of 0.3-1.5 s separated by 0.2-1 s of silence."""
    rng = np.random.RandomState(seed)
    n = int(seconds * SR)
    x = np.zeros(n, np.float32)
    t = 0
    while t < n:
        t += int(rng.uniform(0.2, 1.0) * SR)
        length = min(int(rng.uniform(0.3, 1.5) * SR), max(n - t, 0))
        if length > 0:
            s = np.arange(length) / SR
            syl = 0.5 - 0.5 * np.cos(2 * np.pi * rng.uniform(3, 6) * s)
            f0 = rng.uniform(90, 220) * (1 + 0.1 * np.sin(2 * np.pi * 1.3 * s))
            phase = 2 * np.pi * np.cumsum(f0) / SR
            voice = sum(np.sin(h * phase) / h for h in range(1, 12))
            x[t:t + length] = rng.uniform(0.03, 0.3) * syl * (voice + 0.3 * rng.randn(length))
        t += length
    return x


@pytest.fixture(scope="module")
def minute_of_windows():
    """[1500, 32, 80]: the real FeatureStream windows of one minute of speech-like audio."""
    fs = FeatureStream(fps=FPS)
    frames = fs.push(speech_audio(60.0)) + fs.flush()
    return torch.from_numpy(np.stack([f.mel for f in frames]))


def fit_model(windows, steps=150, seed=0):
    """A quickly *trained* driver: Adam on a synthetic target (mouth-like components follow the
    loudness of the window's newest frames, the others a fixed mix of band energies)."""
    model = make_model(seed=seed).train()
    g = torch.Generator().manual_seed(seed)
    energy = (windows[:, -4:].mean(dim=(1, 2)) - LOG_FLOOR) / 15.0                     # [P]
    bands = windows[:, -4:].mean(dim=1).reshape(len(windows), 8, 10).mean(dim=2)      # [P, 8]
    mix = torch.randn(8, K, generator=g) / 8
    target = torch.tanh(((bands - bands.mean(0)) / bands.std(0)) @ mix) * 1.5
    target[:, 0] = 2.5 * energy.clamp(0, 1)
    target[:, 1] = -1.5 * energy.clamp(0, 1)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    B, T = 8, 24
    for _ in range(steps):
        start = torch.randint(0, len(windows) - T, (B,), generator=g)
        idx = start[:, None] + torch.arange(T)[None]
        w = torch.randn(B, W_DIM, generator=g)
        noise = torch.randn(B, T, model.config.noise_dim, generator=g)
        loss = (model(windows[idx], w, noise) - target[idx]).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return model.eval(), losses


@pytest.fixture(scope="module")
def fitted(minute_of_windows):
    return fit_model(minute_of_windows)


def test_fitted_model_really_learned(fitted):
    _, losses = fitted
    assert np.mean(losses[-20:]) < 0.5 * np.mean(losses[:10]), (losses[:3], losses[-3:])


def test_step_equals_forward_for_the_fitted_model(fitted, minute_of_windows):
    model, _ = fitted
    B, T = 3, 50
    mel = torch.stack([minute_of_windows[100 * b: 100 * b + T] for b in range(B)])
    w = torch.randn(B, W_DIM, generator=torch.Generator().manual_seed(9))
    noise = torch.randn(B, T, 4, generator=torch.Generator().manual_seed(10))
    with torch.no_grad():
        x_seq = model(mel, w, noise)
        state = model.init_state(w)
        xs = []
        for t in range(T):
            x, state = model.step(mel[:, t], state, noise[:, t])
            xs.append(x)
    assert torch.allclose(torch.stack(xs, 1), x_seq, atol=1e-5, rtol=0)


def run_hour(model, windows, path, anchor, *, streams=3, steps=90_000, chunk=1000, seed=0):
    """Run ``streams`` parallel streams of ``steps`` sequential frames each (one hour at 25 fps),
    cycling the minute of windows (each stream from another offset), in chunks of ``chunk``
    frames carrying the LSTM state (== step() ``steps`` times). Returns ‖w_t − w‖ [streams, steps]
    through the real LatentPath, the x [streams, steps, k] and max |c| per chunk."""
    P = len(windows)
    g = torch.Generator().manual_seed(seed)
    offsets = torch.arange(streams) * (P // streams)
    with torch.inference_mode():
        emb = model.embed_audio(windows)                                   # [P, audio_dim], once
        state = model.init_state(anchor[None].expand(streams, -1))
        dist = torch.empty(streams, steps)
        xs = torch.empty(streams, steps, model.config.k)
        cmax = []
        for t0 in range(0, steps, chunk):
            idx = (offsets[:, None] + torch.arange(t0, t0 + chunk)[None]) % P
            noise = torch.randn(streams, chunk, model.config.noise_dim, generator=g)
            x, state = model.unroll(emb[idx], state, noise)
            ws = path(x.reshape(-1, model.config.k))                          # [S*chunk, L, w_dim]
            d = (ws - path.anchor_ws[None]).norm(dim=2).amax(dim=1)           # worst layer
            dist[:, t0:t0 + chunk] = d.reshape(streams, chunk)
            xs[:, t0:t0 + chunk] = x
            cmax.append(float(state[1].abs().max()))
    return dist.numpy(), xs.numpy(), np.array(cmax)


def test_one_hour_has_no_identity_drift(fitted, minute_of_windows):
    from engine.latent.latent_basis import LatentBasis
    from engine.latent.path import LatentPath

    rng = np.random.RandomState(0)
    q, _ = np.linalg.qr(rng.randn(W_DIM, K))
    stdev = rng.uniform(0.5, 2.0, K).astype(np.float32)
    basis = LatentBasis(directions=q.T.astype(np.float32), stdev=stdev, mean=np.zeros(W_DIM, np.float32),
                        explained_variance=stdev.astype(np.float64) ** 2, origin="global", checkpoint_hash="test")
    path = LatentPath(basis, num_ws=4, clamp_sigma=3.0)
    anchor = torch.from_numpy(rng.randn(W_DIM).astype(np.float32))
    path.set_anchor(w=anchor)
    bound = 3.0 * math.sqrt(float(np.sum(stdev.astype(np.float64) ** 2)))

    models = {"random": make_model(seed=3), "fitted": fitted[0], "saturated": perturb(make_model(seed=4), scale=4.0)}
    fps_min = int(FPS * 60)
    t_start = time.perf_counter()
    threads = torch.get_num_threads()
    for name, model in models.items():
        torch.set_num_threads(1)       # tiny matrices: one thread is fastest and least disturbed
        try:
            dist, xs, cmax = run_hour(model, minute_of_windows, path, anchor)
        finally:
            torch.set_num_threads(threads)
        assert np.isfinite(dist).all(), name
        assert dist.max() <= bound * (1 + 1e-5), (name, dist.max(), bound)
        assert np.abs(xs).max() <= 3.0
        assert cmax.max() <= model.config.cell_clip
        first, last = dist[:, :10 * fps_min], dist[:, -10 * fps_min:]
        for stat in (np.mean, np.max):
            ratio = stat(last) / stat(first)
            assert 1 / 1.2 < ratio < 1.2, (name, stat.__name__, ratio)
        per_minute = dist.reshape(dist.shape[0], 60, fps_min).mean(axis=(0, 2))       # [60]
        slope = np.polyfit(np.arange(60), per_minute, 1)[0]                          # per minute
        assert abs(slope) * 60 < 0.05 * per_minute.mean(), (name, slope, per_minute.mean())
        assert dist.mean() > 0.05 * bound, name    # the face does move (not a trivially still driver)

        # the same x accumulated MoCoGAN-HD style (w_t = w_{t-1} + V·Δ_t) is a random walk that
        # this test would catch: its distance grows over the hour
        walk = np.cumsum(0.05 * xs * stdev, axis=1)
        wd = np.linalg.norm(walk, axis=2)
        assert wd[:, -10 * fps_min:].mean() > 1.5 * wd[:, :10 * fps_min].mean(), name
    assert time.perf_counter() - t_start < 60
