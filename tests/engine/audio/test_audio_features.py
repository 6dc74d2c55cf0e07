"""FeatureStream / log_mel: librosa-equal mel, any chunking == offline, timing, VAD, bad input."""
import shutil
import subprocess
import wave

import numpy as np
import pytest

from engine.audio import (LOG_FLOOR, SAMPLE_RATE, AudioInput, FeatureStream, FrameFeatures, log_mel,
                          mel_filterbank)

SR = SAMPLE_RATE


def _vowel(n, f0=120.0, formants=(700.0, 1200.0, 2600.0), amp=0.3):
    """A sustained synthetic vowel: harmonics of f0 shaped by formant bumps (webrtcvad calls it speech)."""
    t = np.arange(n) / SR
    x = sum(np.sin(2 * np.pi * h * f0 * t) / h * sum(np.exp(-((h * f0 - f) / 150.0) ** 2) for f in formants)
            for h in range(1, 60))
    return (amp * x / np.abs(x).max()).astype(np.float32)


def _test_signal(seconds=2.0, seed=0):
    """Chirp + a little noise, a vowel burst and an exact-zero gap (so the log floor is exercised)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    x = 0.3 * np.sin(2 * np.pi * (100 + 900 * t) * t) + 0.003 * rng.standard_normal(t.size)
    n = t.size
    x[min(4000, n):min(12000, n)] = _vowel(8000)[:max(0, min(12000, n) - 4000)]
    x[min(16000, n):min(20000, n)] = 0.0
    return x.astype(np.float32)


def _stream(chunks, **kw):
    fs = FeatureStream(**kw)
    out = []
    for c in chunks:
        out += fs.push(c)
    return out + fs.flush()


def _random_chunks(x, seed, max_len=1500):
    rng = np.random.default_rng(seed)
    out, i = [], 0
    while i < len(x):
        n = int(rng.integers(1, max_len))
        out.append(x[i:i + n])
        i += n
    return out


def _assert_same(a, b):
    assert [f.frame_index for f in a] == [f.frame_index for f in b]
    for p, q in zip(a, b):
        assert (p.t_end, p.rms, p.voiced) == (q.t_end, q.rms, q.voiced)
        assert np.abs(p.mel - q.mel).max() <= 1e-6


def test_filterbank_is_librosa_slaney():
    librosa = pytest.importorskip("librosa")
    ref = librosa.filters.mel(sr=SR, n_fft=400, n_mels=80, htk=False, norm="slaney")
    fb = mel_filterbank()
    assert fb.shape == (80, 201) and fb.dtype == np.float32
    np.testing.assert_allclose(fb, ref, rtol=0, atol=1e-8)


def test_log_mel_matches_librosa_center_false():
    librosa = pytest.importorskip("librosa")
    x = _test_signal()
    ours = log_mel(x)
    S = librosa.feature.melspectrogram(y=x.astype(np.float64), sr=SR, n_fft=400, hop_length=160, win_length=400,
                                       window="hann", center=False, power=2.0, n_mels=80, htk=False, norm="slaney")
    ref = np.log(np.maximum(S, 1e-10)).T
    assert ours.shape == ref.shape == ((len(x) - 400) // 160 + 1, 80) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-5)
    assert (ours[(16000 // 160) + 3: (20000 - 400) // 160] == np.float32(LOG_FLOOR)).all()   # zero gap → floor


@pytest.mark.parametrize("fps, lookahead_ms", [(25.0, 40.0), (30.0, 0.0), (29.97, 33.0)])
def test_streaming_equals_offline_over_any_chunking(fps, lookahead_ms):
    x = _test_signal(1.5)
    kw = dict(fps=fps, lookahead_ms=lookahead_ms)
    whole = _stream([x], **kw)
    assert len(whole) == int(np.ceil(len(x) * fps / SR - 1e-9))
    for chunks in ([x[i:i + 320] for i in range(0, len(x), 320)], _random_chunks(x, 1), _random_chunks(x, 2, 40)):
        _assert_same(_stream(chunks, **kw), whole)
    # mel windows are exactly the offline frames ending at or before t_end, floor-padded at the start
    offline = log_mel(x)
    fs = FeatureStream(**kw)
    for f in whole[:-3]:                             # the last frames are clipped by flush
        last = (f.t_end - 400) // 160
        for r in range(fs.window_frames):
            j = last - fs.window_frames + 1 + r
            expect = offline[j] if j >= 0 else np.full(80, LOG_FLOOR, np.float32)
            assert np.abs(f.mel[r] - expect).max() <= 1e-6


def test_one_sample_at_a_time_and_emission_time():
    x = _test_signal(0.6)
    fs = FeatureStream(fps=25.0, lookahead_ms=40.0)
    emitted_at = {}
    got = []
    for i in range(len(x)):
        for f in fs.push(x[i:i + 1]):
            emitted_at[f.frame_index] = i + 1
            got.append(f)
    for k, n in emitted_at.items():
        assert n == 640 * (k + 1) + 640                 # exactly when its window (+40 ms) is complete
        assert got[k].t_end == n
    _assert_same(got + fs.flush(), _stream([x]))
    # never peeks: frame k computed from the prefix x[:t_end] alone is the same frame
    for k in (0, 3, 9):
        f = got[k]
        prefix = FeatureStream().push(x[:f.t_end])
        _assert_same([prefix[-1]], [f])


def test_frame_features_fields_and_latency():
    fs = FeatureStream()
    assert fs.latency_ms == 40.0 and fs.window_frames == 32
    f = fs.push(np.zeros(SR // 5, np.float32))[0]
    assert isinstance(f, FrameFeatures)
    assert f.mel.shape == (32, 80) and f.mel.dtype == np.float32 and isinstance(f.rms, float)
    assert FeatureStream(lookahead_ms=0.0).latency_ms == 0.0
    lat = FeatureStream(fps=30.0, lookahead_ms=0.0, vad_frame_ms=30).latency_ms    # waits for straddling VAD frame
    assert 0.0 < lat < 30.0
    assert FeatureStream(window_ms=200.0).window_frames == 20


def test_silence_is_defined():
    out = _stream([np.zeros(SR, np.float32)])
    assert len(out) == 25
    for f in out:
        assert f.rms == 0.0 and f.voiced == 0.0
        assert (f.mel == np.float32(LOG_FLOOR)).all()


def test_vad_follows_vowel_bursts_and_rms():
    gap, burst = np.zeros(12800, np.float32), _vowel(12800)          # 0.8 s each = 20 frames at 25 fps
    x = np.concatenate([gap, burst, gap, burst, gap])
    out = _stream([x])
    voiced = np.array([f.voiced for f in out])
    assert voiced[2:18].max() == 0.0 and voiced[46:58].max() == 0.0 and voiced[86:].max() == 0.0  # hangover
    assert voiced[23:38].min() == 1.0 and voiced[63:78].min() == 1.0
    rms = np.array([f.rms for f in out])
    np.testing.assert_allclose(rms[25:35], np.sqrt(np.mean(burst.astype(np.float64) ** 2)), rtol=0.05)
    assert rms[5] == 0.0


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_real_speech_from_espeak(tmp_path):
    wav = tmp_path / "s.wav"
    subprocess.run(["espeak-ng", "-v", "en", "-s", "170", "-w", str(wav),
                    "Audio features drive the avatar. Silence keeps it still."], check=True)
    with wave.open(str(wav)) as w:
        rate, pcm = w.getframerate(), np.frombuffer(w.readframes(w.getnframes()), np.int16)
    ai = AudioInput(rate)
    x16 = np.concatenate([ai.push(pcm), ai.flush(), np.zeros(SR, np.float32)])   # + 1 s of silence
    out = _stream(_random_chunks(x16, 3, 700))
    _assert_same(out, _stream([x16]))
    voiced = np.array([f.voiced for f in out])
    assert 0.3 < voiced[:-25].mean() <= 1.0 and voiced[-10:].max() == 0.0
    assert all(np.isfinite(f.mel).all() for f in out)


def test_clipped_and_loud_input_never_crashes():
    t = np.arange(SR) / SR
    square = np.sign(np.sin(2 * np.pi * 150 * t)).astype(np.float32) * 1.5           # beyond full scale
    out = _stream(_random_chunks(square, 4))
    assert len(out) == 25 and all(np.isfinite(f.mel).all() and np.isfinite(f.rms) for f in out)
    assert out[10].rms == pytest.approx(1.5)


def test_bad_input_raises_before_state_changes():
    fs = FeatureStream()
    first = fs.push(_test_signal(0.1))
    n = fs.samples_received
    for bad, msg in [(np.array([0.1, np.nan], np.float32), "NaN"), (np.array([np.inf], np.float32), "NaN"),
                     (np.zeros((4, 2), np.float32), "1-D"), (np.zeros(4, np.int16), "float32")]:
        with pytest.raises(ValueError, match=msg):
            fs.push(bad)
        assert fs.samples_received == n
    assert fs.push(np.zeros(0, np.float32)) == []
    with pytest.raises(ValueError, match="NaN"):
        log_mel(np.array([np.nan] * 500, np.float32))
    assert log_mel(np.zeros(100, np.float32)).shape == (0, 80)
    assert len(first) == 1 and fs.flush()[0].frame_index == 1


@pytest.mark.parametrize("kwargs, msg", [(dict(vad_mode=4), "vad_mode"), (dict(vad_frame_ms=25), "vad_frame_ms"),
                                         (dict(fps=0), "fps"), (dict(lookahead_ms=-1), "lookahead"),
                                         (dict(window_ms=1), "window_ms")])
def test_bad_parameters(kwargs, msg):
    with pytest.raises(ValueError, match=msg):
        FeatureStream(**kwargs)


def test_flush_clips_and_starts_new_stream():
    x = _test_signal(0.5)[:7777]
    fs = FeatureStream()
    out = fs.push(x)
    tail = fs.flush()
    assert len(out) + len(tail) == int(np.ceil(7777 / 640))
    assert tail[-1].t_end == 7777 and all(f.t_end <= 7777 for f in tail)
    again = fs.push(x)
    assert again[0].frame_index == 0
    _assert_same(again, out)
