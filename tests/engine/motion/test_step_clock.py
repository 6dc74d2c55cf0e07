"""Models with their own clock (``step_hz``): the StepClock hands the model exactly the windows a
step-rate FeatureStream gives, at any video frame rate; the driver's x per frame is the model's
step outputs interpolated at the frame's centre; training data at the steps; sessions at 30 fps
keep the model (no idle fallback)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.audio.features import FeatureStream
from engine.audio.input import SAMPLE_RATE
from engine.motion.dataset import MotionDataset, at_step_centres, frames_in, frame_windows
from engine.motion.lstm import AudioLSTMConfig, AudioMotionModel
from engine.motion.lstm_driver import AudioLSTMDriver
from engine.motion.step_clock import StepClock

from test_motion_train import _cli, make_pair, tone


def _feats(x, fps, lookahead=40.0, window_ms=320.0):
    fs = FeatureStream(fps=fps, lookahead_ms=lookahead, window_ms=window_ms)
    out = []
    for i in range(0, x.size, 320):
        out += fs.push(x[i:i + 320])
    return out


@pytest.mark.parametrize("fps", [20.0, 25.0, 30.0, 50.0, 60.0])
@pytest.mark.parametrize("lookahead", [0.0, 20.0, 40.0])
def test_the_clock_gives_the_step_rate_windows_at_any_fps(fps, lookahead):
    x = tone(2.3, seed=2)
    want = frame_windows(x, 50.0, 32, lookahead)                  # what training sees
    clock = StepClock(50.0, fps, lookahead, 32, 80)
    got = []
    for f in _feats(x, fps, lookahead):
        wins = clock.due(f.t_end, f.mel)
        got += list(wins)
        clock.outputs(np.zeros((len(wins), 1), np.float32))
        # every step whose audio ended by the frame's end has run, none later
        end = f.t_end - clock.lookahead
        assert clock.step_end(clock.next_step - 1) <= end < clock.step_end(clock.next_step)
    assert len(got) >= 100
    np.testing.assert_array_equal(np.stack(got), want[:len(got)])


def _model(step_hz=50.0, lookahead=20.0, seed=0):
    torch.manual_seed(seed)
    cfg = AudioLSTMConfig(k=2, hidden=16, audio_dim=8, conv_channels=8, fps=step_hz, step_hz=step_hz,
                          lookahead_ms=lookahead, names=["mouth_open", "blink"])
    return AudioMotionModel(cfg).eval()


@pytest.mark.parametrize("fps", [25.0, 30.0, 60.0])
def test_the_driver_interpolates_the_step_outputs_at_frame_centres(fps):
    model = _model()
    x = tone(2.0, hz=300.0, seed=4) * np.repeat(np.random.default_rng(0).uniform(0, 1, 40), 800)[:32000]
    with torch.no_grad():
        steps = model(torch.from_numpy(frame_windows(x, 50.0, 32, 20.0))[None])[0].numpy()
    drv = AudioLSTMDriver(model, fps=fps)
    assert drv.fps == fps and drv.lookahead_ms == 20.0
    feats = _feats(x, fps, 20.0)
    got = np.stack([drv.step(f) for f in feats])
    bounds = [round(i * SAMPLE_RATE / 50.0) for i in range(len(steps) + 1)]
    step_t = 0.5 * (np.array(bounds[:-1]) + np.array(bounds[1:]))
    frame_t = np.array([f.t_end - 320 - 0.5 * SAMPLE_RATE / fps for f in feats])
    ran = np.array([drv.clock.step_end(s) for s in range(len(steps))])
    for j, (f, t) in enumerate(zip(feats, frame_t)):
        n = int(np.sum(ran <= f.t_end - 320))                     # steps run by this frame
        if n == 0:
            assert np.array_equal(got[j], np.zeros(2, np.float32))
            continue
        want = np.array([np.interp(t, step_t[:n], steps[:n, i]) for i in range(2)])
        np.testing.assert_allclose(got[j], want, atol=2e-5)
    assert np.ptp(got[:, 0]) > 0.01                               # the audio moves it


def test_a_restarted_feature_stream_restarts_the_clock_and_silence_steps():
    drv = AudioLSTMDriver(_model(), fps=30.0)
    x = tone(1.0, seed=1)
    for f in _feats(x, 30.0, 20.0):
        drv.step(f)
    assert drv.clock.next_step >= 45
    f0 = _feats(x[:2000], 30.0, 20.0)[0]                          # a new stream: t_end back at the start
    drv.step(f0)
    assert drv.clock.next_step <= 2
    before = drv.clock.next_step
    for _ in range(3):
        drv.step(None)                                           # silence: 1/30 s each
    assert drv.clock.next_step - before in (4, 5)
    with pytest.raises(ValueError, match="needs FrameFeatures"):
        drv.step(f0.mel)                                          # a bare window has no time


def test_driver_arguments():
    with pytest.raises(ValueError, match="give the video's frame rate"):
        AudioLSTMDriver(_model())
    with pytest.raises(ValueError, match="in \\(0, 240\\]"):
        AudioLSTMDriver(_model(), fps=0.0)
    frame_model = AudioMotionModel(AudioLSTMConfig(k=1, hidden=8, audio_dim=4, conv_channels=4, fps=25.0))
    assert AudioLSTMDriver(frame_model, names=["a"], fps=25.0).clock is None
    with pytest.raises(ValueError, match="once per frame at 25 fps, not 30 fps"):
        AudioLSTMDriver(frame_model, names=["a"], fps=30.0)
    with pytest.raises(ValueError, match="must equal fps"):
        AudioLSTMConfig(fps=25.0, step_hz=50.0)


def test_targets_at_step_centres_and_the_dataset(tmp_path):
    x = np.array([[0.0], [1.0], [0.0], [2.0]], np.float32)        # 4 frames at 25 fps: centres 20, 60, ... ms
    y = at_step_centres(x, 25.0, 50.0, 8)                         # step centres 10, 30, 50, ... ms
    np.testing.assert_allclose(y[:, 0], [0, 0.25, 0.75, 0.75, 0.25, 0.5, 1.5, 2.0], atol=1e-6)
    assert frames_in(16000, 25.0) == 25 and frames_in(16001, 25.0) == 26 and frames_in(0, 50.0) == 0
    make_pair(tmp_path, "a", 50, k=2)
    frames = MotionDataset(tmp_path)
    steps = MotionDataset(tmp_path, step_hz=50.0)
    assert frames.fps == 25.0 and steps.fps == 50.0 and steps.data_fps == 25.0
    c, s = frames.clips[0], steps.clips[0]
    assert s.frames == 2 * c.frames and s.windows.shape[1:] == (32, 80)
    np.testing.assert_allclose(s.x, at_step_centres(c.x, 25.0, 50.0, s.frames), atol=1e-6)


def test_cli_trains_a_clocked_model_that_any_session_fps_keeps(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    make_pair(data, "a", 30, k=1)
    make_pair(data, "b", 25, k=1, seed=1)
    rc, out, err = _cli(["--data", data, "--out", tmp_path / "m", "--steps", 3, "--step-hz", 50, "--hidden", 16,
                         "--audio-dim", 8, "--crop", "8-16", "--batch-size", 2, "--lookahead-ms", 20,
                         "--quiet"], capsys)
    assert rc == 0, err
    from engine.motion.lstm_file import load_motion_model
    cfg = load_motion_model(tmp_path / "m" / "motion.safetensors").config
    assert cfg.step_hz == 50.0 and cfg.fps == 50.0 and cfg.lookahead_ms == 20.0
