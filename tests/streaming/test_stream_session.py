"""StreamSession's worker under barge-in and overload, with live audio pushed at the wall clock's
pace from a feeder thread (no WebRTC: the frames are read where the worker publishes them)."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from rtc_util import tone

FPS = 25.0


def _stream(engine, **kw):
    from engine.session import AvatarSession
    from streaming.sessions import StreamSession

    stream = StreamSession(AvatarSession(engine, fps=FPS, identity=0, driver="idle"), realtime=True, **kw)
    published = []                 # (frame, stream.silence_s, frames ready) as each frame is published
    write = stream.sink.write

    def record(frame):
        published.append((frame, stream.silence_s, stream.session.frames_ready()))
        return write(frame)
    stream.sink.write = record
    return stream, published


def _feed(stream, pcm: np.ndarray, stop: threading.Event) -> threading.Thread:
    """Push ``pcm`` (48 kHz) live in 20 ms packets at the wall clock's pace until ``stop``."""
    def run():
        start = time.monotonic()
        for n in range(pcm.size // 960):
            if stop.is_set():
                return
            time.sleep(max(0.0, start + n * 0.02 - time.monotonic()))
            stream.push_audio(pcm[n * 960:(n + 1) * 960], 48000, arrival=time.monotonic())
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def _wait(cond, timeout=20.0):
    end = time.monotonic() + timeout
    while not cond() and time.monotonic() < end:
        time.sleep(0.005)
    assert cond()


def test_interrupt_makes_the_next_frame_at_once_with_the_mouth_at_rest(engine):
    stream, published = _stream(engine)
    mouth = stream.session.driver.names.index("mouth_open")
    stop = threading.Event()
    try:
        stream.ensure_started()
        feeder = _feed(stream, tone(3.0, level=0.5, rate=48000), stop)
        _wait(lambda: len(published) >= 15)                  # 0.6 s of a loud tone: mouth open
        assert published[-1][0].x[mouth] > 0.5
        stop.set()
        feeder.join()                                         # no audio from here on
        before = len(published)
        dropped = stream.interrupt().result(timeout=10)
        assert dropped > 0                                    # the lookahead's audio, at least
        _wait(lambda: len(published) > before)
        frame, silence_s, _ = published[before]
        assert frame.index == published[before - 1][0].index + 1
        assert frame.x[mouth] == 0.0                          # the mouth at rest at once
        # made by the interrupt itself: the worker's silence fill (grace_s behind the clock) had
        # not run yet when it was published
        assert silence_s == published[before - 1][1]
    finally:
        stop.set()
        stream.stop()


def test_an_overloaded_stream_drops_frames_instead_of_queueing_them():
    """Synthesis padded to two frame intervals: every frame published is the newest one ready
    (older ready frames are stepped and dropped), so no ready frame waits behind it."""
    from engine.session import AvatarEngine

    holder = {}

    def slow(ws):
        t = time.perf_counter()
        img = holder["G"].synthesis(ws, noise_mode="const")
        time.sleep(max(0.0, 2.0 / FPS - (time.perf_counter() - t)))
        return img
    engine = AvatarEngine("random", synthesize=slow)
    holder["G"] = engine.G
    stream, published = _stream(engine)
    stop = threading.Event()
    try:
        stream.ensure_started()
        feeder = _feed(stream, tone(2.5, level=0.3, rate=48000), stop)
        feeder.join()
        _wait(lambda: len(published) >= 20)
    finally:
        stop.set()
        stream.stop()
    later = published[5:]                           # past the start-up
    dropped = sum(f.dropped for f, _, _ in later)
    assert dropped >= len(later) // 2, (dropped, len(later))
    assert max(ready for _, _, ready in later) == 0, [ready for _, _, ready in later]
    assert np.all(np.diff([f.index for f, _, _ in later]) >= 1)


@pytest.mark.parametrize("fps, frames", [(25.0, 1), (30.0, 1), (50.0, 2), (60.0, 2), (10.0, 1), (200.0, 8)])
def test_flush_takes_40_ms_at_any_frame_rate(fps, frames):
    from engine.motion import IdleDriver, flush_frames_for

    assert flush_frames_for(fps) == frames
    assert flush_frames_for(fps, 5) == 5 and flush_frames_for(fps, 0) == 1
    assert IdleDriver(["mouth_open"], fps=fps).flush_frames == frames
