"""TrajectoryDriver: x_t playback (hold / loop, fps resampling), w_t expression transfer
(ws_B + w_A,t - w_A,ref, exact; projection onto directions, lossy), flush, file errors."""
import numpy as np
import pytest
import torch

from engine.latent.direction_set import Direction, DirectionSet
from engine.latent.path import LatentPath
from engine.motion import MotionDriver, TrajectoryDriver

NUM_WS, W_DIM = 4, 16


def direction_set():
    q, _ = np.linalg.qr(np.random.RandomState(0).randn(W_DIM, 3))
    ds = DirectionSet(checkpoint_hash="b" * 64)
    for j, (name, layers) in enumerate([("mouth_open", (2, 3)), ("head_yaw", (0, 1)), ("blink", None)]):
        ds.add(Direction(name=name, vector=q[:, j], stdev=0.5 + j, layers=layers))
    return ds


def play(driver, n, method="step"):
    return np.stack([getattr(driver, method)(None) for _ in range(n)])


def test_x_recording_plays_back_exactly_then_holds():
    x = np.random.RandomState(1).randn(10, 3).astype(np.float32)
    d = TrajectoryDriver(x, names=["a", "b", "c"])
    assert isinstance(d, MotionDriver) and d.kind == "x" and d.names == ["a", "b", "c"]
    out = play(d, 14)
    np.testing.assert_array_equal(out[:10], np.clip(x, -3, 3))
    np.testing.assert_array_equal(out[10:], np.repeat(out[9:10], 4, axis=0))
    assert d.finished and out.dtype == np.float32


def test_x_recording_loops_and_clamps():
    x = np.arange(5, dtype=np.float32)[:, None] - 2.0
    x[0] = 9.0
    d = TrajectoryDriver(x, names=["a"], end="loop", clamp=2.5)
    out = play(d, 12)[:, 0]
    np.testing.assert_array_equal(out, [2.5, -1, 0, 1, 2] * 2 + [2.5, -1])
    assert not d.finished
    d.reset()
    assert d.step()[0] == 2.5


def test_fps_resampling_nearest_and_linear():
    ramp = np.arange(20, dtype=np.float32)[:, None]
    # recording at 50 fps, video at 25: every other frame
    d = TrajectoryDriver(ramp, names=["a"], fps=25, recording_fps=50, resample="nearest", clamp=100)
    np.testing.assert_array_equal(play(d, 10)[:, 0], np.arange(0, 20, 2))
    # recording at 10 fps, video at 25: position n·0.4
    d = TrajectoryDriver(ramp, names=["a"], fps=25, recording_fps=10, resample="linear", clamp=100)
    np.testing.assert_allclose(play(d, 20)[:, 0], np.arange(20) * 0.4, atol=1e-6)
    d = TrajectoryDriver(ramp, names=["a"], fps=25, recording_fps=10, resample="nearest", clamp=100)
    np.testing.assert_array_equal(play(d, 6)[:, 0], [0, 0, 1, 1, 2, 2])   # round(0.4n), half up
    # looping linear playback blends the last frame into the first
    d = TrajectoryDriver(np.array([[0.0], [1.0]], np.float32), names=["a"], fps=2, recording_fps=1,
                         end="loop")
    np.testing.assert_allclose(play(d, 5)[:, 0], [0, 0.5, 1, 0.5, 0])
    assert d.duration_s == 2.0


def make_transfer(reference_frame=0):
    """Identity A's ws_t = ws_A + path offsets of known x_t, plus motion outside the directions."""
    ds = direction_set()
    basis, masks = ds.to_path(NUM_WS)
    path = LatentPath(basis, NUM_WS, layer_masks=masks, clamp_sigma=None)
    rng = np.random.RandomState(2)
    ws_a = rng.randn(NUM_WS, W_DIM).astype(np.float32)
    path.set_anchor(ws=ws_a)
    x = (rng.randn(30, 3) * 0.8).astype(np.float32)
    x[reference_frame] = 0.0
    ws_t = path(x).numpy()
    return ds, x, ws_a, ws_t


def test_w_recording_transfers_the_offset_onto_another_identity():
    ds, x, ws_a, ws_t = make_transfer()
    ws_b = np.random.RandomState(3).randn(NUM_WS, W_DIM).astype(np.float32)
    d = TrajectoryDriver(ws_t, directions=ds)
    assert d.kind == "w" and d.num_ws == NUM_WS and d.w_dim == W_DIM
    d.reset(anchor=torch.from_numpy(ws_b))
    for t in range(30):
        np.testing.assert_allclose(d.step_ws(), ws_b + (ws_t[t] - ws_t[0]), atol=1e-5)
    # the same recording through step(): the projection recovers x exactly (motion in the span)
    d.reset()
    np.testing.assert_allclose(play(d, 30), x, atol=1e-4)
    assert d.projection_loss < 1e-8
    assert d.names == ds.names


def test_w_reference_mean_or_index_and_delta_only():
    _, _, _, ws_t = make_transfer()
    d = TrajectoryDriver(ws_t, kind="w", reference="mean")
    assert d.names == [] and d.step().shape == (0,)
    d.reset()
    deltas = play(d, 30, "step_delta_ws")
    np.testing.assert_allclose(deltas, ws_t - ws_t.mean(axis=0), atol=1e-5)
    np.testing.assert_allclose(deltas.mean(axis=0), 0, atol=1e-5)
    d = TrajectoryDriver(ws_t, kind="w", reference=5)
    np.testing.assert_allclose(play(d, 6, "step_delta_ws")[5], 0, atol=1e-6)
    with pytest.raises(RuntimeError, match="reset\\(anchor"):
        d.step_ws()


def test_w_recording_of_one_w_per_frame_is_broadcast_and_projection_reports_loss():
    ds = direction_set()
    rng = np.random.RandomState(4)
    w_t = rng.randn(12, W_DIM).astype(np.float32)       # arbitrary motion, mostly outside the span
    d = TrajectoryDriver(w_t, directions=ds, num_ws=NUM_WS)
    delta = d.step_delta_ws()
    assert delta.shape == (NUM_WS, W_DIM)
    np.testing.assert_allclose(delta, 0)
    np.testing.assert_allclose(d.step_delta_ws(), np.broadcast_to(w_t[1] - w_t[0], (NUM_WS, W_DIM)), atol=1e-6)
    assert 0.5 < d.projection_loss < 1.0               # 3 of 16 dimensions kept
    # the projection is the least-squares x: for an orthonormal set, (Δ·v_i)/stdev_i
    d.reset()
    x = play(d, 12)
    expect = (w_t - w_t[0]) @ np.stack([v.vector for v in ds]).T / np.array([v.stdev for v in ds])
    np.testing.assert_allclose(x, np.clip(expect, -3, 3), atol=1e-4)
    with pytest.raises(ValueError, match="needs num_ws"):
        TrajectoryDriver(w_t, directions=ds)


def test_flush_fades_to_idle_and_stops():
    x = np.full((100, 2), 2.0, np.float32)
    d = TrajectoryDriver(x, names=["a", "b"], flush_frames=3)
    play(d, 5)
    d.flush()
    out = play(d, 6)[:, 0]
    np.testing.assert_allclose(out, [4 / 3, 2 / 3, 0, 0, 0, 0], atol=1e-6)
    assert d.finished
    d.reset()
    assert d.step()[0] == 2.0
    _, _, ws_a, ws_t = make_transfer()
    d = TrajectoryDriver(ws_t, kind="w", flush_frames=2)
    d.reset(anchor=ws_a)
    play(d, 10, "step_ws")
    d.flush()
    play(d, 2, "step_ws")
    np.testing.assert_array_equal(d.step_ws(), ws_a)


def test_bad_recordings_and_files(tmp_path):
    names = ["a", "b"]
    with pytest.raises(FileNotFoundError, match="no such file"):
        TrajectoryDriver.load(tmp_path / "missing.npy", names=names)
    junk = tmp_path / "junk.npy"
    junk.write_bytes(b"not numpy at all")
    with pytest.raises(ValueError, match="junk.npy: not a readable .npy"):
        TrajectoryDriver.load(junk, names=names)
    np.savez(tmp_path / "arch.npz", x=np.zeros((3, 2)))
    with pytest.raises(ValueError, match="npz"):
        TrajectoryDriver.load(tmp_path / "arch.npz", names=names)
    nan = np.zeros((5, 2), np.float32)
    nan[3, 1] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    with pytest.raises(ValueError, match="nan.npy: .*NaN.*frame 3"):
        TrajectoryDriver.load(tmp_path / "nan.npy", names=names)
    np.save(tmp_path / "wide.npy", np.zeros((5, 3), np.float32))
    with pytest.raises(ValueError, match="cannot tell"):
        TrajectoryDriver.load(tmp_path / "wide.npy", names=names)
    with pytest.raises(ValueError, match=r"must be \[T, 2\]"):
        TrajectoryDriver.load(tmp_path / "wide.npy", names=names, kind="x")
    for bad in (np.zeros(5), np.zeros((0, 2)), np.zeros((2, 2, 2, 2)), np.array([["a", "b"]])):
        with pytest.raises(ValueError):
            TrajectoryDriver(bad, names=names)
    ds = direction_set()
    with pytest.raises(ValueError, match="w_dim 8, expected 16"):
        TrajectoryDriver(np.zeros((5, NUM_WS, 8)), directions=ds)
    with pytest.raises(ValueError, match="has 4 layers, the generator has 6"):
        TrajectoryDriver(np.zeros((5, NUM_WS, W_DIM)), directions=ds, num_ws=6)
    with pytest.raises(ValueError, match="needs the direction names"):
        TrajectoryDriver(np.zeros((5, 2)), kind="x")
    with pytest.raises(ValueError, match="reference"):
        TrajectoryDriver(np.zeros((5, NUM_WS, W_DIM)), reference=9)
    with pytest.raises(ValueError, match="anchor must be"):
        TrajectoryDriver(np.zeros((5, NUM_WS, W_DIM))).reset(anchor=np.zeros((3, W_DIM)))
    with pytest.raises(ValueError, match="end must be"):
        TrajectoryDriver(np.zeros((5, 2)), names=names, end="bounce")
    with pytest.raises(RuntimeError, match="w_t recording"):
        TrajectoryDriver(np.zeros((5, 2)), names=names).step_delta_ws()
    # a good file loads, with the kind inferred from the directions' w_dim
    np.save(tmp_path / "w.npy", np.ones((4, W_DIM), np.float32))
    d = TrajectoryDriver.load(tmp_path / "w.npy", directions=ds, num_ws=NUM_WS)
    assert d.kind == "w" and d.T == 4


def test_a_recorded_idle_session_replays_identically(tmp_path):
    from engine.motion import IdleDriver
    ds = direction_set()
    idle = IdleDriver(ds, seed=7)
    x = np.stack([idle.step(None) for _ in range(200)])
    np.save(tmp_path / "session.npy", x)
    d = TrajectoryDriver.load(tmp_path / "session.npy", names=ds)
    assert d.kind == "x" and d.names == ds.names
    np.testing.assert_array_equal(play(d, 200), x)
