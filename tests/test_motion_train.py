"""engine.motion.train: frame_windows (== streaming), MotionDataset (pairs, one-line errors)."""
from __future__ import annotations

import json
import wave
from pathlib import Path

import numpy as np
import pytest

from engine.audio.features import FeatureStream
from engine.audio.input import SAMPLE_RATE
from engine.motion.train import DatasetError, MotionDataset, frame_windows, read_wav


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

