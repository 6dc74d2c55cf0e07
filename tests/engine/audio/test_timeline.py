"""engine.audio.timeline.AudioTimeline on its own: the one 16 kHz clock, ready frames, audio out,
resampled and native-rate input."""
from __future__ import annotations

import numpy as np
import pytest

from engine.audio.timeline import AudioTimeline

FPS = 25.0


def _timeline(**kw):
    overflow = []
    kw.setdefault("audio_out_rate", 48000)
    kw.setdefault("max_pending_frames", 100)
    tl = AudioTimeline(FPS, 40.0, None, on_overflow=overflow.append, **kw)
    return tl, overflow


def test_clock_ready_frames_and_audio_out_bit_for_bit():
    tl, _ = _timeline()
    rng = np.random.default_rng(0)
    pcm = (rng.standard_normal(48000) * 3000).astype(np.int16)        # 1 s at 48 kHz
    for i in range(0, pcm.size, 960):
        tl.push(pcm[i:i + 960], 48000, 1, "int16")
    assert tl.pushed_samples == tl.clock == 16000                     # 1 s on the 16 kHz clock, none held
    assert tl.latency_ms == 40.0 and tl.feature_rate == 48000         # features at 48 kHz: the lookahead only
    n = tl.ready_count()
    assert n == 24                                                    # frame k needs S(k+1) + 40 ms
    got, dropped, audio = tl.take(n)           # n at once: the first n - 1 count as dropped
    assert [k for k, _, _ in got] == list(range(n)) and dropped == n - 1
    assert np.array_equal(audio, pcm[:tl.out_at(n)])                  # 48 kHz in = 48 kHz out
    tl.fill_next()                                                    # flush + zeros: frame n ready
    assert tl.ready_count() >= 1 and tl.pushed_samples == tl.clock    # nothing left in the resampler
    (k, _, _), = tl.take(1)[0]
    assert k == n


def test_a_resampled_input_holds_samples_and_reports_the_lag():
    tl, _ = _timeline()
    pcm = (np.random.default_rng(0).standard_normal(44100) * 3000).astype(np.int16)   # 1 s at 44.1 kHz
    for i in range(0, pcm.size, 882):
        tl.push(pcm[i:i + 882], 44100, 1, "int16")
    assert tl.feature_rate == 16000
    assert tl.pushed_samples == pytest.approx(16000, abs=1)           # 1 s on the 16 kHz clock
    assert 0 < tl.clock < 16000                                       # part of it still in soxr
    assert tl.latency_ms > 70                                         # soxr lag + 40 ms lookahead
    assert 15 <= tl.ready_count() <= 23                               # behind the native 24
    tl.fill_next()
    assert tl.pushed_samples == tl.clock                              # flushed: nothing left in soxr


def test_overflow_steps_and_drops_the_oldest():
    tl, overflow = _timeline(max_pending_frames=3)
    tl.push(np.zeros(16000, np.float32), 16000, 1, "float32")         # 25 frames' audio at 16 kHz
    assert tl.ready_count() == 3 and len(overflow) == tl.overflow_dropped > 0
    got, dropped, audio = tl.take(1)
    assert dropped == len(overflow) and got[0][0] == len(overflow)
    assert audio.size == 1920                                         # that frame's audio only


def test_restart_drops_what_was_pushed_after_the_last_frame():
    tl, _ = _timeline()
    tl.push(np.zeros(4800, np.int16), 48000, 1, "int16")              # 0.1 s
    tl.fill_next()
    tl.take(1)                                                        # frame 0 handed out
    tl.push(np.zeros(9600, np.int16), 48000, 1, "int16")              # 0.2 s more
    before = tl.pushed_samples
    dropped = tl.restart(tl.lookahead_ms, tl.window_ms)
    assert tl.clock == tl.frame_start(1) == tl.pushed_samples and tl.is_fresh()
    assert dropped == pytest.approx((before - tl.frame_start(1)) / 16000)
    assert tl.ready_count() == 0
