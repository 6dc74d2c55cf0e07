"""SpeechPriors: head, gaze and blink motion that goes with speech (the idle driver's priors).

People nod on stressed syllables, turn their head a little at the start of a phrase and back
when they fall silent, look away and back, and blink when a phrase ends. Per video frame
:meth:`SpeechPriors.step` takes the voiced loudness (0..1, the idle driver's mouth target) and
returns head and gaze offsets in stdev units plus whether to start a blink:

* **Accents**: a fast (``fast_ms``) and a slow (``slow_ms``) follower of the loudness; an accent
  is the fast one's excess over the slow one (a syllable louder than its phrase).
* **Nods** (``head_pitch``): an accent past ``nod_threshold``, at least ``nod_gap_s`` after the
  last nod, pushes a critically damped spring at ``nod_hz`` for ``nod_push_ms``: the head dips
  (pitch down) after a stressed syllable and comes back.
* **Phrases**: speech starts when the slow follower rises past ``talk_on`` and ends when it falls
  under ``talk_off``. At each start, and now and then during a phrase (mean ``turn_every_s``), the
  head takes a new yaw / roll target ~ N(0, ``turn_sd``) (roll half as far); a silence longer
  than ``settle_s`` brings the target back to 0. A slower spring (``turn_hz``) follows it.
* **Gaze**: shifts away (horizontal ±``gaze_shift``, vertical a third of it) at random times
  (mean ``gaze_every_s``, twice as often while speaking), holds ``gaze_hold_s``, then returns to
  the centre; each move is a quick saccade (``saccade_ms``).
* **Blinks at phrase ends**: when a phrase of at least ``phrase_min_s`` ends, a blink starts after
  ``blink_delay_s`` with probability ``blink_p`` (the caller starts it, unless one is running;
  the idle driver also halves the rate of its own blinks inside a phrase).

Springs are damped and inputs clipped, so the state stays bounded over any length of speech. The
random draws come from the ``rng`` given (at events only), so the same seed and the same audio
give the same motion. The head's springs (≤ ``turn_hz``, ``nod_hz``) put the pose energy below 2 Hz.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np

__all__ = ["SpeechPriors"]


class _Spring:
    """A critically damped second-order follower: y'' = ω²(u − y) − 2ω y' (semi-implicit Euler)."""

    def __init__(self, hz: float, dt: float):
        self.w, self.dt = 2.0 * math.pi * hz, dt
        self.y = self.v = 0.0

    def step(self, u: float) -> float:
        self.v += self.dt * (self.w * self.w * (u - self.y) - 2.0 * self.w * self.v)
        self.y += self.dt * self.v
        return self.y


def _follower(ms: float, dt: float) -> float:
    return 1.0 - math.exp(-dt / max(ms / 1000.0, 1e-9))


class SpeechPriors:
    """Speech-correlated head, gaze and blink motion for one session (see the module docstring)."""

    def __init__(self, fps: float, rng: np.random.Generator, *, fast_ms: float = 60.0, slow_ms: float = 500.0,
                 nod_gain: float = 2.5, nod_hz: float = 1.0, nod_threshold: float = 0.08, nod_gap_s: float = 0.8,
                 nod_push_ms: float = 300.0, talk_on: float = 0.12, talk_off: float = 0.05,
                 turn_sd: float = 0.5, turn_every_s: float = 3.0, turn_hz: float = 0.6, settle_s: float = 0.8,
                 gaze_shift: float = 0.8, gaze_every_s: float = 8.0, gaze_hold_s: tuple = (0.4, 1.5),
                 saccade_ms: float = 30.0, phrase_min_s: float = 0.6, blink_delay_s: tuple = (0.1, 0.35),
                 blink_p: float = 0.7):
        self.fps = float(fps)
        if not (math.isfinite(self.fps) and self.fps > 0):
            raise ValueError(f"fps must be positive, got {fps!r}")
        if not (nod_hz < self.fps / 2 and turn_hz < self.fps / 2):
            raise ValueError(f"nod_hz and turn_hz must be below half the frame rate ({self.fps / 2:g} Hz)")
        if not 0 < talk_off < talk_on:
            raise ValueError(f"need 0 < talk_off < talk_on, got {talk_off}, {talk_on}")
        dt = 1.0 / self.fps
        self.dt = dt
        self._a_fast, self._a_slow, self._a_sacc = _follower(fast_ms, dt), _follower(slow_ms, dt), _follower(saccade_ms, dt)
        self.nod_gain, self.nod_hz, self.turn_hz = float(nod_gain), float(nod_hz), float(turn_hz)
        self.nod_threshold, self.nod_gap_s, self.nod_push_s = float(nod_threshold), float(nod_gap_s), nod_push_ms / 1000
        self.talk_on, self.talk_off = float(talk_on), float(talk_off)
        self.turn_sd, self.turn_every_s, self.settle_s = float(turn_sd), float(turn_every_s), float(settle_s)
        self.gaze_shift, self.gaze_every_s = float(gaze_shift), float(gaze_every_s)
        self.gaze_hold_s = tuple(float(v) for v in gaze_hold_s)
        self.phrase_min_s, self.blink_p = float(phrase_min_s), float(blink_p)
        self.blink_delay_s = tuple(float(v) for v in blink_delay_s)
        self.reset(rng)

    def reset(self, rng: np.random.Generator) -> None:
        self._rng = rng
        self._fast = self._slow = 0.0
        self._nod = _Spring(self.nod_hz, self.dt)
        self._since_nod = math.inf
        self._push = (0.0, 0.0)                # nod push: (drive, seconds left)
        self._yaw, self._roll = _Spring(self.turn_hz, self.dt), _Spring(self.turn_hz, self.dt)
        self._target = (0.0, 0.0)              # yaw, roll targets
        self._talking = False
        self._phrase_s = self._silent_s = 0.0
        self._to_turn = math.inf
        self._gaze = np.zeros(2)
        self._gaze_target = np.zeros(2)
        self._gaze_left = -1.0                 # seconds of the current hold, < 0 = at the centre
        self._to_gaze = self._rng.exponential(self.gaze_every_s)
        self._to_blink: Optional[float] = None

    @property
    def talking(self) -> bool:
        """Inside a phrase (the idle driver's own blinks slow down to half their rate there)."""
        return self._talking

    def _new_turn(self) -> None:
        yaw = float(np.clip(self._rng.normal(0.0, self.turn_sd), -2 * self.turn_sd, 2 * self.turn_sd))
        roll = float(np.clip(self._rng.normal(0.0, 0.5 * self.turn_sd), -self.turn_sd, self.turn_sd))
        self._target = (yaw, roll)
        self._to_turn = self._rng.exponential(self.turn_every_s)

    def _phrases(self, dt: float) -> None:
        if not self._talking and self._slow > self.talk_on:
            self._talking, self._phrase_s = True, 0.0
            self._new_turn()
        elif self._talking and self._slow < self.talk_off:
            self._talking, self._silent_s = False, 0.0
            if self._phrase_s >= self.phrase_min_s and self._rng.random() < self.blink_p:
                self._to_blink = float(self._rng.uniform(*self.blink_delay_s))
        if self._talking:
            self._phrase_s += dt
            self._to_turn -= dt
            if self._to_turn <= 0:
                self._new_turn()
        else:
            self._silent_s += dt
            if self._silent_s >= self.settle_s:
                self._target = (0.0, 0.0)

    def _gaze_step(self, dt: float) -> np.ndarray:
        if self._gaze_left >= 0:
            self._gaze_left -= dt
            if self._gaze_left < 0:
                self._gaze_target = np.zeros(2)
        else:
            self._to_gaze -= dt * (2.0 if self._talking else 1.0)
            if self._to_gaze <= 0:
                side = 1.0 if self._rng.random() < 0.5 else -1.0
                gx = side * self._rng.uniform(0.5, 1.0) * self.gaze_shift
                gy = float(np.clip(self._rng.normal(0.0, self.gaze_shift / 3), -self.gaze_shift / 2, self.gaze_shift / 2))
                self._gaze_target = np.array([gx, gy])
                self._gaze_left = float(self._rng.uniform(*self.gaze_hold_s))
                self._to_gaze = self._rng.exponential(self.gaze_every_s)
        self._gaze += self._a_sacc * (self._gaze_target - self._gaze)
        return self._gaze

    def step(self, level: float) -> tuple[np.ndarray, np.ndarray, bool]:
        """(head [yaw, pitch, roll], gaze [x, y], start a blink now) for this frame's voiced
        loudness ``level`` (0..1)."""
        dt = self.dt
        level = min(max(float(level), 0.0), 1.0) if math.isfinite(level) else 0.0
        self._fast += self._a_fast * (level - self._fast)
        self._slow += self._a_slow * (level - self._slow)
        accent = self._fast - self._slow
        self._phrases(dt)
        self._since_nod += dt
        if accent > self.nod_threshold and self._since_nod >= self.nod_gap_s:
            self._push, self._since_nod = (-self.nod_gain * min(accent, 0.5), self.nod_push_s), 0.0
        drive, left = self._push
        pitch = self._nod.step(drive if left > 0 else 0.0)
        self._push = (drive, left - dt)
        yaw = self._yaw.step(self._target[0])
        roll = self._roll.step(self._target[1])
        gaze = self._gaze_step(dt)
        blink = False
        if self._to_blink is not None:
            self._to_blink -= dt
            if self._to_blink <= 0:
                self._to_blink, blink = None, True
        return np.array([yaw, pitch, roll]), gaze.copy(), blink
