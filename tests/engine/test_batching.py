"""engine.batching: concurrent sessions share one synthesis call per round; a late or failing
session never blocks the others; AvatarEngine(batching=True) gives the same frames."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from engine.batching import BatchingSynthesizer
from engine.synthesis.networks import Generator, GeneratorConfig


@pytest.fixture(scope="module")
def G():
    torch.manual_seed(3)
    return Generator(GeneratorConfig(z_dim=32, w_dim=32, mapping_layers=2, img_resolution=16,
                                     channels={4: 32, 8: 16, 16: 8}, conv_clamp=256.0)).eval().requires_grad_(False)


def _ws(G, n, seed):
    with torch.inference_mode():
        return G.mapping(torch.randn(n, G.z_dim, generator=torch.Generator().manual_seed(seed)), truncation_psi=0.7)


def _synth(G):
    def fn(ws):
        with torch.inference_mode():
            return G.synthesis(ws, noise_mode="const")
    return fn


def _run_threads(n, target):
    barrier = threading.Barrier(n)
    out, errors = [None] * n, []

    def run(i):
        try:
            barrier.wait(timeout=10)
            out[i] = target(i)
        except BaseException as exc:  # collected and re-raised by the test
            errors.append(exc)
    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads), "a caller hung"
    if errors:
        raise errors[0]
    return out


def test_concurrent_sessions_share_batches_and_get_their_own_images(G):
    b = BatchingSynthesizer(_synth(G), max_batch=8, window_ms=200)     # a long window: all 6 gather
    for _ in range(6):
        b.register()
    wss = [_ws(G, 1, seed=i) for i in range(6)]
    out = _run_threads(6, lambda i: b(wss[i], timeout=30))
    for i in range(6):
        with torch.inference_mode():
            ref = G.synthesis(wss[i], noise_mode="const")
        assert out[i].shape == (1, 3, 16, 16)
        torch.testing.assert_close(out[i], ref, atol=1e-5, rtol=0)
    # all six arrived within the window: one backend call served them (the round closes as soon
    # as every registered session is in, not at the end of the window)
    assert b.batches == 1 and list(b.batch_sizes) == [6] and b.stats()["mean_batch"] == 6
    b.close()


def test_a_session_that_misses_the_round_does_not_hold_it(G):
    b = BatchingSynthesizer(_synth(G), max_batch=8, window_ms=20)
    for _ in range(3):                     # three sessions registered, only two submit
        b.register()
    out = _run_threads(2, lambda i: b(_ws(G, 1, seed=10 + i), timeout=30))
    assert all(o.shape == (1, 3, 16, 16) for o in out)
    assert sum(b.batch_sizes) == 2 and b.batches <= 2
    b.unregister()
    b.close()


def test_max_batch_splits_rounds_and_large_requests(G):
    sizes = []

    def fn(ws):
        sizes.append(int(ws.shape[0]))
        return _synth(G)(ws)
    b = BatchingSynthesizer(fn, max_batch=4, window_ms=100)
    ws = _ws(G, 10, seed=20)
    out = b(ws, timeout=30)                                   # one caller, 10 frames > max_batch
    with torch.inference_mode():
        ref = G.synthesis(ws, noise_mode="const")
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)
    assert sizes == [4, 4, 2]
    with pytest.raises(ValueError, match="B >= 1"):
        b(torch.zeros(0, G.num_ws, G.w_dim))
    b.close()
    with pytest.raises(RuntimeError, match="closed"):
        b(ws[:1])


def test_backend_errors_reach_every_caller_and_the_batcher_lives_on(G):
    calls = []

    def fn(ws):
        calls.append(int(ws.shape[0]))
        if len(calls) == 1:
            raise RuntimeError("CUDA out of memory (simulated)")
        return _synth(G)(ws)
    b = BatchingSynthesizer(fn, max_batch=8, window_ms=200)
    for _ in range(2):
        b.register()

    def call(i):
        try:
            return b(_ws(G, 1, seed=i), timeout=30)
        except RuntimeError as exc:
            return exc
    first = _run_threads(2, call)
    assert all(isinstance(r, RuntimeError) and "simulated" in str(r) for r in first)
    second = _run_threads(2, call)
    assert all(torch.is_tensor(r) and r.shape == (1, 3, 16, 16) for r in second)
    b.close()


def test_engine_batching_gives_the_same_frames(G):
    from engine.latent.direction_set import Direction, DirectionSet
    from engine.session import AvatarEngine, AvatarSession

    rng = np.random.default_rng(0)
    ds = DirectionSet()
    for name in ("mouth_open", "jaw", "blink", "head_yaw"):
        ds.add(Direction(name, rng.standard_normal(G.w_dim), stdev=1.0))
    t = np.arange(16000) / 16000
    audio = (0.3 * np.sin(2 * np.pi * 220 * t) * (np.sin(2 * np.pi * 2 * t) > 0)).astype(np.float32)

    def frames(engine, i):
        s = AvatarSession(engine, fps=25, identity=i, seed=i)
        s.push_audio(audio, 16000)
        got = []
        while (f := s.next_frame()) is not None:
            got.append(f.image)
        s.close()
        return np.stack(got)

    plain = AvatarEngine(G, directions=ds)
    ref = [frames(plain, i) for i in range(4)]
    batched = AvatarEngine(G, directions=ds, batching=True, max_batch=4, batch_window_ms=50)
    assert batched.backend_info["backend"] == "torch"
    out = _run_threads(4, lambda i: frames(batched, i))
    for i in range(4):
        assert out[i].shape == ref[i].shape
        assert np.abs(out[i].astype(int) - ref[i].astype(int)).max() <= 1     # uint8 rounding of float noise
    st = batched.batcher.stats()
    assert st["frames"] == sum(len(r) for r in ref) and st["mean_batch"] > 1.0 and st["sessions"] == 0
    batched.close()
