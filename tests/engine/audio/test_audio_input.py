"""AudioInput: any rate/layout → 16 kHz mono float32, streaming == one-shot, frequency kept."""
import numpy as np
import pytest

from engine.audio import SAMPLE_RATE, AudioInput

RATES = [8000, 11025, 16000, 22050, 44100, 48000]


def _sine(rate, seconds, freq, amp=0.5):
    t = np.arange(int(rate * seconds)) / rate
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _run(ai, chunks):
    out = [ai.push(c) for c in chunks]
    out.append(ai.flush())
    return np.concatenate(out)


def _random_chunks(x, rng, max_len=2000, step=1):
    chunks, i = [], 0
    while i < len(x):
        n = int(rng.integers(1, max_len)) * step
        chunks.append(x[i:i + n])
        i += n
    return chunks


@pytest.mark.parametrize("rate", RATES)
def test_streaming_equals_one_shot_any_chunking(rate):
    rng = np.random.default_rng(rate)
    x = (0.1 * rng.standard_normal(rate)).astype(np.float32)
    one = _run(AudioInput(rate, dtype="float32"), [x])
    assert one.dtype == np.float32 and one.ndim == 1
    assert abs(len(one) - SAMPLE_RATE) <= 1
    for chunks in (_random_chunks(x, rng), [x[i:i + rate // 50] for i in range(0, len(x), rate // 50)],
                   [x[:1], x[1:2], x[2:]]):
        np.testing.assert_array_equal(_run(AudioInput(rate, dtype="float32"), chunks), one)


@pytest.mark.parametrize("rate", RATES)
def test_sine_keeps_frequency_and_amplitude(rate):
    freq = 440.0 if rate > 8000 else 1000.0
    y = _run(AudioInput(rate, dtype="float32"), [_sine(rate, 1.0, freq)])
    seg = y[2000:14000].astype(np.float64)                  # away from the filter's edges
    spec = np.abs(np.fft.rfft(seg * np.hanning(seg.size)))
    peak_hz = np.argmax(spec) * SAMPLE_RATE / seg.size
    assert abs(peak_hz - freq) < 2.0
    assert np.sqrt(np.mean(seg ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=2e-3)


def test_stereo_downmix_interleaved_and_2d_and_split_frames():
    rate = 48000
    left, right = _sine(rate, 0.5, 300.0, 0.4), _sine(rate, 0.5, 300.0, 0.2)
    pcm = np.round(np.stack([left, right], axis=1) * 32767).astype(np.int16)       # [n, 2]
    mono = ((pcm[:, 0].astype(np.float32) + pcm[:, 1]) / 2 / 32768).astype(np.float32)
    ref = _run(AudioInput(rate, dtype="float32"), [mono])
    y2d = _run(AudioInput(rate, channels=2), [pcm])
    inter = pcm.reshape(-1)
    odd = _run(AudioInput(rate, channels=2), [inter[:3], inter[3:1001], inter[1001:]])  # splits frames
    np.testing.assert_allclose(y2d, ref, atol=1e-7)
    np.testing.assert_array_equal(odd, y2d)
    with pytest.raises(ValueError, match=r"\[n, 2\]"):
        AudioInput(rate, channels=2).push(np.zeros((10, 3), np.int16))


def test_int16_scaling_and_passthrough_at_16k():
    pcm = np.array([0, 16384, -32768, 32767, -1], dtype=np.int16)
    ai = AudioInput(16000)
    y = ai.push(pcm)
    np.testing.assert_array_equal(y, np.array([0, 0.5, -1.0, 32767 / 32768, -1 / 32768], np.float32))
    np.testing.assert_array_equal(ai.push(pcm.tobytes()), y)                       # raw bytes too
    assert ai.samples_in == ai.samples_out == 10
    assert ai.flush().size == 0


def test_bad_input_raises_before_state_changes():
    ai = AudioInput(44100, dtype="float32")
    ai.push(np.zeros(441, np.float32))
    before = (ai.samples_in, ai.samples_out)
    for bad, msg in [(np.array([0.0, np.nan], np.float32), "NaN"), (np.array([np.inf], np.float32), "NaN"),
                     (np.zeros(4, np.int16), "float32"), (np.zeros((2, 2, 2), np.float32), "shape"),
                     (b"\x00\x00\x00", "whole number")]:
        with pytest.raises(ValueError, match=msg):
            ai.push(bad)
        assert (ai.samples_in, ai.samples_out) == before
    assert ai.push(np.zeros(0, np.float32)).size == 0                             # empty: a no-op
    with pytest.raises(ValueError, match="int16"):
        AudioInput(16000).push(np.zeros(4, np.float32))


@pytest.mark.parametrize("kwargs, msg", [(dict(sample_rate=96000), "96000"), (dict(sample_rate=4000), "4000"),
                                         (dict(sample_rate=16000, channels=0), "channel"),
                                         (dict(sample_rate=16000, dtype="int32"), "int32")])
def test_unsupported_format_names_it(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        AudioInput(**kwargs)


def test_flush_starts_a_new_stream():
    x = _sine(22050, 0.2, 500.0)
    ai = AudioInput(22050, dtype="float32")
    first = _run(ai, [x])
    second = _run(ai, [x])
    np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize("rate", [8000, 11025, 22050, 44100, 48000])
def test_latency_ms_bounds_the_real_lag_of_a_click(rate):
    """A click pushed in 20 ms chunks comes out of the resampler within latency_ms after the
    chunk that carried it was pushed, rounded up to whole chunks (output only appears at a
    push), and no sooner than latency_ms - one chunk for the worst-placed click (the bound is
    tight, not a loose guess)."""
    from engine.audio.input import resampler_lag_ms

    ai = AudioInput(rate, 1, "float32")
    mean, worst = resampler_lag_ms(rate)
    assert ai.latency_ms == worst and 0 < mean <= worst < 130
    chunk = rate // 50
    seen_lags = []
    for offset_ms in (300, 307, 313, 520, 733):
        ai.flush()
        x = np.zeros(rate, np.float32)
        pos = int(rate * offset_ms / 1000)
        x[pos] = 1.0
        out, pushed_at = [], []
        for i in range(0, x.size, chunk):
            y = ai.push(x[i:i + chunk])
            out.append(y)
            pushed_at.append((min(i + chunk, x.size), sum(o.size for o in out)))
        y = np.concatenate(out)
        peak = int(np.argmax(np.abs(y)))
        assert abs(peak - pos * SAMPLE_RATE / rate) <= 2             # no shift of the signal itself
        # the first push after which the click's output (peak + filter tail) was available
        n_in = next(n for n, n_out in pushed_at if n_out > peak)
        chunk_end = ((pos // chunk) + 1) * chunk                       # the push that carried the click
        seen_lags.append((n_in - chunk_end) * 1000.0 / rate)
    chunk_ms = 1000.0 * chunk / rate
    assert max(seen_lags) <= np.ceil(worst / chunk_ms - 1e-9) * chunk_ms + 1e-6
    assert max(seen_lags) >= worst - chunk_ms
    assert ai.latency_ms > 0 and AudioInput(SAMPLE_RATE).latency_ms == 0.0
