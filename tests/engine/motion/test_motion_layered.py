"""LayeredDriver and the demo engine's default driver: the trained LSTM's mouth over the idle
driver's blinks, in a real session on the shipped demo assets."""
from __future__ import annotations

import numpy as np
import pytest

from engine.motion.base import MotionDriver
from engine.motion.layered import LayeredDriver


class Const(MotionDriver):
    def __init__(self, names, value, fps=25.0, lookahead_ms=None):
        self.names, self.value, self.fps = list(names), float(value), fps
        if lookahead_ms is not None:
            self.lookahead_ms = lookahead_ms
        self.calls = []

    def reset(self, anchor=None):
        self.calls.append("reset")

    def step(self, features):
        self.calls.append("step")
        return np.full(len(self.names), self.value, np.float32)

    def flush(self):
        self.calls.append("flush")


def test_top_directions_over_the_base():
    base = Const(["mouth_open", "jaw", "blink"], 1.0)
    top = Const(["mouth_open"], 5.0, lookahead_ms=40.0)
    d = LayeredDriver(top, base)
    assert d.names == ["mouth_open", "jaw", "blink"] and d.lookahead_ms == 40.0 and d.config is None
    d.reset()
    np.testing.assert_array_equal(d.step(None), [5.0, 1.0, 1.0])
    d.flush()
    assert base.calls == top.calls == ["reset", "step", "flush"]
    with pytest.raises(ValueError, match="frame rate"):
        LayeredDriver(Const(["jaw"], 0, fps=30.0), base)
    with pytest.raises(ValueError, match="does not output gaze_x"):
        LayeredDriver(Const(["gaze_x"], 0), base)


def test_demo_default_driver_moves_mouth_with_speech_and_blinks():
    """The demo engine's default driver in a session: x on mouth_open comes from the LSTM (it
    follows a voiced signal, silence keeps it near rest), blinks from the idle driver."""
    from engine.session import AvatarEngine, AvatarSession

    engine = AvatarEngine("demo")
    s = AvatarSession(engine, fps=25.0, seed=3)
    assert isinstance(s._driver, LayeredDriver)
    names = s._driver.names
    rate = 16000
    t = np.arange(rate * 4) / rate
    voice = sum(np.sin(2 * np.pi * 140.0 * h * t) / h for h in range(1, 12))
    gate = (np.sin(2 * np.pi * 1.0 * t) > 0) & (t > 1.0)            # silence, then bursts of voicing
    pcm = (0.25 * 32767 * voice * gate / np.abs(voice).max()).astype(np.int16)
    s.push_audio(pcm, rate)
    s.push_silence(4.0)
    xs = []
    while (f := s.next_frame()) is not None:
        xs.append(f.x)
    s.close()
    x = np.array(xs)
    mouth, blink = x[:, names.index("mouth_open")], x[:, names.index("blink")]
    assert len(x) >= 150
    assert np.abs(mouth[:20]).max() < 0.5 < mouth[25:100].max()     # opens with the voice only
    assert blink.max() > 1.0                                        # the idle driver's blinks
