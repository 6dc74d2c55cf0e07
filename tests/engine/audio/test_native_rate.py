"""Features at the input rate (32 / 48 kHz, no resampler): the same features as at 16 kHz for the
same sound, any chunking == offline, emitted with no resampler lag, and the timeline's choice of
the feature rate (set by the first pushed audio; a later rate is resampled and its lag reported)."""
from __future__ import annotations

import numpy as np
import pytest
import soxr

from engine.audio import LOG_FLOOR, FeatureStream
from engine.audio.features import NATIVE_RATES
from engine.audio.timeline import AudioTimeline


def _sound(rate: int, seconds: float = 1.6, seed: int = 0) -> np.ndarray:
    """The same band-limited sound (harmonics of 140 Hz up to 6 kHz, a syllable envelope, a silent
    gap) sampled at ``rate``: its features must not depend on the rate."""
    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    phases = rng.uniform(0, 2 * np.pi, 43)
    x = sum(np.sin(2 * np.pi * 140.0 * h * t + phases[h - 1]) / h for h in range(1, 43))
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 3.0 * t)
    x = 0.25 * x * env / np.abs(x).max()
    x[(t > 0.9) & (t < 1.1)] = 0.0
    return x.astype(np.float32)


def _stream(fs: FeatureStream, x: np.ndarray, chunk: int) -> list:
    out = []
    for i in range(0, x.size, chunk):
        out += fs.push(x[i:i + chunk])
    return out


@pytest.mark.parametrize("rate", [32000, 48000])
def test_the_same_sound_has_the_same_features_at_its_own_rate(rate):
    ref = _stream(FeatureStream(), _sound(16000), 320)
    got = _stream(FeatureStream(sample_rate=rate), _sound(rate), rate // 50)
    assert [f.frame_index for f in got] == [f.frame_index for f in ref] and len(ref) >= 35
    assert [f.t_end for f in got] == [f.t_end for f in ref]            # on the 16 kHz clock
    for a, b in zip(got, ref):
        loud = b.mel > LOG_FLOOR + 20                                 # bins with energy (floor: silence)
        assert np.abs(a.mel[loud] - b.mel[loud]).max() < 0.05, a.frame_index
        assert np.array_equal(a.mel[~loud] <= LOG_FLOOR + 1e-3, b.mel[~loud] <= LOG_FLOOR + 1e-3)
        assert a.rms == pytest.approx(b.rms, rel=1e-2, abs=1e-6)      # the gap cuts on another grid
    voiced = np.array([[a.voiced, b.voiced] for a, b in zip(got, ref)])
    assert np.abs(voiced[:, 0] - voiced[:, 1]).mean() < 0.1           # webrtcvad at either rate


def test_48k_streaming_over_any_chunking_equals_one_push():
    x = _sound(48000, seconds=1.3, seed=3)
    rng = np.random.default_rng(1)
    whole = FeatureStream(sample_rate=48000, fps=30.0)
    a = whole.push(x) + whole.flush()
    fs, b, i = FeatureStream(sample_rate=48000, fps=30.0), [], 0
    while i < x.size:
        n = int(rng.integers(1, 2500))
        b += fs.push(x[i:i + n])
        i += n
    b += fs.flush()
    assert [f.frame_index for f in a] == [f.frame_index for f in b] and len(a) == 39
    for p, q in zip(a, b):
        assert (p.t_end, p.rms, p.voiced) == (q.t_end, q.rms, q.voiced)
        assert np.array_equal(p.mel, q.mel)


def test_48k_frames_are_ready_with_the_lookahead_only():
    fs = FeatureStream(sample_rate=48000, lookahead_ms=40.0)
    assert fs.latency_ms == 40.0
    x = _sound(48000)
    # frame 0 covers 16 kHz samples [0, 640); with 40 ms lookahead it needs 1280 = 3840 at 48 kHz
    assert fs.push(x[:3839]) == [] and fs.samples_received == 1279 and fs.samples_pending == pytest.approx(2 / 3)
    (f0,) = fs.push(x[3839:3840])
    assert f0.frame_index == 0 and f0.t_end == 1280


def test_a_silent_stream_changes_rate_without_a_seam():
    """Silence first (the server fills it while no audio has come), then audio at 48 kHz: the
    stream switched at that point gives exactly what a 48 kHz stream from the start gives."""
    silence16 = 12345                                                 # not a frame boundary
    x = _sound(48000, seconds=1.0)
    ref = FeatureStream(sample_rate=48000)
    expect = ref.push(np.zeros(silence16 * 3, np.float32))
    expect += _stream(ref, x, 960)
    fs = FeatureStream()
    got = fs.push(np.zeros(silence16, np.float32))
    fs = fs.silent_at(48000)
    assert fs.sample_rate == 48000 and fs.samples_received == silence16
    got += _stream(fs, x, 960)
    assert [f.frame_index for f in got] == [f.frame_index for f in expect]
    for p, q in zip(got, expect):
        assert (p.t_end, p.rms, p.voiced) == (q.t_end, q.rms, q.voiced)
        assert np.array_equal(p.mel, q.mel)


def _timeline():
    return AudioTimeline(25.0, 40.0, None, audio_out_rate=48000, max_pending_frames=200,
                         on_overflow=lambda f: None)


def _frames(tl):
    n = tl.ready_count()
    return tl.take(n)[0] if n else []


def test_timeline_reads_48k_at_48k_after_the_silence_it_filled():
    tl = _timeline()
    tl.fill_next()                                                    # silence before any audio
    first = _frames(tl)
    pcm = (_sound(48000) * 32767).astype(np.int16)
    for i in range(0, pcm.size, 960):
        tl.push(pcm[i:i + 960], 48000, 1, "int16")
    assert tl.feature_rate == 48000 and tl.latency_ms == 40.0        # no resampler
    assert tl.pushed_samples == tl.clock == tl.frame_start(1) + 640 + 16000 * pcm.size // 48000
    got = first + _frames(tl)
    # the same frames as a 48 kHz feature stream that saw the silence and then the audio
    ref = FeatureStream(sample_rate=48000)
    want = ref.push(np.zeros(1280 * 3, np.float32)) + ref.push(pcm.astype(np.float32) / 32768)
    assert [k for k, _, _ in got] == [f.frame_index for f in want]
    for (_, f, _), w in zip(got, want):
        assert np.array_equal(f.mel, w.mel) and f.voiced == w.voiced


def test_timeline_resamples_a_second_rate_and_reports_its_lag():
    tl = _timeline()
    tl.push(np.zeros(1600, np.float32), 16000, 1, "float32")          # heard: the features read 16 kHz
    tl.push(np.zeros(4800, np.int16), 48000, 1, "int16")
    assert tl.feature_rate == 16000 and tl.latency_ms > 60            # soxr's lag + the lookahead
    tl.restart(tl.lookahead_ms, tl.window_ms)                         # a new stream: the input's rate
    assert tl.feature_rate == 48000 and tl.latency_ms == 40.0
    tl.push(np.zeros(960, np.int16), 48000, 1, "int16")
    tl.push(np.zeros(882, np.int16), 44100, 1, "int16")               # heard 48 kHz: resampled to it
    assert tl.feature_rate == 48000 and tl.latency_ms > 60
    assert tl.pushed_samples == pytest.approx(tl.frame_start(tl.next_k) + 640, abs=1)   # 40 ms on the clock
    fresh = _timeline()
    fresh.push(np.zeros(882, np.int16), 44100, 1, "int16")            # the first audio: not native
    assert fresh.feature_rate == 16000 and fresh.latency_ms > 60


def test_native_rates_and_bad_rates():
    assert NATIVE_RATES == (16000, 32000, 48000)
    for bad in (44100, 8000, True, 48000.5):
        with pytest.raises(ValueError, match="sample_rate must be one of"):
            FeatureStream(sample_rate=bad)


def test_native_features_stay_close_to_resampled_ones_on_speechlike_audio():
    """What the live path computed before (48 kHz resampled to 16 kHz by soxr, then features) is
    close to what it computes now at 48 kHz."""
    x16 = _sound(16000, seconds=2.0, seed=5)
    x48 = soxr.resample(x16, 16000, 48000, quality="VHQ").astype(np.float32)
    y16 = soxr.resample(x48, 48000, 16000, quality="HQ").astype(np.float32)
    a = _stream(FeatureStream(), y16, 320)
    b = _stream(FeatureStream(sample_rate=48000), x48, 960)
    n = min(len(a), len(b))
    d = np.concatenate([np.abs(p.mel - q.mel)[q.mel > LOG_FLOOR + 20] for p, q in zip(a[:n], b[:n])])
    assert d.size > 1000 and np.median(d) < 0.05
