"""AvatarSession / AvatarEngine: frames, one clock, motion from audio, audio out, control calls."""
from __future__ import annotations

import math
import shutil
import subprocess
import threading
import wave

import numpy as np
import pytest
import torch

from engine.audio.input import AudioInput
from engine.latent.identity import w_from_seed
from engine.motion.base import ROLES
from engine.session import STAGES, AvatarEngine, AvatarSession, Frame, default_directions

SR = 16000


# -- fixtures and signals ------------------------------------------------------------------------

@pytest.fixture(autouse=True)
def _one_torch_thread():
    # the machine's few cores are shared: one intra-op thread keeps 128 px synthesis fast under load
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def basis_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("stylecast-cache")


@pytest.fixture(scope="session")
def engine(demo_G, basis_cache):
    return AvatarEngine(demo_G, directions=default_directions(demo_G, cache_dir=basis_cache))


@pytest.fixture(scope="session")
def fast(demo_G, engine):
    """Same generator and directions, but "synthesis" is an 8x8 picture of ws (for tests about motion,
    clocks and audio, where 128 px frames would only cost time)."""
    def tiny(ws):
        return torch.tanh(ws[:, :3, :64].reshape(ws.shape[0], 3, 8, 8))

    return AvatarEngine(demo_G, directions=engine.directions, synthesize=tiny, resolution=8)


def _vowel(n, rate=SR, f0=120.0, formants=(700.0, 1200.0, 2600.0), amp=0.3):
    """A sustained synthetic vowel (harmonics shaped by formant bumps; webrtcvad calls it speech)."""
    if n == 0:
        return np.zeros(0, np.float32)
    t = np.arange(n) / rate
    x = sum(np.sin(2 * np.pi * h * f0 * t) / h * sum(np.exp(-((h * f0 - f) / 150.0) ** 2) for f in formants)
            for h in range(1, int(min(60, rate / 2 / f0))))
    return (amp * x / np.abs(x).max()).astype(np.float32)


def _bursts(seconds=3.0, rate=SR):
    """Vowel bursts (0.5-1.2 s, 1.8-2.4 s) in exact silence."""
    x = np.zeros(int(seconds * rate), dtype=np.float32)
    for a, b in ((0.5, 1.2), (1.8, 2.4)):
        i, j = min(int(a * rate), x.size), min(int(b * rate), x.size)
        x[i:j] = _vowel(j - i, rate)
    return x


def _i16(x):
    return np.clip(np.round(x * 32767), -32768, 32767).astype(np.int16)


def _push_chunks(s, x, rate, ms=20, channels=1):
    n = int(rate * ms / 1000) * channels
    for i in range(0, len(x), n):
        s.push_audio(x[i:i + n], rate, channels)


def _pull_all(s, **kw):
    out = []
    while (f := s.next_frame(**kw)) is not None:
        out.append(f)
    return out


def _mouth(f):
    return float(f.x[ROLES.index("mouth_open")])


def _ready_frames(n_samples, fps=25.0, lookahead=640):
    """Frames whose audio (+ lookahead) lies inside n_samples 16 kHz samples."""
    k = 0
    while math.floor((k + 1) * SR / fps + 0.5) + lookahead <= n_samples:
        k += 1
    return k


# -- engine --------------------------------------------------------------------------------------

def test_default_directions_roles_layers_and_cache(demo_G, basis_cache):
    ds = default_directions(demo_G, cache_dir=basis_cache)
    assert ds.names == list(ROLES)
    assert [d.component for d in ds] == list(range(8))
    n = demo_G.num_ws                                   # 12 for the demo generator
    assert ds["head_yaw"].layers == (0, n // 3 - 1)
    assert ds["mouth_open"].layers == (n // 3, 2 * n // 3 - 1)
    assert list(basis_cache.glob("global-*-n50000-k8-seed0.npz")), "basis was not cached"
    again = default_directions(demo_G, cache_dir=basis_cache)
    assert np.array_equal(again["jaw"].vector, ds["jaw"].vector)


def test_engine_synthesize_and_to_uint8(engine, demo_G):
    ws = w_from_seed(demo_G, 3, truncation_psi=0.7)
    img = engine.synthesize(ws)
    assert img.shape == (1, 3, 128, 128) and img.dtype == torch.float32
    u8 = engine.to_uint8(img)
    assert u8.shape == (1, 128, 128, 3) and u8.dtype == np.uint8
    ref = (demo_G.synthesis(ws, noise_mode="const") * 127.5 + 128).clamp(0, 255).to(torch.uint8)
    assert np.array_equal(u8[0], ref[0].permute(1, 2, 0).numpy())
    with pytest.raises(ValueError, match="ws must be"):
        engine.synthesize(torch.zeros(1, 3, demo_G.w_dim))


def test_engine_resolution_and_bad_arguments(demo_G, engine):
    small = AvatarEngine(demo_G, directions=engine.directions, resolution=64)
    s = AvatarSession(small)
    f = s.next_frame(fill_silence=True)
    assert f.image.shape == (64, 64, 3)
    for kw, msg in ((dict(dtype="int8"), "dtype"), (dict(resolution=3), "resolution"),
                    (dict(noise_mode="loud"), "noise_mode"), (dict(directions=42), "directions")):
        with pytest.raises(ValueError, match=msg):
            AvatarEngine(demo_G, **({"directions": engine.directions} | kw))


def test_custom_synthesize_callable(demo_G, engine):
    calls = []

    def gray(ws):
        calls.append(tuple(ws.shape))
        return torch.zeros(ws.shape[0], 3, 32, 32)

    s = AvatarSession(AvatarEngine(demo_G, directions=engine.directions, synthesize=gray))
    f = s.next_frame(fill_silence=True)
    assert calls == [(1, demo_G.num_ws, demo_G.w_dim)]
    assert f.image.shape == (128, 128, 3) and (f.image == 128).all()      # resized to the output size


# -- frames and the clock ------------------------------------------------------------------------

@pytest.mark.parametrize("fps", [25.0, 30.0])
def test_frames_count_size_pts_and_timings(engine, fps):
    s = AvatarSession(engine, fps=fps)
    assert s.next_frame() is None and s.frames_ready() == 0
    x = _bursts(1.0)
    _push_chunks(s, x, SR)
    assert s.clock == x.size
    expected = _ready_frames(x.size, fps)
    assert s.frames_ready() == expected
    frames = _pull_all(s)
    assert len(frames) == expected
    for k, f in enumerate(frames):
        assert isinstance(f, Frame)
        assert f.index == k and f.dropped == 0
        assert f.pts == math.floor(k * SR / fps + 0.5) and f.time_s == f.pts / SR
        assert f.image.shape == (128, 128, 3) and f.image.dtype == np.uint8
        assert f.x.shape == (8,) and f.x.dtype == np.float32
        assert set(f.timings) == set(STAGES) and all(v >= 0 for v in f.timings.values())
        assert f.timings["total"] == pytest.approx(sum(f.timings[s_] for s_ in STAGES if s_ != "total"))
        assert f.audio is None and f.audio_rate is None
        assert f.latency_ms == pytest.approx(40.0)          # 16 kHz input: no resampler, 40 ms lookahead
    st = s.stats()
    assert st["frames"] == expected and st["dropped"] == 0
    assert st["timings"]["synthesis"]["p50"] > 0 and st["timings"]["synthesis"]["p95"] >= st["timings"]["synthesis"]["p50"]


def test_latency_includes_resampler_lag_and_none_at_a_native_rate(engine):
    s = AvatarSession(engine)
    s.push_audio(np.zeros(882, np.int16), 44100)
    lag = AudioInput(44100, 1, "int16").latency_ms      # soxr's lag from 44.1 to 16 kHz
    assert lag > 30 and s.latency_ms == pytest.approx(lag + 40.0)
    s48 = AvatarSession(engine)
    s48.push_audio(np.zeros(960, np.int16), 48000)      # features at 48 kHz: no resampler
    assert s48.latency_ms == 40.0


def test_speech_moves_the_mouth_more_than_silence(engine):
    s = AvatarSession(engine)
    x = _bursts(3.0)
    _push_chunks(s, x, SR)
    frames = _pull_all(s, fill_silence=False)
    in_burst = [_mouth(f) for f in frames if 0.6 <= f.time_s <= 1.1 or 1.9 <= f.time_s <= 2.3]
    silent = [_mouth(f) for f in frames if f.time_s < 0.45 or 1.5 <= f.time_s <= 1.75]
    assert np.mean(in_burst) > 1.0, in_burst
    assert max(silent) == 0.0
    assert np.mean([f.voiced for f in frames if 0.6 <= f.time_s <= 1.1]) > 0.8
    # the mouth pixels move with it: frames in a burst differ from the silent ones more than silent ones among themselves
    img = {round(f.time_s, 2): f.image.astype(np.int16) for f in frames}
    assert np.abs(img[0.8] - img[0.2]).mean() > np.abs(img[0.24] - img[0.2]).mean()


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng not installed")
def test_real_speech_from_espeak(fast, tmp_path):
    wav = tmp_path / "speech.wav"
    subprocess.run(["espeak-ng", "-v", "en", "-s", "170", "-w", str(wav),
                    "Hello there. This is the avatar talking, one two three."], check=True, capture_output=True)
    with wave.open(str(wav)) as w:
        rate = w.getframerate()
        pcm = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16)
    s = AvatarSession(fast)
    _push_chunks(s, pcm, rate)
    speech = _pull_all(s)
    quiet = AvatarSession(fast)
    _push_chunks(quiet, np.zeros_like(pcm), rate)
    silence = _pull_all(quiet)
    assert len(speech) == len(silence) > 50
    assert np.mean([_mouth(f) for f in speech]) > 0.5
    assert np.mean([abs(_mouth(f)) for f in silence]) == 0.0
    assert np.mean([f.voiced for f in speech]) > 0.5


def test_fill_silence_keeps_idle_motion_running(engine, fast):
    s = AvatarSession(engine)
    assert s.next_frame() is None                     # no audio: nothing ready
    frames = []
    for k in range(25):
        f = s.next_frame(fill_silence=True)
        frames.append(f)
        assert f.index == k
        # exactly the missing samples: audio up to frame k's end + the 40 ms lookahead
        assert s.clock == math.floor((k + 1) * SR / 25 + 0.5) + 640
        assert s.frames_ready() == 0
    assert np.abs(frames[0].image.astype(int) - frames[24].image.astype(int)).mean() > 0.5   # it moves
    quick = AvatarSession(fast)
    xs = np.stack([quick.next_frame(fill_silence=True).x for _ in range(200)])                # 8 s
    assert np.array_equal(xs[:25], np.stack([f.x for f in frames]))
    assert (xs[:, ROLES.index("mouth_open")] == 0).all()
    yaw = xs[:, ROLES.index("head_yaw")]
    assert np.ptp(yaw) > 0.05 and len(np.unique(yaw)) > 190       # the head sways
    assert xs[:, ROLES.index("blink")].max() > 1.0                 # blinks come every 2-6 s


def test_fill_silence_uses_audio_held_in_the_resampler(fast):
    s = AvatarSession(fast)
    x = _i16(_vowel(44100 * 2 // 5, 44100))                    # 0.4 s at 44.1 kHz (48 kHz needs no soxr)
    s.push_audio(x, 44100)
    assert s.clock < 6400                                     # part of it is still inside soxr
    frames = _pull_all(s, fill_silence=False)
    f = s.next_frame(fill_silence=True)
    assert f.index == len(frames)
    assert s.clock >= 6400                                    # the held audio came out, then zeros
    assert f.rms > 0.01                                      # frame 8 (0.32-0.36 s) still has the vowel


def test_push_silence_advances_the_clock(fast):
    s = AvatarSession(fast)
    s.push_silence(0.5)
    assert s.clock == 8000
    assert len(_pull_all(s)) == _ready_frames(8000)
    with pytest.raises(ValueError):
        s.push_silence(float("nan"))
    with pytest.raises(ValueError):
        s.push_silence(-1)


def test_latest_drops_and_reports_frames(fast):
    x = _bursts(2.0)
    ref = AvatarSession(fast)
    _push_chunks(ref, x, SR)
    all_frames = _pull_all(ref)
    s = AvatarSession(fast)
    _push_chunks(s, x, SR)
    n = s.frames_ready()
    f = s.next_frame(latest=True)
    assert f.index == n - 1 and f.dropped == n - 1
    assert s.next_frame(latest=True) is None
    # the motion was stepped through the dropped frames: same x and image as pulling one by one
    assert np.array_equal(f.x, all_frames[-1].x)
    assert np.array_equal(f.image, all_frames[-1].image)
    assert s.stats()["dropped"] == n - 1 and s.stats()["frames"] == 1


def test_interrupt_brings_the_mouth_to_rest(fast):
    s = AvatarSession(fast)
    _push_chunks(s, _vowel(SR * 2), SR)                      # 2 s of vowel
    frames = [s.next_frame() for _ in range(20)]
    assert _mouth(frames[-1]) > 1.0
    pending = s.frames_ready()
    assert pending > 0
    dropped_s = s.interrupt()
    assert s.frames_ready() == 0                             # pending audio dropped
    k = frames[-1].index + 1
    assert dropped_s == pytest.approx(2.0 - k / 25)          # everything after frame k's start
    assert s.clock == math.floor(k * SR / 25 + 0.5)          # clock back at the next frame's start
    after = [s.next_frame(fill_silence=True) for _ in range(4)]
    assert [f.index for f in after] == [k, k + 1, k + 2, k + 3]
    assert _mouth(after[0]) < _mouth(frames[-1])
    assert _mouth(after[2]) == 0.0 and _mouth(after[3]) == 0.0
    # speech after the interruption drives the mouth again
    _push_chunks(s, _vowel(SR), SR)
    assert max(_mouth(f) for f in _pull_all(s)) > 1.0


def test_set_identity_changes_the_image(engine, demo_G, tmp_path):
    a = AvatarSession(engine, identity=0)
    b = AvatarSession(engine, identity=0)
    fa = a.next_frame(fill_silence=True)
    b.set_identity(7)
    fb = b.next_frame(fill_silence=True)
    assert np.abs(fa.image.astype(int) - fb.image.astype(int)).mean() > 5
    c = AvatarSession(engine, identity=7)
    assert np.array_equal(c.next_frame(fill_silence=True).image, fb.image)
    # the same face from latents: ws tensor, w array, .npy file
    ws = w_from_seed(demo_G, 7, truncation_psi=0.7)
    for ident in (ws, ws[0].numpy(), ws[0, 0].numpy()):
        d = AvatarSession(engine)
        d.set_identity(ident)
        assert np.array_equal(d.next_frame(fill_silence=True).image, fb.image)
    np.save(tmp_path / "face.npy", ws.numpy())
    d = AvatarSession(engine, identity=str(tmp_path / "face.npy"))
    assert np.array_equal(d.next_frame(fill_silence=True).image, fb.image)
    # truncation_psi for a seed
    e = AvatarSession(engine)
    e.set_identity(7, truncation_psi=0.0)                    # psi 0 = the mean face
    assert torch.allclose(e.identity_ws, demo_G.mapping.w_avg.expand(demo_G.num_ws, -1), atol=1e-6)


@pytest.mark.parametrize("bad, err", [
    (np.full(128, np.nan, np.float32), ValueError), (np.zeros((3, 5), np.float32), ValueError),
    (True, ValueError), ("no/such/face.npy", FileNotFoundError), (-1, ValueError), ({"a": 1}, ValueError),
    (np.zeros(128, np.int32), ValueError)])
def test_bad_identity_leaves_the_session_usable(fast, bad, err):
    s = AvatarSession(fast, identity=3)
    before = s.identity_ws
    with pytest.raises(err):
        s.set_identity(bad)
    assert torch.equal(s.identity_ws, before)
    assert s.next_frame(fill_silence=True).index == 0


@pytest.mark.parametrize("bad, rate, channels, msg", [
    (np.array([0.0, np.nan], np.float32), 16000, 1, "NaN"),
    (np.zeros(160, np.float32), 7000, 1, "sample rate"),
    (np.zeros(160, np.float32), 96000, 1, "sample rate"),
    (np.zeros(160, np.int32), 16000, 1, "sample format"),
    (np.zeros(160, np.uint8), 16000, 1, "sample format"),
    (np.zeros((160, 3), np.int16), 16000, 2, "shape"),
    (np.zeros((2, 2, 2), np.int16), 16000, 1, "shape"),
    (np.zeros(160, np.int16), 16000, 0, "channel"),
    (b"\x00\x01\x02", 16000, 1, "bytes"),
])
def test_bad_audio_raises_and_leaves_the_session_unchanged(fast, bad, rate, channels, msg):
    x = _i16(_bursts(1.0))
    ref = AvatarSession(fast)
    ref.push_audio(x[:8000], SR)
    ref.push_audio(x[8000:], SR)
    s = AvatarSession(fast)
    s.push_audio(x[:8000], SR)
    clock = s.clock
    with pytest.raises(ValueError, match=msg):
        s.push_audio(bad, rate, channels)
    assert s.clock == clock
    s.push_audio(x[8000:], SR)
    got, want = _pull_all(s), _pull_all(ref)
    assert len(got) == len(want)
    assert all(np.array_equal(g.x, w.x) and g.rms == w.rms for g, w in zip(got, want))


def test_empty_audio_is_a_no_op(fast):
    s = AvatarSession(fast)
    s.push_audio(np.zeros(0, np.int16), SR)
    s.push_audio(b"", SR)
    s.push_audio(np.zeros(0, np.float32), 48000)
    assert s.clock == 0 and s.frames_ready() == 0 and s.next_frame() is None


@pytest.mark.parametrize("rate, channels", [(8000, 1), (44100, 1), (48000, 2), (22050, 2)])
def test_other_rates_and_stereo_give_the_same_motion(fast, rate, channels):
    x16 = _bursts(2.0)
    ref = AvatarSession(fast)
    _push_chunks(ref, x16, SR)
    want = _pull_all(ref, fill_silence=False)
    import soxr
    xr = soxr.resample(x16, SR, rate).astype(np.float32)
    pcm = np.repeat(xr, channels) if channels > 1 else xr                # interleaved, same signal per channel
    s = AvatarSession(fast, audio_out=True)
    _push_chunks(s, _i16(pcm), rate, channels=channels)
    got = _pull_all(s, fill_silence=False)
    n_total = math.ceil(2.0 * 25)
    while len(got) < n_total:
        got.append(s.next_frame(fill_silence=True))
    assert [f.index for f in got] == list(range(n_total))
    m = min(len(want), len(got))
    assert m >= 40
    rms_w = np.array([f.rms for f in want[:m]])
    rms_g = np.array([f.rms for f in got[:m]])
    assert np.corrcoef(rms_w, rms_g)[0, 1] > 0.99
    assert np.abs(np.array([_mouth(f) for f in want[:m]]) - np.array([_mouth(f) for f in got[:m]])).max() < 0.5
    # audio out: 48 kHz mono, exactly one frame interval each, the signal on the video timeline
    audio = np.concatenate([f.audio for f in got])
    assert all(f.audio_rate == 48000 and f.audio.size == 1920 for f in got)
    ref48 = soxr.resample(x16, SR, 48000)
    n = min(audio.size, ref48.size)
    assert np.corrcoef(audio[:n].astype(np.float64), ref48[:n])[0, 1] > 0.99


def test_audio_out_is_the_input_bit_exact_at_48k(fast):
    rng = np.random.default_rng(1)
    x = _i16(0.3 * rng.standard_normal(48000 * 2 + 777))        # odd length, noise: any shift shows
    s = AvatarSession(fast, audio_out=True)
    i = 0
    frames = []
    for n in rng.integers(1, 3000, size=1000):
        if i >= x.size:
            break
        s.push_audio(x[i:i + n], 48000)
        i += n
        if rng.random() < 0.3:
            f = s.next_frame(latest=bool(rng.random() < 0.5))
            if f is not None:
                frames.append(f)
    n_total = math.ceil(x.size / 48000 * 25)
    while not frames or frames[-1].index < n_total - 1:
        frames.append(s.next_frame(fill_silence=True))
    assert [f.index for f in frames] == sorted({f.index for f in frames})
    assert sum(f.dropped for f in frames) + len(frames) == n_total
    for f in frames:
        assert f.audio.size == 1920 * (f.dropped + 1) and f.audio_rate == 48000
    audio = np.concatenate([f.audio for f in frames])
    assert audio.size == n_total * 1920
    assert np.array_equal(audio[:x.size], x)
    assert not audio[x.size:].any()


def test_audio_out_with_silence_fill_and_rate_switch(fast):
    s = AvatarSession(fast, audio_out=True, audio_out_rate=48000)
    frames = [s.next_frame(fill_silence=True) for _ in range(3)]        # 120 ms of silence first
    tone = _i16(_vowel(4800, 48000))
    s.push_audio(tone, 48000)                                          # then 100 ms at 48 kHz
    s.push_audio(_i16(_vowel(1600)), SR)                               # rate switch: 100 ms at 16 kHz
    for _ in range(12):
        frames.append(s.next_frame(fill_silence=True))
    audio = np.concatenate([f.audio for f in frames])
    assert audio.size == 15 * 1920
    assert not audio[:3 * 1920].any()
    # the silence fill for frame 2 ran 40 ms past its end (lookahead): the 48 kHz audio starts there
    start = (3 * 640 + 640) * 3
    assert not audio[:start].any()
    assert np.array_equal(audio[start:start + tone.size], tone)
    assert np.abs(audio[start + tone.size + 500:start + tone.size + 4000]).max() > 1000   # the 16 kHz part
    assert [f.index for f in frames] == list(range(15))


# -- drivers -------------------------------------------------------------------------------------

def test_trajectory_driver_plays_its_recording(fast, tmp_path):
    rec = np.zeros((10, 8), np.float32)
    rec[:, ROLES.index("head_yaw")] = np.linspace(-1, 1, 10)
    np.save(tmp_path / "x.npy", rec)
    s = AvatarSession(fast, driver=f"trajectory:{tmp_path / 'x.npy'}")
    xs = np.stack([s.next_frame(fill_silence=True).x for _ in range(12)])
    assert np.allclose(xs[:10], rec) and np.allclose(xs[10:], rec[-1])


def test_lstm_driver_and_lookahead_rules(fast, tmp_path):
    from engine.motion.lstm import AudioLSTMConfig, AudioMotionModel
    from engine.motion.lstm_file import save_motion_model

    torch.manual_seed(0)
    cfg = AudioLSTMConfig(w_dim=fast.w_dim, k=8, hidden=32, audio_dim=16, conv_channels=8, lookahead_ms=40.0)
    save_motion_model(AudioMotionModel(cfg), tmp_path / "m.safetensors")
    s = AvatarSession(fast, driver=f"lstm:{tmp_path / 'm.safetensors'}")
    _push_chunks(s, _bursts(1.0), SR)
    frames = _pull_all(s)
    assert len(frames) == _ready_frames(SR) and np.isfinite(np.stack([f.x for f in frames])).all()

    cfg20 = AudioLSTMConfig(w_dim=fast.w_dim, k=8, hidden=32, audio_dim=16, conv_channels=8, lookahead_ms=20.0)
    save_motion_model(AudioMotionModel(cfg20), tmp_path / "m20.safetensors")
    with pytest.raises(ValueError, match="lookahead"):
        s.set_driver(f"lstm:{tmp_path / 'm20.safetensors'}")      # audio is streaming at 40 ms
    assert s.next_frame(fill_silence=True) is not None             # still usable
    fresh = AvatarSession(fast)
    fresh.set_driver(f"lstm:{tmp_path / 'm20.safetensors'}")       # before any audio: fine
    assert fresh.lookahead_ms == 20.0 and fresh.latency_ms == pytest.approx(20.0)
    with pytest.raises(ValueError, match="lookahead"):
        AvatarSession(fast, driver=f"lstm:{tmp_path / 'm20.safetensors'}", lookahead_ms=40.0)


@pytest.mark.parametrize("spec, msg", [("wobble", "unknown driver"), ("lstm:", "unknown driver"),
                                       ("lstm:/no/such.safetensors", "no such file"), (3, "driver must be")])
def test_bad_driver(fast, spec, msg):
    s = AvatarSession(fast)
    with pytest.raises((ValueError, FileNotFoundError), match=msg):
        s.set_driver(spec)
    assert s.next_frame(fill_silence=True).index == 0


def test_idle_without_priors_answers_the_audio_with_the_mouth_alone(fast):
    def run(spec, audio):
        s = AvatarSession(fast, driver=spec)
        _push_chunks(s, audio, SR)
        return s.driver.names, np.stack([f.x for f in _pull_all(s)])

    names, talk = run("idle:no-priors", _bursts(3.0))
    _, quiet = run("idle:no-priors", np.zeros(3 * SR, np.float32))
    mouth = [names.index(r) for r in ("mouth_open", "jaw") if r in names]
    rest = [i for i in range(len(names)) if i not in mouth]
    assert mouth and len(rest) >= 3
    assert np.abs(talk[:, mouth] - quiet[:, mouth]).max() > 0.5
    assert np.array_equal(talk[:, rest], quiet[:, rest])          # head, gaze, blinks: as in silence
    _, primed = run("idle", _bursts(3.0))                          # the speech priors move them
    _, primed_quiet = run("idle", np.zeros(3 * SR, np.float32))
    assert not np.array_equal(primed[:, rest], primed_quiet[:, rest])


def test_driver_instance_must_match_fps_and_directions(fast):
    from engine.motion.idle import IdleDriver

    s = AvatarSession(fast, fps=30)
    with pytest.raises(ValueError, match="fps"):
        s.set_driver(IdleDriver(fast.directions, fps=25))
    with pytest.raises(ValueError, match="lacks"):
        s.set_driver(IdleDriver(["smile"], fps=30))
    s.set_driver(IdleDriver(["head_yaw", "mouth_open"], fps=30))
    assert s.next_frame(fill_silence=True).x.shape == (2,)


# -- misc ----------------------------------------------------------------------------------------

def test_tensor_output(engine):
    s = AvatarSession(engine, output="tensor")
    f = s.next_frame(fill_silence=True)
    assert isinstance(f.image, torch.Tensor) and f.image.shape == (3, 128, 128) and f.image.dtype == torch.float32
    assert torch.isfinite(f.image).all()
    assert np.array_equal(AvatarSession(engine).next_frame(fill_silence=True).image, engine.to_uint8(f.image[None])[0])


def test_pending_frames_are_bounded(fast):
    s = AvatarSession(fast, max_pending_s=1.0, audio_out=True)
    s.push_audio(np.zeros(SR * 3, np.int16), SR)             # 3 s, nobody pulling
    assert s.frames_ready() == 25
    f = s.next_frame()
    assert f.dropped == _ready_frames(SR * 3) - 25 and f.audio.size == 1920


def test_push_and_pull_from_two_threads(fast):
    s = AvatarSession(fast, audio_out=True, audio_out_rate=SR)
    x = _i16(_bursts(2.0))
    done = threading.Event()

    def producer():
        _push_chunks(s, x, SR)
        done.set()

    frames = []
    t = threading.Thread(target=producer)
    t.start()
    while not (done.is_set() and s.frames_ready() == 0):
        f = s.next_frame()
        if f is not None:
            frames.append(f)
    t.join(timeout=30)
    assert [f.index for f in frames] == list(range(_ready_frames(x.size)))
    assert np.array_equal(np.concatenate([f.audio for f in frames]), x[:len(frames) * 640])


def test_closed_session_refuses_calls(fast):
    s = AvatarSession(fast)
    s.close()
    s.close()
    with pytest.raises(RuntimeError, match="closed"):
        s.next_frame(fill_silence=True)
    with pytest.raises(RuntimeError, match="closed"):
        s.push_audio(np.zeros(160, np.int16), SR)


@pytest.mark.parametrize("kw, msg", [(dict(fps=0), "fps"), (dict(output="png"), "output"),
                                     (dict(audio_out_rate=100), "audio_out_rate"),
                                     (dict(lookahead_ms=-1), "lookahead"), (dict(max_pending_s=0), "max_pending")])
def test_bad_session_arguments(fast, kw, msg):
    with pytest.raises(ValueError, match=msg):
        AvatarSession(fast, **kw)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_call_sequences_keep_the_invariants(fast, seed):
    """Random pushes (rates, layouts, formats, chunk sizes), silences, pulls, interrupts and identity
    changes: frame indices advance by 1 + dropped, Frame.audio always spans exactly from the end of
    the previous Frame's audio to the end of its own interval, fill_silence always yields a frame."""
    rng = np.random.default_rng(seed)
    fps = [25.0, 30.0, 24.0][seed]
    s = AvatarSession(fast, fps=fps, audio_out=True)
    O = lambda k: math.floor(k * 48000 / fps + 0.5)                                   # noqa: E731
    last = -1
    for _ in range(300):
        op = rng.random()
        if op < 0.45:
            rate = int(rng.choice([8000, 16000, 22050, 44100, 48000]))
            ch = int(rng.choice([1, 2]))
            n = int(rng.integers(0, rate // 10)) * ch + int(rng.integers(0, 2))          # maybe a partial frame
            x = (0.2 * rng.standard_normal(n)).astype(np.float32)
            s.push_audio(_i16(x) if rng.random() < 0.5 else x, rate, ch)
        elif op < 0.5:
            s.push_silence(float(rng.uniform(0, 0.1)))
        elif op < 0.55:
            s.interrupt()
            assert s.frames_ready() == 0 and s.clock == math.floor((last + 1) * SR / fps + 0.5)
        elif op < 0.58:
            s.set_identity(int(rng.integers(0, 100)))
        else:
            fill = bool(rng.random() < 0.5)
            f = s.next_frame(fill_silence=fill, latest=bool(rng.random() < 0.3))
            if fill:
                assert f is not None
            if f is not None:
                assert f.index == last + 1 + f.dropped
                assert f.audio.size == O(f.index + 1) - O(last + 1)
                assert f.pts == math.floor(f.index * SR / fps + 0.5)
                last = f.index


_BAD_CHUNKS = [
    ("huge floats", lambda: (np.full(960, 3.4e38, np.float32), 48000, 1)),
    ("NaN", lambda: (np.full(960, np.nan, np.float32), 48000, 1)),
    ("float64 inf", lambda: (np.array([0.0, np.inf] * 480), 48000, 1)),
    ("int32", lambda: (np.zeros(960, np.int32), 48000, 1)),
    ("bfloat16 tensor", lambda: (torch.zeros(960, dtype=torch.bfloat16), 48000, 1)),
    ("3-D", lambda: (np.zeros((2, 480, 1), np.int16), 48000, 1)),
    ("odd bytes", lambda: (b"\x00" * 961, 48000, 1)),
    ("rate True", lambda: (np.zeros(960, np.int16), True, 1)),
    ("channels True", lambda: (np.zeros(960, np.int16), 48000, True)),
    ("rate 7000", lambda: (np.zeros(700, np.int16), 7000, 1)),
    ("wrong width", lambda: (np.zeros((480, 3), np.int16), 48000, 2)),
]


@pytest.mark.parametrize("name,bad", _BAD_CHUNKS, ids=[n for n, _ in _BAD_CHUNKS])
def test_a_rejected_push_leaves_the_session_exactly_as_it_was(fast, name, bad):
    """Valid audio, a rejected chunk, valid audio again: the frames (motion and audio out) equal
    those of a session that never saw the bad chunk (before: huge floats were accepted and the
    next valid chunk raised "NaN or infinity")."""
    t = np.arange(48000 * 2) / 48000
    speech = (np.sin(2 * np.pi * 220 * t) * (t % 0.5 < 0.25) * 12000).astype(np.int16)
    a = AvatarSession(fast, audio_out=True)
    b = AvatarSession(fast, audio_out=True)
    a.push_audio(speech[:48000], 48000)
    b.push_audio(speech[:48000], 48000)
    pcm, rate, channels = bad()
    with pytest.raises(ValueError):
        a.push_audio(pcm, rate, channels)
    a.push_audio(speech[48000:], 48000)
    b.push_audio(speech[48000:], 48000)
    fa, fb = _pull_all(a), _pull_all(b)
    assert len(fa) == len(fb) > 40
    for x, y in zip(fa, fb):
        assert x.index == y.index and np.array_equal(x.x, y.x) and np.array_equal(x.audio, y.audio)
        assert np.array_equal(x.image, y.image)
    assert a.clock == b.clock and a.pushed_samples == b.pushed_samples


def test_a_frame_stepped_default_model_at_another_fps_falls_back_once(demo_G, engine, tmp_path):
    """A frame-stepped model (``step_hz`` 0) runs at its training fps only: as an engine's default
    driver, a session at another rate gets the idle driver and the engine says so once."""
    from engine.motion.lstm import AudioLSTMConfig, AudioMotionModel
    from engine.motion.lstm_file import save_motion_model

    torch.manual_seed(0)
    cfg = AudioLSTMConfig(k=1, names=["mouth_open"], hidden=16, audio_dim=8, conv_channels=8, fps=25.0)
    path = save_motion_model(AudioMotionModel(cfg), tmp_path / "stepped.safetensors")
    logs = []
    e = AvatarEngine(demo_G, directions=engine.directions, log=logs.append, resolution=8,
                     synthesize=lambda ws: torch.zeros(ws.shape[0], 3, 8, 8))
    e.default_driver, e._default_model_fps = f"lstm+idle:{path}", None
    assert e.default_driver_for(25) == e.default_driver and not logs
    assert e.default_driver_for(30) == "idle" and e.default_driver_for(50) == "idle"
    assert len(logs) == 1 and "25 fps" in logs[0] and "30 fps" in logs[0], logs
