"""The audio LSTM as a motion driver: one stream, on any generator's named directions (the model
reads audio only). A frame-stepped model steps once per video frame at its training fps; a model
with its own clock (``config.step_hz``) steps at that rate under video at any frame rate
(:class:`~engine.motion.step_clock.StepClock`)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional, Sequence, Union

import numpy as np
import torch

from engine.audio.features import LOG_FLOOR

from .base import MotionDriver, flush_frames_for, resolve_names
from .step_clock import StepClock

if TYPE_CHECKING:  # pragma: no cover - typing only
    from engine.audio.features import FrameFeatures
    from engine.latent.direction_set import DirectionSet

from .lstm import AudioMotionModel

__all__ = ["AudioLSTMDriver"]


class AudioLSTMDriver(MotionDriver):
    """A :class:`MotionDriver` around an :class:`AudioMotionModel` (one stream, B = 1).

    Args:
        model: the model (put in eval mode; its parameters are not changed).
        names: output direction names (a DirectionSet or names), ``len == model.config.k``;
            default: the names stored in the model's config.
        seed: seed of the motion noise ε_t (only used when ``noise_dim > 0``); ``reset`` re-seeds.
        device: where the model runs.
        flush_frames: frames over which ``flush()`` ramps x to 0 (default: 40 ms at the video
            frame rate, :func:`~engine.motion.base.flush_frames_for`).
        noise_scale: multiplier of ε_t ~ N(0, 1) (0 switches the noise off).
        fps: the video frame rate, for a model with its own clock (required there); a
            frame-stepped model runs at its training fps only (None or that).
    """

    def __init__(self, model: AudioMotionModel, names: Union["DirectionSet", Sequence[str], None] = None, *,
                 seed: int = 0, device: Union[str, torch.device] = "cpu", flush_frames: Optional[int] = None,
                 noise_scale: float = 1.0, fps: Optional[float] = None):
        c = model.config
        if names is None:
            if c.names is None:
                raise ValueError("the model's config stores no direction names; pass names=")
            names = c.names
        self.names = resolve_names(names)
        if len(self.names) != c.k:
            raise ValueError(f"the model outputs k = {c.k} components but {len(self.names)} names were given")
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()
        self.config = c
        self.fps = float(c.fps)
        self.clock: Optional[StepClock] = None
        if c.step_hz:
            if fps is None:
                raise ValueError(f"this model steps at its own {c.step_hz:g} Hz: give the video's frame rate (fps=)")
            self.fps = float(fps)
            if not (np.isfinite(self.fps) and 0 < self.fps <= 240):
                raise ValueError(f"fps must be in (0, 240], got {fps!r}")
            self.clock = StepClock(c.step_hz, self.fps, c.lookahead_ms, c.window_frames, c.n_mels)
        elif fps is not None and abs(float(fps) - self.fps) > 1e-6 * self.fps:
            raise ValueError(f"this model steps once per frame at {self.fps:g} fps, not {float(fps):g} fps")
        self.lookahead_ms = float(c.lookahead_ms)
        self.seed = int(seed)
        self.flush_frames = flush_frames_for(self.fps, flush_frames)
        self.noise_scale = float(noise_scale)
        self._silence = torch.full((1, c.window_frames, c.n_mels), LOG_FLOOR, dtype=torch.float32, device=self.device)
        self._w = torch.zeros(1, max(c.w_dim, 1), dtype=torch.float32, device=self.device)
        self.reset()

    def _anchor_w(self, anchor) -> torch.Tensor:
        if not self.model.uses_identity:     # audio-only model: the anchor is not read
            return self._w
        a = torch.as_tensor(np.asarray(anchor, dtype=np.float32) if not torch.is_tensor(anchor) else anchor)
        a = a.detach().to(self.device, torch.float32)
        given = list(a.shape)
        if a.ndim == 3 and a.shape[0] == 1:
            a = a[0]
        if a.ndim == 2:          # ws [num_ws, w_dim] (or [1, w_dim]): the first layer's w
            a = a[0]
        if a.shape != (self.config.w_dim,):
            raise ValueError(f"anchor: this motion model reads the identity's w from a generator with w_dim "
                             f"{self.config.w_dim} (expected w [{self.config.w_dim}] or ws [num_ws, "
                             f"{self.config.w_dim}]), got {given}: use a generator-independent "
                             "model (engine.train_motion --identity none) on this generator")
        if not bool(torch.isfinite(a).all()):
            raise ValueError("anchor contains NaN or infinity")
        return a[None].clone()

    def reset(self, anchor: Optional[object] = None) -> None:
        """Frame 0 for the face at ``anchor`` (w [w_dim] or ws [num_ws, w_dim], ws[0] used); None
        keeps the previous anchor (zeros at first). Re-seeds the noise."""
        if anchor is not None:
            self._w = self._anchor_w(anchor)
        self._gen = torch.Generator(device=self.device)
        self._gen.manual_seed(self.seed)
        with torch.inference_mode():
            self._state = self.model.init_state(self._w)
        self._x = np.zeros(self.config.k, dtype=np.float32)
        if self.clock is not None:
            self.clock.reset()
        self._flush_left = 0
        self._flush_from = self._x.copy()

    def flush(self) -> None:
        """Interruption: x ramps linearly from its last value to exactly 0 over ``flush_frames``
        frames; the state is re-initialised from the anchor now, and the model keeps consuming the
        incoming audio during the ramp (its output is used again afterwards)."""
        self._flush_from = self._x.copy()
        self._flush_left = self.flush_frames
        with torch.inference_mode():
            self._state = self.model.init_state(self._w)

    def _mel(self, features) -> torch.Tensor:
        if features is None:
            return self._silence
        c = self.config
        mel = np.asarray(features.mel if hasattr(features, "mel") else features, dtype=np.float32)
        if mel.shape != (c.window_frames, c.n_mels):
            raise ValueError(f"features.mel must be [{c.window_frames}, {c.n_mels}], got {list(mel.shape)}")
        if not np.isfinite(mel).all():
            raise ValueError("features.mel contains NaN or infinity")
        return torch.from_numpy(mel).to(self.device)[None]

    def _noise(self, n: int) -> Optional[torch.Tensor]:
        if not self.config.noise_dim:
            return None
        noise = torch.randn(1, n, self.config.noise_dim, generator=self._gen, device=self.device)
        return noise * self.noise_scale

    def _clock_step(self, features) -> np.ndarray:
        """A model with its own clock: run the steps this frame makes due, x at the frame's centre."""
        if features is None:
            wins = self.clock.due(None, None)
        else:
            t_end = getattr(features, "t_end", None)
            if t_end is None:
                raise ValueError("this model steps on its own clock: step() needs FrameFeatures (with t_end)")
            self._mel(features)                       # validates before any state changes
            wins = self.clock.due(int(t_end), np.asarray(features.mel, np.float32))
        if len(wins):
            with torch.inference_mode():
                a = self.model.embed_audio(torch.from_numpy(wins).to(self.device))[None]
                xs, self._state = self.model.unroll(a, self._state, self._noise(len(wins)))
            self.clock.outputs(xs[0].to("cpu").numpy())
        return self.clock.at_frame(self.config.k)

    def step(self, features: Optional["FrameFeatures"]) -> np.ndarray:
        """x_t [k] float32 (stdev units, |x| ≤ clamp_sigma) for this frame; ``None`` = silence."""
        if self.clock is not None:
            x = self._clock_step(features)
        else:
            mel = self._mel(features)           # validates before any state changes
            noise = self._noise(1)
            with torch.inference_mode():
                x, self._state = self.model.step(mel, self._state, None if noise is None else noise[:, 0])
            x = x[0].to("cpu").numpy().astype(np.float32)
        if self._flush_left > 0:
            self._flush_left -= 1
            x = (self._flush_from * (self._flush_left / self.flush_frames)).astype(np.float32)
        self._x = x
        return x.copy()
