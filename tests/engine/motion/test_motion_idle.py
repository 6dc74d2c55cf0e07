"""IdleDriver: envelope-following mouth, blinks, slow head sway; bounded, O(1), seeded, flushable."""
import math

import numpy as np
import pytest

from engine.audio.features import FeatureStream, FrameFeatures
from engine.latent.direction_set import Direction, DirectionSet
from engine.latent.path import LatentPath
from engine.motion import ROLES, IdleDriver, MotionDriver

FPS = 25.0
SR = 16000
MEL = np.zeros((4, 80), np.float32)


def feat(k, rms, voiced):
    return FrameFeatures(frame_index=k, t_end=round((k + 1) / FPS * SR), mel=MEL, rms=float(rms), voiced=float(voiced))


def speech_bursts(seconds, seed=0):
    """Synthetic speech: noise under a syllable-rate (3-6 Hz) envelope in bursts of 0.3-1.5 s,
    with 0.2-1 s of silence between. Returns per-frame (rms, voiced)."""
    rng = np.random.RandomState(seed)
    n = int(seconds * SR)
    env = np.zeros(n)
    t = 0
    while t < n:
        t += int(rng.uniform(0.2, 1.0) * SR)
        length = int(rng.uniform(0.3, 1.5) * SR)
        seg = np.arange(min(length, max(n - t, 0)))
        if seg.size:
            syl = 0.5 - 0.5 * np.cos(2 * np.pi * rng.uniform(3, 6) * seg / SR)
            env[t:t + seg.size] = rng.uniform(0.05, 0.4) * syl
        t += length
    x = env * rng.randn(n)
    hop = int(SR / FPS)
    frames = x[: n // hop * hop].reshape(-1, hop)
    rms = np.sqrt((frames ** 2).mean(axis=1))
    voiced = (env[: n // hop * hop].reshape(-1, hop) > 0.02).mean(axis=1)
    return rms, voiced


def run(driver, rms, voiced):
    return np.stack([driver.step(feat(k, r, v)) for k, (r, v) in enumerate(zip(rms, voiced))])


def test_is_a_motion_driver_with_names_in_given_order():
    d = IdleDriver(["gaze_x", "mouth_open", "other", "blink"])
    assert isinstance(d, MotionDriver)
    assert d.names == ["gaze_x", "mouth_open", "other", "blink"] and d.k == 4
    x = d.step(None)
    assert x.shape == (4,) and x.dtype == np.float32


def test_mouth_follows_the_speech_envelope():
    rms, voiced = speech_bursts(60.0)
    d = IdleDriver(list(ROLES))
    x = run(d, rms, voiced)
    mouth = x[:, ROLES.index("mouth_open")]
    assert np.corrcoef(mouth, rms)[0, 1] > 0.8
    jaw = x[:, ROLES.index("jaw")]
    assert np.corrcoef(jaw, rms)[0, 1] > 0.8
    assert mouth.max() > 1.0  # visibly open at loud syllables


def test_silence_keeps_the_mouth_shut_and_closes_it_within_a_few_frames():
    d = IdleDriver(list(ROLES))
    i = ROLES.index("mouth_open")
    assert all(d.step(None)[i] == 0.0 for _ in range(50))
    assert all(d.step(feat(k, 0.0, 0.0))[i] == 0.0 for k in range(50))
    # below the noise gate (-40 dBFS) while "voiced": still shut
    assert all(d.step(feat(k, 10 ** (-45 / 20), 1.0))[i] == 0.0 for k in range(50))
    # loud but unvoiced (breath, fan noise): shut
    assert all(d.step(feat(k, 0.3, 0.0))[i] == 0.0 for k in range(50))
    opened = [d.step(feat(k, 0.3, 1.0))[i] for k in range(10)]
    assert opened[1] > 1.5
    closing = [d.step(feat(k, 0.0, 0.0))[i] for k in range(10)]
    assert closing[3] < 0.15 * opened[-1]      # 4 frames (160 ms) at 25 fps
    assert closing[7] == 0.0                   # then exactly closed
    # only idle motion remains: blink and sway components still move
    rest = np.stack([d.step(None) for _ in range(500)])
    assert np.all(rest[:, i] == 0) and np.all(rest[:, ROLES.index("jaw")] == 0)
    assert rest[:, ROLES.index("head_yaw")].std() > 0.05 and rest[:, ROLES.index("blink")].max() > 1.0


def test_blink_timing_over_ten_minutes():
    d = IdleDriver(["blink"], seed=3)
    b = np.array([d.step(None)[0] for _ in range(int(600 * FPS))])
    closed = b > 0
    onsets = np.flatnonzero(closed[1:] & ~closed[:-1]) + 1
    ends = np.flatnonzero(closed[:-1] & ~closed[1:]) + 1
    intervals = np.diff(onsets) / FPS
    assert 100 <= len(onsets) <= 300                 # one every 2-6 s
    assert intervals.min() >= 2.0 - 1.5 / FPS and intervals.max() <= 6.0 + 1.5 / FPS
    assert 2.8 <= intervals.mean() <= 4.2
    assert intervals.std() > 0.4                     # irregular, not a metronome
    durations = (ends[: len(onsets)] - onsets[: len(ends)]) / FPS
    assert durations.min() >= 0.1 and durations.max() <= 0.28   # 150-250 ms at 40 ms frames
    assert 2.0 <= b.max() <= 2.5
    # close-open shape: every blink rises to a peak and falls again
    for s, e in zip(onsets[:20], ends[:20]):
        seg = b[s:e]
        peak = int(np.argmax(seg))
        assert np.all(np.diff(seg[: peak + 1]) >= 0) and np.all(np.diff(seg[peak:]) <= 0)


def test_head_sway_is_bounded_and_slow():
    names = ["head_yaw", "head_pitch", "head_roll", "gaze_x", "gaze_y"]
    d = IdleDriver(names, seed=1, priors=False)     # the sway and drift alone (the priors: test_motion_priors)
    x = np.stack([d.step(None) for _ in range(int(300 * FPS))]).astype(np.float64)
    assert np.abs(x).max() < 1.6
    assert np.all(x.std(axis=0) > 0.05)
    for j in range(x.shape[1]):
        spec = np.abs(np.fft.rfft(x[:, j] - x[:, j].mean())) ** 2
        f = np.fft.rfftfreq(x.shape[0], 1 / FPS)
        assert spec[f < 1.0].sum() / spec.sum() > 0.99
    # frame-to-frame change is small: no jumps
    assert np.abs(np.diff(x, axis=0)).max() < 0.1


def _state_sizes(obj):
    sizes = {}
    for k, v in vars(obj).items():
        if isinstance(v, np.ndarray):
            sizes[k] = v.shape
        elif isinstance(v, (list, dict, tuple, set)):
            sizes[k] = len(v)
    return sizes


def test_an_hour_costs_constant_state_and_stays_bounded_without_trend():
    rms, voiced = speech_bursts(60.0, seed=2)
    fs = [feat(k, r, v) for k, (r, v) in enumerate(zip(rms, voiced))]
    d = IdleDriver(list(ROLES), seed=5)
    before = _state_sizes(d)
    n = 90_000   # 1 h at 25 fps
    norms = np.empty(n)
    for t in range(n):
        norms[t] = np.linalg.norm(d.step(fs[t % len(fs)] if (t // 3000) % 2 else None))
    assert _state_sizes(d) == before
    assert np.isfinite(norms).all() and norms.max() <= 3.0 * math.sqrt(len(ROLES))
    first, last = norms[: 15000], norms[-15000:]
    assert abs(first.mean() - last.mean()) < 0.15 * first.mean()
    slope = np.polyfit(np.arange(n) / n, norms, 1)[0]
    assert abs(slope) < 0.1


def test_every_output_is_clamped():
    d = IdleDriver(list(ROLES), clamp=1.5, mouth_gain=50.0, blink_amp=9.0,
                   sway_rms={"head_yaw": 4.0}, gaze_rms=3.0)
    x = np.stack([d.step(feat(k, 0.5, 1.0)) for k in range(3000)])
    assert np.abs(x).max() <= 1.5
    assert np.isclose(np.abs(x).max(), 1.5)


def test_deterministic_under_a_seed():
    rms, voiced = speech_bursts(20.0, seed=4)
    a = run(IdleDriver(list(ROLES), seed=11), rms, voiced)
    b = run(IdleDriver(list(ROLES), seed=11), rms, voiced)
    c = run(IdleDriver(list(ROLES), seed=12), rms, voiced)
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)
    d = IdleDriver(list(ROLES), seed=11)
    run(d, rms[:100], voiced[:100])
    d.reset()
    assert np.array_equal(run(d, rms, voiced), a)
    # without the speech priors the idle part does not depend on the audio; with them it does
    idle = [ROLES.index(r) for r in ("blink", "head_yaw", "head_pitch", "head_roll", "gaze_x", "gaze_y")]
    plain = run(IdleDriver(list(ROLES), seed=11, priors=False), rms, voiced)
    quiet = run(IdleDriver(list(ROLES), seed=11, priors=False), np.zeros_like(rms), np.zeros_like(voiced))
    assert np.array_equal(quiet[:, idle], plain[:, idle])
    quiet = run(IdleDriver(list(ROLES), seed=11), np.zeros_like(rms), np.zeros_like(voiced))
    assert not np.array_equal(quiet[:, idle], a[:, idle])


def test_flush_returns_the_mouth_to_rest_within_a_few_frames():
    i = ROLES.index("mouth_open")
    d = IdleDriver(list(ROLES), flush_frames=3)
    for k in range(20):
        d.step(feat(k, 0.3, 1.0))
    d.flush()
    after = [d.step(feat(k, 0.3, 1.0))[i] for k in range(3)]   # audio still loud: flush wins
    assert after[0] > after[1] > after[2] == 0.0
    d.flush()
    assert all(d.step(None)[i] == 0.0 for _ in range(10))
    # new speech after the flush drives the mouth again, at once (a shut mouth needs no ramp)
    d.flush()
    assert d.step(feat(0, 0.3, 1.0))[i] > 1.0


def test_mapping_and_absent_names():
    # only the directions in the set are driven; others stay zero
    d = IdleDriver(["pc3", "head_yaw", "pc9"], mapping={"mouth_open": "pc3", "blink": None})
    x = np.stack([d.step(feat(k, 0.3, 1.0)) for k in range(400)])
    assert x[:, 0].max() > 1.0                   # mouth_open drives pc3
    assert np.all(x[:, 2] == 0)                  # nothing maps to pc9
    assert x[:, 1].std() > 0.01
    with pytest.raises(ValueError, match="unknown motion role"):
        IdleDriver(["a"], mapping={"smile": "a"})
    with pytest.raises(ValueError, match="unique"):
        IdleDriver(["a", "a"])
    with pytest.raises(TypeError):
        IdleDriver("mouth_open")
    with pytest.raises(ValueError):
        IdleDriver(["a"], blink_ms=(150, 2500))


def test_output_feeds_a_direction_set_path():
    num_ws, w_dim = 4, 16
    rng = np.random.RandomState(0)
    q, _ = np.linalg.qr(rng.randn(w_dim, 4))
    ds = DirectionSet(checkpoint_hash="a" * 64)
    for j, (name, layers) in enumerate([("head_yaw", (0, 1)), ("mouth_open", (2, 3)), ("blink", None),
                                        ("gaze_x", (3, 3))]):
        ds.add(Direction(name=name, vector=q[:, j], stdev=1.0 + j, layers=layers))
    d = IdleDriver(ds)
    assert d.names == ds.names
    basis, masks = ds.to_path(num_ws, d.names)
    path = LatentPath(basis, num_ws, layer_masks=masks)
    anchor = rng.randn(num_ws, w_dim).astype(np.float32)
    path.set_anchor(ws=anchor)
    x = d.step(feat(0, 0.3, 1.0))
    ws = path(x).numpy()[0]
    # mouth_open acts on layers 2-3 only, yaw on 0-1
    expect = anchor.astype(np.float64).copy()
    expect[0:2] += x[0] * 1.0 * q[:, 0]
    expect[2:4] += x[1] * 2.0 * q[:, 1]
    expect[:] += x[2] * 3.0 * q[:, 2]
    expect[3] += x[3] * 4.0 * q[:, 3]
    np.testing.assert_allclose(ws, expect, atol=1e-5)


def test_end_to_end_from_pcm_through_the_feature_stream():
    """Syllables of a synthetic vowel (harmonics of 120 Hz under formant bumps, 4 Hz syllable
    envelope) with quiet gaps, streamed in 20 ms chunks through FeatureStream."""
    t = np.arange(int(0.8 * SR)) / SR
    f0, formants = 120.0, (700.0, 1200.0, 2600.0)
    vowel = sum(np.sin(2 * np.pi * h * f0 * t) / h * sum(np.exp(-((h * f0 - f) / 150.0) ** 2) for f in formants)
                for h in range(1, 40))
    vowel *= 0.3 / np.abs(vowel).max() * (0.55 - 0.45 * np.cos(2 * np.pi * 4.0 * t))
    rng = np.random.RandomState(0)
    gap = 0.0005 * rng.randn(int(0.8 * SR))                    # -66 dBFS room noise
    pcm = np.concatenate([gap, vowel, gap, 0.5 * vowel, gap]).astype(np.float32)
    stream = FeatureStream(fps=FPS)
    features = []
    for i in range(0, pcm.size, 320):
        features += stream.push(pcm[i:i + 320])
    features += stream.flush()
    d = IdleDriver(list(ROLES))
    x = np.stack([d.step(f) for f in features])
    mouth = x[:, ROLES.index("mouth_open")]
    rms = np.array([f.rms for f in features])
    assert len(features) == 100
    assert np.corrcoef(mouth, rms)[0, 1] > 0.8
    assert mouth[:20].max() == 0.0 and mouth[45:60].max() == 0.0 and mouth[86:].max() == 0.0
    assert mouth[20:40].max() > 1.0 and mouth[60:80].max() > 0.5
    assert mouth[60:80].max() < mouth[20:40].max()            # the quieter utterance opens less
