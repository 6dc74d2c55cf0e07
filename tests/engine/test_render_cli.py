"""python -m engine.render: decode the written MP4 with PyAV and check streams, counts, sync, errors."""
from __future__ import annotations

import math
import subprocess
import sys
import wave

import av
import numpy as np
import pytest
import torch

from engine.render import main

RATE = 22050


@pytest.fixture(autouse=True)
def _cache_and_threads(tmp_path_factory, monkeypatch):
    # one basis cache for the module's renders, never the user's ~/.cache; one torch thread, so
    # a 128 px render does not crawl when other processes share the (2-core) machine
    root = tmp_path_factory.getbasetemp() / "render-cache"
    monkeypatch.setenv("STYLECAST_CACHE", str(root))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _vowel(n, rate, f0=120.0, formants=(700.0, 1200.0, 2600.0), amp=0.3):
    t = np.arange(n) / rate
    x = sum(np.sin(2 * np.pi * h * f0 * t) / h * sum(np.exp(-((h * f0 - f) / 150.0) ** 2) for f in formants)
            for h in range(1, int(min(60, rate / 2 / f0))))
    return amp * x / np.abs(x).max()


def _signal(seconds, rate):
    """Silence with a vowel burst at 0.4-0.9 s (and a click at 0.4 s to find the offset)."""
    x = np.zeros(int(round(seconds * rate)))
    i, j = min(int(0.4 * rate), x.size), min(int(0.9 * rate), x.size)
    if j > i:
        x[i:j] = _vowel(j - i, rate)
    return x


def _write_wav(path, x, rate, channels=1):
    pcm = np.clip(np.round(x * 32767), -32768, 32767).astype("<i2")
    if channels > 1:
        pcm = np.repeat(pcm, channels)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())


def _write_flac(path, x, rate):
    """Stereo flac through PyAV (another container and codec than wav)."""
    with av.open(str(path), "w") as c:
        s = c.add_stream("flac", rate=rate)
        s.layout = "stereo"
        pcm = np.clip(np.round(x * 32767), -32768, 32767).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(np.repeat(pcm, 2)[None], format="s16", layout="stereo")
        frame.sample_rate = rate
        c.mux(s.encode(frame))
        c.mux(s.encode(None))


def _probe(path):
    with av.open(str(path)) as c:
        v, a = c.streams.video[0], c.streams.audio[0]
        info = dict(vcodec=v.codec_context.name, pix_fmt=v.codec_context.pix_fmt, width=v.width, height=v.height,
                    acodec=a.codec_context.name, arate=a.rate, a_duration=float(a.duration * a.time_base))
        frames = list(c.decode(video=0))
    with av.open(str(path)) as c:
        audio = np.concatenate([f.to_ndarray().reshape(-1) for f in c.decode(audio=0)])
    info.update(n_frames=len(frames), first_pts=frames[0].pts, first_time=float(frames[0].time),
                images=[f.to_ndarray(format="rgb24") for f in frames], audio=audio,
                times=[float(f.time) for f in frames])
    return info


def _run(argv, capsys):
    rc = main(argv + ["--quiet"])
    out = capsys.readouterr().out
    return rc, out


def test_render_wav_streams_counts_and_sync(tmp_path, capsys):
    dur = 1.5
    x = _signal(dur, RATE)
    _write_wav(tmp_path / "speech.wav", x, RATE)
    out = tmp_path / "talk.mp4"
    rc, text = _run(["--audio", str(tmp_path / "speech.wav"), "--out", str(out)], capsys)
    assert rc == 0
    assert "realtime factor" in text and "frames/s" in text
    assert not (tmp_path / "talk.mp4.part").exists()
    p = _probe(out)
    assert p["vcodec"] == "h264" and p["pix_fmt"] == "yuv420p"
    assert (p["width"], p["height"]) == (128, 128)
    assert abs(p["n_frames"] - math.ceil(dur * 25)) <= 1
    assert p["first_pts"] == 0 and p["first_time"] == 0.0
    assert np.allclose(np.diff(p["times"]), 1 / 25)
    assert p["acodec"] == "aac" and p["arate"] == 48000
    assert abs(p["a_duration"] - dur) <= 1 / 25
    # audio/video sync: the decoded audio starts where the input starts (AAC priming trimmed)
    ref = np.interp(np.arange(int(dur * 48000)) / 48000, np.arange(x.size) / RATE, x)
    a = p["audio"][:ref.size].astype(np.float64)
    lags = np.arange(-480, 481)
    corr = [np.dot(a[max(0, -l):ref.size - max(0, l)], ref[max(0, l):ref.size - max(0, -l)]) for l in lags]
    assert abs(lags[int(np.argmax(corr))]) <= 48                # within 1 ms
    # the face moves with the audio: burst frames differ from the silent first frame more than silent ones do
    img = [im.astype(np.int16) for im in p["images"]]
    burst = np.mean([np.abs(img[k] - img[0]).mean() for k in range(12, 21)])   # 0.48-0.84 s
    quiet = np.mean([np.abs(img[k] - img[0]).mean() for k in range(1, 4)])
    assert burst > quiet


def test_render_stereo_flac_fps_and_resolution(tmp_path, capsys):
    dur = 1.1
    _write_flac(tmp_path / "speech.flac", _signal(dur, 44100), 44100)
    out = tmp_path / "sub" / "talk.mp4"                        # missing folder is created
    rc, _ = _run(["--audio", str(tmp_path / "speech.flac"), "--out", str(out), "--fps", "30",
                  "--resolution", "64", "--identity", "5", "--crf", "30", "--threads", "1"], capsys)
    assert rc == 0
    p = _probe(out)
    assert (p["width"], p["height"]) == (64, 64)
    assert abs(p["n_frames"] - math.ceil(dur * 30)) <= 1
    assert abs(p["a_duration"] - dur) <= 1 / 30


@pytest.mark.parametrize("content, msg", [(b"this is not audio", "not a readable audio file"),
                                          (None, "no such file"), ("empty", "no audio samples")])
def test_bad_audio_is_a_one_line_error(tmp_path, capsys, content, msg):
    bad = tmp_path / "bad.wav"
    if content == "empty":
        _write_wav(bad, np.zeros(0), RATE)
    elif content is not None:
        bad.write_bytes(content)
    out = tmp_path / "x.mp4"
    with pytest.raises(SystemExit) as exc:
        main(["--audio", str(bad), "--out", str(out), "--quiet"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("python -m engine.render: error:") and msg in err
    assert not out.exists() and not (tmp_path / "x.mp4.part").exists()


@pytest.mark.parametrize("extra, msg", [(["--fps", "0"], "--fps"), (["--threads", "0"], "--threads"), (["--crf", "60"], "--crf"),
                                        (["--resolution", "33"], "--resolution"), (["--identity", "face.npy"], "identity"),
                                        (["--driver", "wobble"], "unknown driver"), (["--generator", "no.pkl"], "no such file"),
                                        (["--device", "cuda:9"] if not __import__("torch").cuda.is_available() else
                                         ["--device", "bogus"], "device")])
def test_bad_arguments(tmp_path, capsys, extra, msg):
    _write_wav(tmp_path / "s.wav", _signal(0.2, RATE), RATE)
    with pytest.raises(SystemExit) as exc:
        main(["--audio", str(tmp_path / "s.wav"), "--out", str(tmp_path / "x.mp4"), "--quiet"] + extra)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and msg in err


def test_help_runs_as_a_module():
    r = subprocess.run([sys.executable, "-m", "engine.render", "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "--audio" in r.stdout and "realtime" not in r.stderr


def test_render_with_latent_identity_and_trajectory_driver(tmp_path, capsys):
    from engine.latent.identity import w_from_seed
    from engine.motion.base import ROLES
    from engine.synthesis.checkpoints import load_generator

    G = load_generator("random")     # its placeholder PCA directions have all eight roles (the demo world: three)
    np.save(tmp_path / "face.npy", w_from_seed(G, 9, truncation_psi=0.7).numpy())
    rec = np.zeros((10, len(ROLES)), np.float32)
    rec[:, ROLES.index("head_yaw")] = np.linspace(-2, 2, 10)            # a head turn over 10 frames
    np.save(tmp_path / "turn.npy", rec)
    _write_wav(tmp_path / "s.wav", np.zeros(int(0.4 * RATE)), RATE)
    out = tmp_path / "turn.mp4"
    rc, _ = _run(["--audio", str(tmp_path / "s.wav"), "--out", str(out), "--identity", str(tmp_path / "face.npy"),
                  "--driver", f"trajectory:{tmp_path / 'turn.npy'}", "--generator", "random", "--threads", "1"], capsys)
    assert rc == 0
    p = _probe(out)
    assert p["n_frames"] == 10
    img = [im.astype(np.int16) for im in p["images"]]
    assert np.abs(img[9] - img[0]).mean() > 2 * np.abs(img[1] - img[0]).mean()   # the head turned


def test_fps_other_than_25_keeps_the_demo_driver(tmp_path, capsys):
    """--fps 30: the shipped audio LSTM has its own 50 Hz clock, so it drives the 30 fps render
    (no idle-driver notice; the fallback for a frame-stepped model is tested in test_session)."""
    _write_wav(tmp_path / "s.wav", _signal(0.5, RATE), RATE)
    rc = main(["--audio", str(tmp_path / "s.wav"), "--out", str(tmp_path / "t.mp4"), "--fps", "30", "--quiet",
               "--threads", "1"])
    assert rc == 0
    err = capsys.readouterr().err
    assert "idle driver" not in err, err
