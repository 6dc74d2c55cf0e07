"""SpeechPriors and the idle driver with them: nods on accents, head turns per phrase that settle
in silence, gaze that shifts and returns, blinks at phrase ends; slow, bounded, seeded."""
import math

import numpy as np
import pytest

from engine.motion import ROLES, IdleDriver
from engine.motion.priors import SpeechPriors

FPS = 25.0


def talking(seconds: float, talk_s: float = 2.0, pause_s: float = 2.0) -> np.ndarray:
    """Per frame: inside a phrase (phrases of talk_s separated by pause_s of silence)."""
    t = np.arange(int(seconds * FPS)) / FPS
    return (t % (talk_s + pause_s)) < talk_s


def phrases(seconds: float, talk_s: float = 2.0, pause_s: float = 2.0, syllable_hz: float = 4.0) -> np.ndarray:
    """Voiced loudness per frame: phrases of syllables (a raised cosine at syllable_hz, peak 0.8)
    separated by silence."""
    t = np.arange(int(seconds * FPS)) / FPS
    return np.where(talking(seconds, talk_s, pause_s), 0.8 * (0.5 - 0.5 * np.cos(2 * np.pi * syllable_hz * t)), 0.0)


def phrase_ends(seconds: float, talk_s: float, pause_s: float) -> np.ndarray:
    return np.nonzero(np.diff(talking(seconds, talk_s, pause_s).astype(int)) == -1)[0]


def run_priors(level: np.ndarray, seed: int = 0, **kw):
    p = SpeechPriors(FPS, np.random.default_rng(seed), **kw)
    out = [p.step(v) for v in level]
    return (np.stack([o[0] for o in out]), np.stack([o[1] for o in out]), np.array([o[2] for o in out]))


def low_share(x: np.ndarray, hz: float) -> float:
    spec = np.abs(np.fft.rfft(x - x.mean())) ** 2
    f = np.fft.rfftfreq(len(x), 1 / FPS)
    return float(spec[f < hz].sum() / spec.sum())


def test_nods_follow_the_syllables_and_the_head_is_still_in_silence():
    head, _, _ = run_priors(np.concatenate([phrases(60, talk_s=60, pause_s=0), np.zeros(int(60 * FPS))]))
    talk, quiet = head[: int(60 * FPS)], head[int(65 * FPS):]
    pitch_talk = talk[:, 1].std()
    assert pitch_talk > 0.05 and talk[:, 1].mean() < 0                    # nods dip the head
    assert np.abs(quiet).max() < 0.05 * max(np.abs(talk).max(), 1e-9) + 1e-3
    for j in range(3):                                                  # pose energy below 2 Hz
        assert low_share(talk[:, j], 2.0) > 0.95, j


def test_each_phrase_turns_the_head_and_silence_brings_it_back():
    level = phrases(120, talk_s=3.0, pause_s=3.0)
    head, _, _ = run_priors(level, seed=3)
    starts = np.nonzero(np.diff(talking(120, 3.0, 3.0).astype(int)) == 1)[0]
    yaw_mid_phrase = np.array([head[s + int(2.5 * FPS), 0] for s in starts[:-1]])
    assert np.unique(np.round(yaw_mid_phrase, 3)).size > 0.8 * yaw_mid_phrase.size   # a new turn per phrase
    assert yaw_mid_phrase.std() > 0.15
    # after 3 s of silence (settle 1.5 s) the turn has come back most of the way
    before_next = np.array([head[s - 1, 0] for s in starts[1:]])
    assert np.abs(before_next).mean() < 0.5 * np.abs(yaw_mid_phrase).mean()


def test_gaze_shifts_away_holds_and_returns_to_the_centre():
    _, gaze, _ = run_priors(np.zeros(int(600 * FPS)), seed=1)
    away = np.abs(gaze[:, 0]) > 0.3
    assert 0.05 < away.mean() < 0.5
    onsets = np.nonzero(np.diff(away.astype(int)) == 1)[0]
    assert 40 < len(onsets) < 120                                       # ~ every 9 s in silence (8 s + the hold)
    centre = np.abs(gaze).max(axis=1) < 0.05
    assert centre.mean() > 0.4                                          # most of the time: back at the centre
    assert np.abs(gaze[:, 0]).max() <= 0.8 + 1e-9 and np.abs(gaze[:, 1]).max() <= 0.4 + 1e-9
    # a saccade: most of the way within two frames
    jumps = np.abs(np.diff(gaze[:, 0]))
    assert jumps.max() > 0.3


def test_blinks_come_at_phrase_ends():
    level = phrases(600, talk_s=2.0, pause_s=2.5)
    _, _, blink = run_priors(level, seed=2)
    ends = phrase_ends(600, 2.0, 2.5)
    onsets = np.nonzero(blink)[0]
    assert 0.5 * len(ends) < len(onsets) <= len(ends)
    after_end = [(o - ends[ends <= o].max()) / FPS for o in onsets if (ends <= o).any()]
    assert np.all(np.array(after_end) < 1.5)          # the slow follower needs < 1 s to fall, then 0.1-0.35 s
    # through the idle driver: its blinks cluster after phrase ends against its Poisson blinks
    from tests.engine.motion.test_motion_idle import feat
    rms = np.where(talking(600, 2.0, 2.5), 0.03 + 0.2 * level, 0.0)
    d = IdleDriver(["blink"], seed=4)
    b = np.array([d.step(feat(k, r, 1.0 if r > 0 else 0.0))[0] for k, r in enumerate(rms)])
    starts = np.nonzero(np.diff((b > 0).astype(int)) == 1)[0] + 1
    near = np.array([((s - ends) >= 0).any() and (s - ends[ends <= s].max()) / FPS < 1.5 for s in starts])
    window_share = 1.5 / 4.5                           # the share of time within 1.5 s after an end
    assert near.mean() > 1.6 * window_share
    plain = IdleDriver(["blink"], seed=4, priors=False)
    p = np.array([plain.step(feat(k, r, 1.0 if r > 0 else 0.0))[0] for k, r in enumerate(rms)])
    p_starts = np.nonzero(np.diff((p > 0).astype(int)) == 1)[0] + 1
    p_near = np.array([((s - ends) >= 0).any() and (s - ends[ends <= s].max()) / FPS < 1.5 for s in p_starts])
    assert p_near.mean() < near.mean() - 0.2


def test_seeded_bounded_and_without_growth_over_an_hour():
    level = phrases(3600, talk_s=2.5, pause_s=1.5)
    a = run_priors(level[: int(60 * FPS)], seed=9)
    b = run_priors(level[: int(60 * FPS)], seed=9)
    c = run_priors(level[: int(60 * FPS)], seed=10)
    assert all(np.array_equal(x, y) for x, y in zip(a, b)) and not np.array_equal(a[0], c[0])
    head, gaze, _ = run_priors(level, seed=9)
    assert np.isfinite(head).all() and np.abs(head).max() < 2.0 and np.abs(gaze).max() <= 0.8 + 1e-9
    blocks = np.abs(head).reshape(6, -1, 3).mean(axis=1)               # 10-minute blocks
    assert np.all(blocks[-1] < 1.3 * blocks[0] + 1e-3) and np.all(blocks[-1] > 0.7 * blocks[0])


def test_priors_reach_the_driver_output_and_can_be_switched_off():
    from tests.engine.motion.test_motion_idle import feat
    level = phrases(30)
    fs = [feat(k, 0.03 + 0.2 * v if t else 0.0, 1.0 if t else 0.0) for k, (v, t) in enumerate(zip(level, talking(30)))]
    on = np.stack([IdleDriver(list(ROLES), seed=1).step(f) for f in fs[:1]])
    d_on, d_off = IdleDriver(list(ROLES), seed=1), IdleDriver(list(ROLES), seed=1, priors=False)
    x_on = np.stack([d_on.step(f) for f in fs])
    x_off = np.stack([d_off.step(f) for f in fs])
    pitch = ROLES.index("head_pitch")
    assert np.abs(x_on[:, pitch] - x_off[:, pitch]).max() > 0.05 and on.shape == (1, len(ROLES))
    d = IdleDriver(list(ROLES), seed=1, priors={"nod_gain": 0.0, "turn_sd": 0.0, "gaze_shift": 0.0, "blink_p": 0.0})
    x_zero = np.stack([d.step(f) for f in fs])
    head = [ROLES.index(r) for r in ("head_yaw", "head_pitch", "head_roll", "gaze_x", "gaze_y")]
    np.testing.assert_allclose(x_zero[:, head], x_off[:, head], atol=1e-6)
    with pytest.raises(TypeError):
        IdleDriver(list(ROLES), priors={"nod": 1.0})
    with pytest.raises(ValueError, match="talk_off"):
        SpeechPriors(FPS, np.random.default_rng(0), talk_on=0.01, talk_off=0.05)
    assert math.isfinite(float(SpeechPriors(FPS, np.random.default_rng(0)).step(float("nan"))[0][0]))
