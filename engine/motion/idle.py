"""IdleDriver: the model-free baseline — a live face before any training.

Per video frame (``dt = 1/fps`` seconds) it produces x_t in stdev units from:

* **Mouth** (``mouth_open``, ``jaw``): the frame RMS in dBFS, ``20·log10(rms)``, mapped linearly
  from the noise gate ``gate_db`` (→ 0) to ``full_db`` (→ 1) and clipped to [0, 1]; multiplied by
  a voicing weight ``clip(voiced / voiced_full, 0, 1)`` so unvoiced noise does not open the
  mouth; then smoothed by a one-pole attack/release follower
  ``env += a·(target − env)`` with ``a = 1 − exp(−dt/τ)`` (τ = ``attack_ms`` when opening,
  ``release_ms`` when closing); values below ``1e-2`` snap to 0, so silence gives an exactly
  closed mouth after a few frames. ``x_mouth = mouth_gain · env``, ``x_jaw = jaw_gain · env``.
* **Blinks** (``blink``): onsets with a shifted-exponential ("Poisson-ish") interval,
  ``interval = min + Exp(mean − min)`` truncated to ``blink_interval_s = (min, max)``; each blink
  lasts ``blink_ms`` (drawn uniformly), a fast close (first 40 %) and a slower open, with peak
  ``blink_amp``.
* **Head sway** (``head_yaw``, ``head_pitch``, ``head_roll``) and **gaze drift** (``gaze_x``,
  ``gaze_y``): per component a sum of ``n_sines`` sinusoids with random frequencies in
  ``sway_hz`` (all below 1 Hz) and random phases, scaled so the sum has RMS ``sway_rms[name]``
  (``gaze_rms`` for gaze). Phases are kept wrapped to [0, 2π), so the state never grows.

* **Speech priors** (``priors``, on by default): nods on stressed syllables, small head turns
  with each phrase, gaze that shifts away and returns, and blinks at phrase ends, added on top of
  the sway and drift (:class:`engine.motion.priors.SpeechPriors`; ``priors=False`` leaves the
  idle motion audio independent, a dict passes its settings).

Everything is clipped to ±``clamp`` (stdev units). The random choices come from
``numpy.random.Generator(PCG64(seed))`` (the priors' from ``PCG64([seed, 1])``), so the same seed and the
same features give the same x_t. The RNG is drawn from only at blink onsets, so a step is O(1).

Which direction each motion drives is a mapping role → direction name (default: the role names
themselves, :data:`engine.motion.base.ROLES`); roles whose direction is not in ``names`` are not
driven, and directions that no role maps to stay at 0.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Mapping, Optional, Sequence, Union

import numpy as np

from .base import ROLES, MotionDriver, flush_frames_for, resolve_names
from .priors import SpeechPriors

if TYPE_CHECKING:  # pragma: no cover - typing only
    from engine.audio.features import FrameFeatures
    from engine.latent.direction_set import DirectionSet

__all__ = ["IdleDriver"]

_SWAY_ROLES = ("head_yaw", "head_pitch", "head_roll")
_GAZE_ROLES = ("gaze_x", "gaze_y")
_DEFAULT_SWAY_RMS = {"head_yaw": 0.45, "head_pitch": 0.3, "head_roll": 0.2}
#: Below this the mouth envelope is set to exactly 0 (closed).
_ENV_FLOOR = 1e-2


class IdleDriver(MotionDriver):
    """Analytic motion: envelope-following mouth, blinks, slow head sway, optional gaze drift.

    Args:
        names: the output components (a DirectionSet or its names, in order).
        fps: video frames per second.
        seed: seed of the idle motion (blinks, sway phases and frequencies).
        mapping: role → direction name overrides, e.g. ``{"mouth_open": "pc7"}``; a role mapped to
            ``None`` is switched off.
        clamp: |x| bound in stdev units.
        gate_db, full_db: dBFS of a frame RMS that maps to a closed (noise gate) and a fully open
            mouth.
        voiced_full: voiced fraction at and above which the mouth follows the level fully.
        attack_ms, release_ms: envelope follower time constants (ms).
        mouth_gain, jaw_gain: x of mouth_open / jaw at full envelope (stdev units).
        blink_interval_s: (min, max) seconds between blink onsets; blink_mean_s: mean interval.
        blink_ms: (min, max) blink duration in ms; blink_amp: peak of the blink component.
        sway_rms: per head role, RMS of the sway (stdev units); sway_hz: (low, high) frequency
            range of the sway sinusoids (Hz); n_sines: sinusoids per component.
        gaze_rms: RMS of the gaze drift (0 switches it off).
        flush_frames: frames over which ``flush()`` ramps the mouth to rest (default: 40 ms,
            :func:`~engine.motion.base.flush_frames_for`).
        priors: speech-correlated head, gaze and blink motion (:class:`SpeechPriors`): True (the
            default), False, or a dict of SpeechPriors settings.
    """

    def __init__(self, names: Union["DirectionSet", Sequence[str]], *, fps: float = 25.0, seed: int = 0,
                 mapping: Optional[Mapping[str, Optional[str]]] = None, clamp: float = 3.0,
                 gate_db: float = -40.0, full_db: float = -10.0, voiced_full: float = 0.5,
                 attack_ms: float = 20.0, release_ms: float = 50.0,
                 mouth_gain: float = 2.0, jaw_gain: float = 1.0,
                 blink_interval_s: tuple[float, float] = (2.0, 6.0), blink_mean_s: float = 3.5,
                 blink_ms: tuple[float, float] = (150.0, 250.0), blink_amp: float = 2.5,
                 sway_rms: Optional[Mapping[str, float]] = None, sway_hz: tuple[float, float] = (0.04, 0.35),
                 n_sines: int = 3, gaze_rms: float = 0.15, flush_frames: Optional[int] = None,
                 priors: Union[bool, Mapping[str, object]] = True):
        self.names = resolve_names(names)
        self.fps = float(fps)
        if not (math.isfinite(self.fps) and self.fps > 0):
            raise ValueError(f"fps must be positive, got {fps!r}")
        self.seed = int(seed)
        self.clamp = float(clamp)
        if not self.clamp > 0:
            raise ValueError(f"clamp must be positive, got {clamp!r}")
        if not full_db > gate_db:
            raise ValueError(f"full_db ({full_db}) must be above gate_db ({gate_db})")
        self.gate_db, self.full_db = float(gate_db), float(full_db)
        self.voiced_full = max(float(voiced_full), 1e-6)
        dt = 1.0 / self.fps
        self._a_attack = 1.0 - math.exp(-dt / max(attack_ms / 1000.0, 1e-9))
        self._a_release = 1.0 - math.exp(-dt / max(release_ms / 1000.0, 1e-9))
        self.mouth_gain, self.jaw_gain = float(mouth_gain), float(jaw_gain)
        lo, hi = (float(v) for v in blink_interval_s)
        if not 0 < lo <= blink_mean_s <= hi:
            raise ValueError(f"need 0 < min <= blink_mean_s <= max, got {blink_interval_s}, {blink_mean_s}")
        self.blink_interval_s, self.blink_mean_s = (lo, hi), float(blink_mean_s)
        bl, bh = (float(v) for v in blink_ms)
        if not 0 < bl <= bh:
            raise ValueError(f"blink_ms must be (min, max) with 0 < min <= max, got {blink_ms}")
        if bh / 1000.0 >= lo:
            raise ValueError(f"blink_ms max ({bh} ms) must be shorter than the shortest interval ({lo} s)")
        self.blink_ms, self.blink_amp = (bl, bh), float(blink_amp)
        f_lo, f_hi = (float(v) for v in sway_hz)
        if not 0 < f_lo <= f_hi < self.fps / 2:
            raise ValueError(f"sway_hz must be (low, high) with 0 < low <= high < fps/2, got {sway_hz}")
        self.sway_hz, self.n_sines = (f_lo, f_hi), int(n_sines)
        self.flush_frames = flush_frames_for(self.fps, flush_frames)

        roles = {r: r for r in ROLES}
        for role, target in (mapping or {}).items():
            if role not in roles:
                raise ValueError(f"unknown motion role {role!r} (known: {', '.join(ROLES)})")
            roles[role] = target
        index = {n: i for i, n in enumerate(self.names)}
        #: role -> output index, only for roles whose direction is present.
        self.role_index = {r: index[t] for r, t in roles.items() if t is not None and t in index}

        rms = dict(_DEFAULT_SWAY_RMS)
        rms.update(sway_rms or {})
        rms.update({r: float(gaze_rms) for r in _GAZE_ROLES})
        osc = [r for r in _SWAY_ROLES + _GAZE_ROLES if r in self.role_index and rms.get(r, 0.0) > 0]
        self._osc_index = np.array([self.role_index[r] for r in osc], dtype=np.intp)
        # A sum of n sinusoids of amplitude a has RMS a·sqrt(n/2).
        self._osc_amp = np.array([rms[r] / math.sqrt(self.n_sines / 2.0) for r in osc], dtype=np.float64)
        self._prior_opts = dict(priors) if isinstance(priors, Mapping) else ({} if priors else None)
        self._head_index = [(k, self.role_index[r]) for k, r in enumerate(_SWAY_ROLES) if r in self.role_index]
        self._gaze_index = [(k, self.role_index[r]) for k, r in enumerate(_GAZE_ROLES) if r in self.role_index]
        self._priors: Optional[SpeechPriors] = None
        self.reset()

    # -- state ---------------------------------------------------------------------------------
    def reset(self, anchor: Optional[object] = None) -> None:
        """Frame 0 again, same seed (``anchor`` is ignored: idle motion is identity independent)."""
        self._rng = np.random.Generator(np.random.PCG64(self.seed))
        n_osc = len(self._osc_index)
        f_lo, f_hi = self.sway_hz
        # Log-uniform frequencies: as much motion per octave at the slow end as at the fast end.
        freqs = np.exp(self._rng.uniform(math.log(f_lo), math.log(f_hi), size=(n_osc, self.n_sines)))
        self._dphase = 2.0 * math.pi * freqs / self.fps                   # rad per frame
        self._phase = self._rng.uniform(0.0, 2.0 * math.pi, size=(n_osc, self.n_sines))
        self._env = 0.0               # mouth envelope, 0..1
        self._flush_left = 0          # frames of flush ramp still to go
        self._flush_from = 0.0        # envelope when flush() was called
        self._blink_pos = -1          # frame inside the current blink, -1 = none
        self._blink_len = 0.0         # its duration in frames (float)
        self._to_blink = self._next_blink_frames()
        self._x = np.zeros(len(self.names), dtype=np.float32)
        if self._prior_opts is not None:
            rng = np.random.Generator(np.random.PCG64([self.seed, 1]))
            if self._priors is None:
                self._priors = SpeechPriors(self.fps, rng, **self._prior_opts)
            else:
                self._priors.reset(rng)

    def _next_blink_frames(self) -> float:
        lo, hi = self.blink_interval_s
        interval = lo + self._rng.exponential(self.blink_mean_s - lo) if self.blink_mean_s > lo else lo
        return min(interval, hi) * self.fps

    def flush(self) -> None:
        """Ramp the mouth linearly to rest over ``flush_frames`` frames, whatever the audio says;
        afterwards the audio drives it again. Blinks and sway go on (they are idle motion). A
        closed mouth needs no ramp, so speech right after such a flush is not held back."""
        if self._env > 0.0:
            self._flush_from = self._env
            self._flush_left = self.flush_frames

    # -- per frame -----------------------------------------------------------------------------
    def mouth_target(self, rms: float, voiced: float) -> float:
        """Instantaneous mouth opening 0..1 for a frame RMS (full scale 1.0) and voiced fraction."""
        if not (rms > 0.0 and math.isfinite(rms)) or not voiced > 0.0:
            return 0.0
        level = (20.0 * math.log10(rms) - self.gate_db) / (self.full_db - self.gate_db)
        level = min(max(level, 0.0), 1.0)
        return level * min(float(voiced) / self.voiced_full, 1.0)

    def step(self, features: Optional["FrameFeatures"]) -> np.ndarray:
        """x_t [k] float32 (stdev units) for this frame's features (``None`` = silence)."""
        # mouth envelope
        target = 0.0 if features is None else self.mouth_target(float(features.rms), float(features.voiced))
        if self._flush_left > 0:
            self._flush_left -= 1
            self._env = self._flush_from * self._flush_left / self.flush_frames
        else:
            a = self._a_attack if target > self._env else self._a_release
            self._env += a * (target - self._env)
            if self._env < _ENV_FLOOR:
                self._env = 0.0
        x = self._x
        x[:] = 0.0
        ri = self.role_index
        if "mouth_open" in ri:
            x[ri["mouth_open"]] = self.mouth_gain * self._env
        if "jaw" in ri:
            x[ri["jaw"]] = self.jaw_gain * self._env

        head = gaze = None
        phrase_blink = False
        if self._priors is not None:
            head, gaze, phrase_blink = self._priors.step(target)

        # blink: onsets every _next_blink_frames() frames (onset to onset), and at phrase ends; the
        # schedule runs whether or not a blink direction exists, so the RNG stream is the same either way
        self._to_blink -= 0.5 if self._priors is not None and self._priors.talking else 1.0
        if phrase_blink and self._blink_pos < 0:
            self._blink_pos = 0
            self._blink_len = self._rng.uniform(*self.blink_ms) / 1000.0 * self.fps
            self._to_blink = self._next_blink_frames()
        elif self._to_blink <= 0.0 and self._blink_pos < 0:
            self._blink_pos = 0
            self._blink_len = self._rng.uniform(*self.blink_ms) / 1000.0 * self.fps
            self._to_blink += self._next_blink_frames()
        if self._blink_pos >= 0:
            p = (self._blink_pos + 0.5) / self._blink_len        # phase at the frame centre
            if "blink" in ri:
                x[ri["blink"]] = self.blink_amp * _blink_shape(p)
            self._blink_pos += 1
            if self._blink_pos >= self._blink_len:
                self._blink_pos = -1

        # head sway and gaze: sums of slow sinusoids, phases wrapped so they stay bounded
        if len(self._osc_index):
            x[self._osc_index] = self._osc_amp * np.sin(self._phase).sum(axis=1)
            self._phase += self._dphase
            np.mod(self._phase, 2.0 * math.pi, out=self._phase)
        if head is not None:
            for k, i in self._head_index:
                x[i] += head[k]
            for k, i in self._gaze_index:
                x[i] += gaze[k]

        np.clip(x, -self.clamp, self.clamp, out=x)
        return x.copy()


def _blink_shape(p: float) -> float:
    """Lid closure 0..1 at blink phase p in [0, 1): fast close (first 40 %), slower open."""
    if p <= 0.0 or p >= 1.0:
        return 0.0
    if p < 0.4:
        return math.sin(0.5 * math.pi * p / 0.4) ** 2
    return math.cos(0.5 * math.pi * (p - 0.4) / 0.6) ** 2
