"""engine.motion.train: frame_windows (== streaming), MotionDataset (pairs, one-line errors)."""
from __future__ import annotations

import json
import wave
from pathlib import Path

import numpy as np
import pytest

from engine.audio.features import FeatureStream
from engine.audio.input import SAMPLE_RATE
from engine.motion.dataset import DatasetError, MotionDataset, frame_windows, read_wav


def write_wav(path: Path, samples: np.ndarray, rate: int = SAMPLE_RATE, channels: int = 1, width: int = 2):
    """samples: float in [-1, 1], [n] or [n, channels]."""
    pcm = np.clip(np.round(np.asarray(samples) * 32767), -32768, 32767).astype("<i2")
    with wave.open(str(path), "wb") as f:
        f.setnchannels(channels)
        f.setsampwidth(width)
        f.setframerate(rate)
        f.writeframes(pcm.tobytes() if width == 2 else np.zeros(pcm.size * width, np.uint8).tobytes())


def tone(seconds: float, rate: int = SAMPLE_RATE, hz: float = 220.0, seed: int = 0) -> np.ndarray:
    t = np.arange(int(round(seconds * rate))) / rate
    rng = np.random.default_rng(seed)
    return (0.3 * np.sin(2 * np.pi * hz * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)


# -- frame_windows ------------------------------------------------------------------------------
@pytest.mark.parametrize("fps,lookahead", [(25.0, 40.0), (30.0, 0.0)])
def test_frame_windows_equal_streaming(fps, lookahead):
    x = tone(1.37, seed=1)
    win = frame_windows(x, fps, 32, lookahead)
    stream = FeatureStream(fps=fps, lookahead_ms=lookahead, window_ms=320.0)
    feats = []
    for i in range(0, x.size, 320):                       # 20 ms pushes, as live audio arrives
        feats += stream.push(x[i:i + 320])
    feats += stream.flush()
    assert win.shape == (len(feats), 32, 80) and win.dtype == np.float32
    assert len(feats) == int(np.ceil(x.size * fps / SAMPLE_RATE - 1e-9))
    np.testing.assert_array_equal(win, np.stack([f.mel for f in feats]))


def test_frame_windows_window_size_and_empty():
    assert frame_windows(tone(0.5), 25.0, 8, 40.0).shape == (13, 8, 80)
    assert frame_windows(np.zeros(0, np.float32), 25.0, 32, 40.0).shape == (0, 32, 80)
    with pytest.raises(ValueError):
        frame_windows(tone(0.1), 25.0, 0, 40.0)


# -- dataset --------------------------------------------------------------------------------------
def make_pair(root: Path, name: str, frames: int, k: int = 3, fps: float = 25.0, rate: int = SAMPLE_RATE,
              channels: int = 1, x_frames: int | None = None, meta: dict | None = None, seed: int = 0):
    seconds = frames / fps
    s = tone(seconds, rate, seed=seed)
    if channels > 1:
        s = np.stack([s] * channels, axis=1)
    write_wav(root / f"{name}.wav", s, rate, channels)
    x = np.random.default_rng(seed).standard_normal((frames if x_frames is None else x_frames, k)).astype(np.float32)
    np.save(root / f"{name}.npy", x)
    if meta is not None:
        (root / f"{name}.json").write_text(json.dumps(meta))
    return x


def test_dataset_loads_pairs_any_rate(tmp_path):
    xa = make_pair(tmp_path, "a", 50, rate=44100, channels=2, meta={"fps": 25, "anchor": [0.5] * 6})
    xb = make_pair(tmp_path, "b", 40, rate=16000, x_frames=41, meta={"anchor": [1.0] * 6}, seed=1)
    ds = MotionDataset(tmp_path, window_frames=16)
    assert [c.name for c in ds.clips] == ["a", "b"]
    assert ds.k == 3 and ds.w_dim == 6 and ds.fps == 25.0 and len(ds) == 2
    a, b = ds.clips
    assert a.windows.shape == (50, 16, 80) and a.x.shape == (50, 3)
    np.testing.assert_array_equal(a.x, xa)
    np.testing.assert_array_equal(a.anchor, np.full(6, 0.5, np.float32))
    assert b.frames == 40                                    # x one row longer: cut to the audio
    np.testing.assert_array_equal(b.x, xb[:40])
    # the features are frame_windows of the 16 kHz audio
    np.testing.assert_array_equal(b.windows, frame_windows(read_wav(tmp_path / "b.wav"), 25.0, 16, 40.0))


def test_dataset_default_anchor_and_fps(tmp_path):
    make_pair(tmp_path, "a", 30, fps=30.0)
    ds = MotionDataset(tmp_path, fps=30.0, window_frames=8, default_w_dim=4)
    assert ds.w_dim == 4 and ds.clips[0].frames == 30
    np.testing.assert_array_equal(ds.clips[0].anchor, np.zeros(4, np.float32))


@pytest.mark.parametrize("case,match", [
    ("missing", "does not exist"),
    ("empty", "no NAME.wav \\+ NAME.npy pairs"),
    ("lonely", "b.wav has no matching b.npy"),
    ("length", "more than 1 frame apart"),
    ("nan", "NaN"),
    ("k", "has k=2 components, expected k=3"),
    ("k_given", "has k=3 components, expected k=5"),
    ("ndim", "shape \\[T, k\\]"),
    ("width", "only 16-bit PCM"),
    ("notwav", "not a readable PCM .wav"),
    ("anchor", "expected w_dim=6"),
    ("json", "not valid JSON"),
    ("fps", "different fps"),
])
def test_dataset_errors_are_one_line(tmp_path, case, match):
    root = tmp_path / "data"
    kw = {}
    if case != "missing":
        root.mkdir()
    if case == "lonely":
        make_pair(root, "a", 20)
        write_wav(root / "b.wav", tone(0.5))
    elif case == "length":
        make_pair(root, "a", 20, x_frames=22)
    elif case == "nan":
        make_pair(root, "a", 20)
        x = np.load(root / "a.npy"); x[3, 1] = np.nan; np.save(root / "a.npy", x)
    elif case == "k":
        make_pair(root, "a", 20, k=3)
        make_pair(root, "b", 20, k=2)
    elif case == "k_given":
        make_pair(root, "a", 20, k=3)
        kw["k"] = 5
    elif case == "ndim":
        make_pair(root, "a", 20)
        np.save(root / "a.npy", np.zeros(20, np.float32))
    elif case == "width":
        make_pair(root, "a", 20)
        write_wav(root / "a.wav", tone(0.8), width=1)
    elif case == "notwav":
        make_pair(root, "a", 20)
        (root / "a.wav").write_bytes(b"RIFF nonsense")
    elif case == "anchor":
        make_pair(root, "a", 20, meta={"anchor": [0.0] * 6})
        make_pair(root, "b", 20, meta={"anchor": [0.0] * 5})
    elif case == "json":
        make_pair(root, "a", 20)
        (root / "a.json").write_text("{nope")
    elif case == "fps":
        make_pair(root, "a", 20, meta={"fps": 25})
        make_pair(root, "b", 24, fps=30.0, meta={"fps": 30})
    with pytest.raises(DatasetError, match=match) as exc:
        MotionDataset(root, window_frames=8, **kw)
    assert "\n" not in str(exc.value)


# -- training loop --------------------------------------------------------------------------------
import torch  # noqa: E402

from engine.motion.lstm import AudioLSTMConfig  # noqa: E402
from engine.motion.lstm_file import load_motion_model  # noqa: E402
from engine.motion.dataset import Clip  # noqa: E402
from engine.motion.train import MODEL_FILE, STATE_FILE, TrainConfig, losses, predict, train  # noqa: E402


def random_dataset(n_clips=3, frames=40, k=3, w_dim=5, window=8, seed=0):
    rng = np.random.default_rng(seed)
    clips = [Clip(f"c{i}", rng.normal(-10, 4, (frames + i, window, 80)).astype(np.float32),
                  rng.standard_normal((frames + i, k)).astype(np.float32),
                  rng.standard_normal(w_dim).astype(np.float32)) for i in range(n_clips)]
    return MotionDataset.from_clips(clips, window_frames=window)


TINY = dict(window_frames=8, w_dim=5, k=3, hidden=16, audio_dim=8, conv_channels=8, noise_dim=2)


def _weights(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_losses_smoothness_term():
    pred = torch.tensor([[[0.0, 0.0], [1.0, 2.0], [1.0, 2.0]]])
    total, mse, smooth = losses(pred, torch.zeros_like(pred), 0.5)
    assert float(mse) == pytest.approx((1 + 4 + 1 + 4) / 6)
    assert float(smooth) == pytest.approx((5 + 0) / 2)              # mean over t of ||x_t - x_{t-1}||^2
    assert float(total) == pytest.approx(float(mse) + 0.25 * 5)


def test_train_deterministic_and_resume_exact(tmp_path):
    ds = random_dataset()
    cfg = TrainConfig(steps=6, batch_size=3, crop_min=4, crop_max=12, lr=1e-2, checkpoint_every=4)
    a = train(cfg, ds, tmp_path / "a", model_config=AudioLSTMConfig(**TINY), seed=3, progress=False)
    b = train(cfg, ds, tmp_path / "b", model_config=AudioLSTMConfig(**TINY), seed=3, progress=False)
    wa, wb = _weights(a), _weights(b)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert len(a.history) == 6 and all(np.isfinite(r["loss"]) for r in a.history)
    # another seed gives other weights
    c = train(cfg, ds, tmp_path / "c", model_config=AudioLSTMConfig(**TINY), seed=4, progress=False)
    assert not all(torch.equal(wa[k], v) for k, v in _weights(c).items())
    # the safetensors checkpoint is the trained model
    loaded = load_motion_model(tmp_path / "a" / MODEL_FILE)
    assert all(torch.equal(wa[k], v) for k, v in _weights(loaded).items())
    assert (tmp_path / "a" / STATE_FILE).is_file() and (tmp_path / "a" / "motion.json").is_file()
    # 12 steps at once == 6 steps + resume to 12
    cfg12 = TrainConfig(**{**cfg.to_dict(), "steps": 12})
    full = train(cfg12, ds, tmp_path / "full", model_config=AudioLSTMConfig(**TINY), seed=3, progress=False)
    resumed = train(cfg12, ds, tmp_path / "a", resume=True, progress=False)   # config from the state
    wf, wr = _weights(full), _weights(resumed)
    assert all(torch.equal(wf[k], wr[k]) for k in wf)
    assert len(resumed.history) == 6
    # nothing left to do: resuming a finished run changes nothing
    again = train(cfg12, ds, tmp_path / "a", resume=True, progress=False)
    assert all(torch.equal(wf[k], v) for k, v in _weights(again).items())


def test_train_refusals(tmp_path):
    ds = random_dataset()
    cfg = TrainConfig(steps=2, batch_size=2, crop_min=4, crop_max=6)
    train(cfg, ds, tmp_path / "r", model_config=AudioLSTMConfig(**TINY), progress=False)
    with pytest.raises(FileExistsError, match="already holds a training run"):
        train(cfg, ds, tmp_path / "r", model_config=AudioLSTMConfig(**TINY), resume=False, progress=False)
    with pytest.raises(ValueError, match="lr was"):
        train(TrainConfig(steps=4, batch_size=2, crop_min=4, crop_max=6, lr=0.5), ds, tmp_path / "r", progress=False)
    with pytest.raises(ValueError, match="dataset"):
        train(cfg, random_dataset(n_clips=2), tmp_path / "r", progress=False)
    with pytest.raises(ValueError, match="model k=4 but the dataset has k=3"):
        train(cfg, ds, tmp_path / "k", model_config=AudioLSTMConfig(**{**TINY, "k": 4}), progress=False)
    with pytest.raises(ValueError, match="lookahead_ms"):
        train(cfg, ds, tmp_path / "la", model_config=AudioLSTMConfig(**{**TINY, "lookahead_ms": 0.0}),
              progress=False)
    with pytest.raises(ValueError, match="crop_min"):
        train(TrainConfig(crop_min=9, crop_max=8), ds, tmp_path / "x", model_config=AudioLSTMConfig(**TINY))


# -- learnability ---------------------------------------------------------------------------------
def synth_clip(rng: np.random.Generator, frames: int, fps: float = 25.0):
    """Audio of random low-tone (150-400 Hz) and high-noise (3-6 kHz) bursts of 3-12 frames at
    -32..-8 dB, independently on/off, plus -70 dB hiss; targets a known causal function of it:
    x0 = the low band's level, delayed 2 frames and smoothed (one-pole, 0.6), x1 = the high
    band's level (off = -1, -32 .. -8 dB -> -0.8 .. 0.8)."""
    hop = int(round(SAMPLE_RATE / fps))
    levels = []
    for _ in range(2):
        db = np.full(frames, -np.inf)
        t = 0
        while t < frames:
            d = int(rng.integers(3, 13))
            if rng.random() < 0.6:
                db[t:t + d] = rng.uniform(-32, -8)
            t += d
        levels.append(db)
    n = frames * hop
    f_lo = np.repeat(rng.uniform(150, 400, size=frames // 4 + 1), hop * 4)[:n]
    low = np.sqrt(2) * np.sin(2 * np.pi * np.cumsum(f_lo) / SAMPLE_RATE)
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / SAMPLE_RATE)
    spec[(f < 3000) | (f > 6000)] = 0
    high = np.fft.irfft(spec, n)
    high /= high.std()
    amp = [np.repeat(10 ** (db / 20), hop) for db in levels]
    audio = amp[0] * low + amp[1] * high + 10 ** (-70 / 20) * rng.standard_normal(n)
    lo, hi = [np.where(np.isfinite(db), (db + 20) / 15, -1.0) for db in levels]
    delayed = np.concatenate([np.full(2, -1.0), lo[:-2]])
    x0, s = np.empty(frames), -1.0
    for i in range(frames):
        s = 0.6 * s + 0.4 * delayed[i]
        x0[i] = s
    return audio.astype(np.float32), np.stack([x0, hi], 1).astype(np.float32)


def test_learnability_causal_audio_function(tmp_path):
    import time
    torch.set_num_threads(max(1, min(4, torch.get_num_threads())))
    rng = np.random.default_rng(0)
    W, w_dim = 16, 8
    clips = []
    for i in range(14):
        audio, x = synth_clip(rng, 200)
        clips.append(Clip(f"c{i}", frame_windows(audio, 25.0, W, 40.0), x, np.zeros(w_dim, np.float32)))
    train_ds = MotionDataset.from_clips(clips[:10], window_frames=W)
    held = clips[10:]
    mc = AudioLSTMConfig(window_frames=W, w_dim=w_dim, k=2, hidden=48, audio_dim=32, conv_channels=16)
    cfg = TrainConfig(steps=250, batch_size=8, crop_min=16, crop_max=32, lr=3e-3, smooth_weight=0.01,
                      checkpoint_every=10_000)
    t0 = time.perf_counter()
    model = train(cfg, train_ds, tmp_path / "run", model_config=mc, seed=0, progress=False)
    elapsed = time.perf_counter() - t0
    pred = np.concatenate([predict(model, c.windows) for c in held])
    target = np.concatenate([c.x for c in held])
    other = np.concatenate([held[(i + 1) % len(held)].x for i in range(len(held))])   # another clip's targets
    corr = [float(np.corrcoef(pred[:, j], target[:, j])[0, 1]) for j in range(2)]
    control = [float(np.corrcoef(pred[:, j], other[:, j])[0, 1]) for j in range(2)]
    # control 2: the same training on shuffled pairs (clip i's audio with clip i+1's targets)
    shuffled = MotionDataset.from_clips(
        [Clip(c.name, c.windows, clips[(i + 1) % 10].x[:c.frames], c.anchor) for i, c in enumerate(clips[:10])],
        window_frames=W)
    ctrl_model = train(cfg, shuffled, tmp_path / "control", model_config=mc, seed=0, progress=False)
    ctrl_pred = np.concatenate([predict(ctrl_model, c.windows) for c in held])
    trained_on_shuffled = [_corr(ctrl_pred[:, j], target[:, j]) for j in range(2)]
    r2 = [[1 - float(np.mean((a[:, j] - target[:, j]) ** 2) / np.var(target[:, j])) for j in range(2)]
          for a in (pred, ctrl_pred)]
    print(f"learnability: held-out corr {corr}, shuffled-audio control {control}, trained on shuffled pairs "
          f"{trained_on_shuffled}, R2 trained {r2[0]} / on shuffled {r2[1]}, {elapsed:.1f} s training, {1000 * model.step_time_s:.1f} ms/step")
    assert min(corr) >= 0.9, corr
    assert max(abs(c) for c in control) < 0.3, control
    # Correlation is scale-free: a weak mapping picked up from chance co-occurrences in the shuffled
    # pairs can still correlate with the true function (seen: 0.47 on x0 at R2 0.10), so this
    # control is judged by explained variance: the shuffled-trained model explains little of it.
    assert max(r2[1]) < 0.3, r2
    assert min(r2[0]) > 0.8, r2


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    if a.std() < 1e-9 or b.std() < 1e-9:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


# -- CLI ------------------------------------------------------------------------------------------
from engine import train_motion  # noqa: E402


def _cli(argv, capsys):
    try:
        rc = train_motion.main([str(a) for a in argv])
    except SystemExit as exc:
        rc = exc.code
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_help_has_examples(capsys):
    rc, out, _ = _cli(["--help"], capsys)
    assert rc == 0 and "examples:" in out and "--resume" in out


def test_cli_trains_and_resumes(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    make_pair(data, "a", 30, k=2, meta={"anchor": [0.1] * 4})
    make_pair(data, "b", 25, k=2, rate=22050, meta={"anchor": [0.2] * 4}, seed=1)
    base = ["--data", data, "--window-frames", "8", "--hidden", "16", "--audio-dim", "8", "--crop", "4-8",
            "--batch-size", "2", "--quiet"]
    rc, out, err = _cli(base + ["--out", tmp_path / "full", "--steps", 4], capsys)
    assert rc == 0, err
    assert "wrote" in out and "step 4" in out
    full = load_motion_model(tmp_path / "full" / "motion.safetensors")
    # audio only by default (w_dim 0: the anchors are not read, any generator); --identity w reads them
    assert full.config.k == 2 and full.config.w_dim == 0 and full.config.window_frames == 8
    assert "state0" in _weights(full) and not any(k.startswith("id_encoder") for k in _weights(full))
    assert len((tmp_path / "full" / "train_log.jsonl").read_text().splitlines()) == 4
    assert _cli(base + ["--out", tmp_path / "idw", "--steps", 1, "--identity", "w"], capsys)[0] == 0
    assert load_motion_model(tmp_path / "idw" / "motion.safetensors").config.w_dim == 4
    assert _cli(base + ["--out", tmp_path / "half", "--steps", 2], capsys)[0] == 0
    rc, _, err = _cli(base + ["--out", tmp_path / "half", "--steps", 4], capsys)
    assert rc == 2 and "pass --resume" in err and err.count("\n") == 1
    assert _cli(base + ["--out", tmp_path / "half", "--steps", 4, "--resume"], capsys)[0] == 0
    half = load_motion_model(tmp_path / "half" / "motion.safetensors")
    assert all(torch.equal(v, _weights(half)[k]) for k, v in _weights(full).items())


@pytest.mark.parametrize("setup,match", [
    ("missing", "does not exist"),
    ("empty", "no NAME.wav"),
    ("length", "more than 1 frame apart"),
    ("nan", "NaN"),
    ("k", "expected k="),
])
def test_cli_bad_data_one_line_exit_2(tmp_path, capsys, setup, match):
    data = tmp_path / "d"
    if setup != "missing":
        data.mkdir()
    if setup == "length":
        make_pair(data, "a", 20, x_frames=25)
    elif setup == "nan":
        make_pair(data, "a", 20)
        x = np.load(data / "a.npy"); x[0, 0] = np.inf; np.save(data / "a.npy", x)
    elif setup == "k":
        make_pair(data, "a", 20, k=2)
        make_pair(data, "b", 20, k=3)
    rc, _, err = _cli(["--data", data, "--out", tmp_path / "o", "--steps", 1, "--window-frames", "8"], capsys)
    assert rc == 2 and match in err and err.count("\n") == 1 and err.startswith("python -m engine.train_motion: error:")


def test_cli_bad_arguments(tmp_path, capsys):
    rc, _, err = _cli(["--data", tmp_path, "--out", tmp_path / "o", "--steps", 1, "--crop", "9-3"], capsys)
    assert rc == 2 and "bad crop" in err and err.count("\n") == 1
