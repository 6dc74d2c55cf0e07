"""AudioMotionModel / AudioLSTMDriver: the learned audio → motion driver (MoCoGAN-HD with audio).

Model (:class:`AudioMotionModel`), per video frame t of a stream with identity anchor w:

* **identity** (optional): with ``w_dim > 0`` (MoCoGAN-HD) ``(h_0, c_0) = init_state(w)``, an MLP
  of the identity's w, so the identity enters only through the initial LSTM state and the model
  works only on generators whose w has ``w_dim`` entries. With ``w_dim = 0`` (the default of new
  models, ``engine.train_motion --identity none``) the initial state is learned and the anchor is
  not read: the model's inputs are audio only and its outputs are in stdev units of named
  directions, so one model drives the directions of *any* generator.
* **audio encoder**: the frame's log-mel window ``mel_t [window_frames, n_mels]`` (what
  :class:`engine.audio.features.FeatureStream` emits) is normalised with fixed constants,
  ``(mel - mel_mean) / mel_std`` (config; defaults fit the log floor at -23 and speech around
  -10 .. 0), then two strided 1-D convolutions over time (mel bands as channels) and a linear
  layer give ``a_t [audio_dim]``.
* **LSTM step** on ``[a_t, ε_t]`` (``ε_t`` motion noise ``[noise_dim]`` for head/eye motion,
  absent when ``noise_dim = 0``). The cell state is clipped to ``±cell_clip`` after each update
  (as TensorFlow's ``cell_clip``), so the state stays bounded even when the forget gate
  saturates at exactly 1.0 in float32.
* **bounded head**: ``x_t = clamp_sigma · tanh(W h_t + b)``, x in **stdev units**,
  ``|x_t| ≤ clamp_sigma``.

Identity drift is solved, not inherited: MoCoGAN-HD accumulates ``w_t = w_{t-1} + Δ_t``, a random
walk. Here every frame is anchored, ``w_t = w + V·(stdev ⊙ x_t)`` (``LatentPath``), and
``|x_t| ≤ clamp_sigma``, so ``‖w_t − w‖ ≤ clamp_sigma·sqrt(Σ stdev²)`` per layer for an
orthonormal V, at every t, whatever the model and however long the stream.

``forward`` (training: ``[B, T, window_frames, n_mels]`` → ``[B, T, k]``) and ``step`` (one frame)
run the same code (:meth:`AudioMotionModel.unroll`); step-by-step equals the sequence forward to
float32 rounding (tested ≤ 1e-5). ``step`` is O(1): the state is ``(h, c)``, ``[B, hidden]`` each.

:class:`AudioLSTMDriver` wraps a model as a :class:`engine.motion.base.MotionDriver`:
``step(None)`` (no audio) feeds a silent window (every bin at ``LOG_FLOOR``, which is what
``FeatureStream`` emits for digital silence); ``flush()`` ramps the output linearly from its last
value to exactly 0 over ``flush_frames`` frames while the re-initialised model keeps consuming
audio; ``reset(anchor)`` re-initialises the state from the anchor's w (and re-seeds the noise).

Files: :func:`save_motion_model` writes safetensors with the config as JSON in the header
metadata (``"stylecast_motion_config"``) plus a sidecar ``<stem>.json``;
:func:`load_motion_model` reads it back exactly; every failure is a :class:`MotionModelError`
(a ``ValueError``) whose message starts with the file name.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import TYPE_CHECKING, Any, Mapping, Optional

import numpy as np
import torch
from torch import nn

from engine.audio.features import N_MELS

if TYPE_CHECKING:  # pragma: no cover - typing only
    pass

__all__ = ["AudioLSTMConfig", "AudioMotionModel", "MotionModelError", "LOG_MEAN", "LOG_STD",
           "METADATA_CONFIG_KEY", "METADATA_FORMAT_KEY", "FORMAT_VERSION"]

#: Default log-mel normalisation: (mel - LOG_MEAN) / LOG_STD. Silence (LOG_FLOOR ≈ -23.0) → ≈ -2.2,
#: speech at -40 .. -10 dBFS lies around -8 .. 0 → ≈ 0.3 .. 1.7.
LOG_MEAN = -10.0
LOG_STD = 6.0

METADATA_CONFIG_KEY = "stylecast_motion_config"
METADATA_FORMAT_KEY = "stylecast_motion_format"
FORMAT_VERSION = "1"

State = tuple[torch.Tensor, torch.Tensor]


class MotionModelError(ValueError):
    """A motion model file could not be read or written; the message starts with the file name."""


@dataclass
class AudioLSTMConfig:
    """Hyper-parameters of :class:`AudioMotionModel` (JSON-serialisable via to_dict/from_dict).

    ``stdev`` (optional, len k): the W-units stdev of each output direction, kept with the model
    for reference (e.g. the identity-drift bound ``clamp_sigma·sqrt(Σ stdev²)``); the model's
    output is in stdev units and does not use it. ``names`` (optional, len k): the direction names
    the outputs drive, in order (the trainer stores the DirectionSet's names, so a driver can be
    built from the file alone). ``w_dim``: width of the identity w the state encoder reads, or 0
    (no identity input: a generator-independent model). ``fps`` and ``lookahead_ms`` are the feature
    settings the model was trained with: the live ``FeatureStream`` must use the same
    (``FeatureStream(fps=driver.fps, lookahead_ms=driver.lookahead_ms)``). ``step_hz`` > 0: the
    model has its own clock and steps at ``step_hz`` (= ``fps``, the rate of its training
    sequences) whatever the video's frame rate (:mod:`engine.motion.step_clock`); 0: one step per
    video frame, at ``fps`` only.
    """
    n_mels: int = N_MELS
    window_frames: int = 32
    w_dim: int = 0
    k: int = 8
    hidden: int = 256
    audio_dim: int = 128
    noise_dim: int = 0
    stdev: Optional[list[float]] = None
    names: Optional[list[str]] = None
    fps: float = 25.0
    lookahead_ms: float = 40.0
    clamp_sigma: float = 3.0
    conv_channels: int = 64
    cell_clip: float = 10.0
    mel_mean: float = LOG_MEAN
    mel_std: float = LOG_STD
    step_hz: float = 0.0

    def __post_init__(self) -> None:
        for name in ("n_mels", "window_frames", "k", "hidden", "audio_dim", "conv_channels"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"AudioLSTMConfig.{name} must be a positive integer, got {v!r}")
            setattr(self, name, int(v))
        for name in ("noise_dim", "w_dim"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
                raise ValueError(f"AudioLSTMConfig.{name} must be a non-negative integer, got {v!r}")
            setattr(self, name, int(v))
        for name in ("fps", "clamp_sigma", "cell_clip", "mel_std"):
            v = float(getattr(self, name))
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"AudioLSTMConfig.{name} must be a positive number, got {getattr(self, name)!r}")
            setattr(self, name, v)
        self.lookahead_ms = float(self.lookahead_ms)
        if not (math.isfinite(self.lookahead_ms) and self.lookahead_ms >= 0):
            raise ValueError(f"AudioLSTMConfig.lookahead_ms must be a non-negative number, got {self.lookahead_ms!r}")
        self.step_hz = float(self.step_hz)
        if not (math.isfinite(self.step_hz) and self.step_hz >= 0):
            raise ValueError(f"AudioLSTMConfig.step_hz must be 0 or a positive number, got {self.step_hz!r}")
        if self.step_hz and abs(self.step_hz - self.fps) > 1e-9:
            raise ValueError(f"AudioLSTMConfig.step_hz ({self.step_hz:g}) must equal fps ({self.fps:g}), "
                             "the rate of the training sequences")
        self.mel_mean = float(self.mel_mean)
        if not math.isfinite(self.mel_mean):
            raise ValueError(f"AudioLSTMConfig.mel_mean must be finite, got {self.mel_mean!r}")
        if self.stdev is not None:
            s = [float(v) for v in np.asarray(self.stdev, dtype=np.float64).reshape(-1)]
            if len(s) != self.k or not all(math.isfinite(v) and v > 0 for v in s):
                raise ValueError(f"AudioLSTMConfig.stdev must be {self.k} positive numbers, got {self.stdev!r}")
            self.stdev = s
        if self.names is not None:
            if isinstance(self.names, (str, bytes)) or not all(isinstance(n, str) and n for n in self.names):
                raise ValueError(f"AudioLSTMConfig.names must be a list of {self.k} non-empty strings, got {self.names!r}")
            self.names = [str(n) for n in self.names]
            if len(self.names) != self.k or len(set(self.names)) != self.k:
                raise ValueError(f"AudioLSTMConfig.names must be {self.k} unique names, got {self.names!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "AudioLSTMConfig":
        if not isinstance(d, Mapping):
            raise ValueError(f"AudioLSTMConfig.from_dict needs a mapping, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown AudioLSTMConfig keys: {', '.join(unknown)}")
        return cls(**dict(d))


class AudioMotionModel(nn.Module):
    """Identity encoder (or a learned state) → LSTM initial state; audio window encoder + noise →
    LSTM → bounded x."""

    def __init__(self, config: AudioLSTMConfig):
        super().__init__()
        if isinstance(config, Mapping):
            config = AudioLSTMConfig.from_dict(config)
        self.config = config
        c = config
        ch = c.conv_channels
        if c.w_dim:       # identity encoder: w -> (h0, c0)
            self.id_encoder = nn.Sequential(nn.Linear(c.w_dim, c.hidden), nn.LeakyReLU(0.2),
                                            nn.Linear(c.hidden, 2 * c.hidden))
        else:             # no identity input: one learned initial state (pre-activation h0, c0)
            self.state0 = nn.Parameter(torch.zeros(2 * c.hidden))
        # audio encoder over the [window_frames, n_mels] window (mel bands as channels)
        self.audio_conv = nn.Sequential(
            nn.Conv1d(c.n_mels, ch, kernel_size=5, stride=2, padding=2), nn.LeakyReLU(0.2),
            nn.Conv1d(ch, ch, kernel_size=5, stride=2, padding=2), nn.LeakyReLU(0.2))
        t_out = c.window_frames
        for _ in range(2):
            t_out = (t_out + 2 * 2 - 5) // 2 + 1
        self.audio_fc = nn.Linear(ch * t_out, c.audio_dim)
        # LSTM: gates from [a_t, eps_t] and h_{t-1}; gate order i, f, g, o (as torch.nn.LSTM)
        self.w_ih = nn.Linear(c.audio_dim + c.noise_dim, 4 * c.hidden)
        self.w_hh = nn.Linear(c.hidden, 4 * c.hidden, bias=False)
        self.head = nn.Linear(c.hidden, c.k)
        with torch.no_grad():  # forget-gate bias 1 (standard LSTM practice)
            self.w_ih.bias[c.hidden:2 * c.hidden].fill_(1.0)

    # -- pieces ----------------------------------------------------------------------------------
    @property
    def uses_identity(self) -> bool:
        """Whether the initial state is read from the identity's w (``w_dim > 0``)."""
        return self.config.w_dim > 0

    def init_state(self, w_anchor: Optional[torch.Tensor] = None, batch: Optional[int] = None) -> State:
        """(h0, c0), each [B, hidden]: from identity latents w_anchor [B, w_dim] when the model
        reads the identity; else the learned state, for ``batch`` streams (default: the anchor's
        batch size, else 1; the anchor's values are not read)."""
        dev = self.head.weight.device
        if not self.uses_identity:
            if batch is None:
                batch = 1 if w_anchor is None else int(torch.as_tensor(w_anchor).shape[0])
            hc = self.state0[None].expand(int(batch), -1)
        else:
            if w_anchor is None:
                raise ValueError(f"this model reads the identity: init_state needs w_anchor [B, {self.config.w_dim}]")
            w = torch.as_tensor(w_anchor, dtype=torch.float32, device=dev)
            if w.ndim != 2 or w.shape[1] != self.config.w_dim:
                raise ValueError(f"w_anchor must be [B, {self.config.w_dim}], got {list(w.shape)}")
            hc = self.id_encoder(w)
        h0, c0 = hc.chunk(2, dim=1)
        return torch.tanh(h0).contiguous(), c0.clamp(-self.config.cell_clip, self.config.cell_clip).contiguous()

    def embed_audio(self, mel: torch.Tensor) -> torch.Tensor:
        """Audio embedding [..., audio_dim] of log-mel windows [..., window_frames, n_mels]."""
        c = self.config
        mel = torch.as_tensor(mel, dtype=torch.float32, device=self.head.weight.device)
        if mel.ndim < 2 or tuple(mel.shape[-2:]) != (c.window_frames, c.n_mels):
            raise ValueError(f"mel must be [..., {c.window_frames}, {c.n_mels}], got {list(mel.shape)}")
        lead = mel.shape[:-2]
        z = (mel.reshape(-1, c.window_frames, c.n_mels) - c.mel_mean) / c.mel_std
        z = self.audio_conv(z.transpose(1, 2))              # [N, ch, t_out]
        return self.audio_fc(z.flatten(1)).reshape(*lead, c.audio_dim)

    def unroll(self, audio: torch.Tensor, state: State, noise: Optional[torch.Tensor] = None
               ) -> tuple[torch.Tensor, State]:
        """Run the LSTM over audio embeddings [B, T, audio_dim] (+ noise [B, T, noise_dim]) from
        ``state``; returns (x [B, T, k], final state). ``step`` and ``forward`` both use this."""
        c = self.config
        if audio.ndim != 3 or audio.shape[2] != c.audio_dim:
            raise ValueError(f"audio embeddings must be [B, T, {c.audio_dim}], got {list(audio.shape)}")
        B, T = audio.shape[:2]
        if c.noise_dim:
            if noise is None:
                noise = audio.new_zeros(B, T, c.noise_dim)
            noise = torch.as_tensor(noise, dtype=audio.dtype, device=audio.device)
            if tuple(noise.shape) != (B, T, c.noise_dim):
                raise ValueError(f"noise must be [{B}, {T}, {c.noise_dim}], got {list(noise.shape)}")
            audio = torch.cat([audio, noise], dim=2)
        elif noise is not None and noise.numel():
            raise ValueError("this model has noise_dim = 0 but noise was given")
        h, cell = state
        if h.shape != (B, c.hidden) or cell.shape != (B, c.hidden):
            raise ValueError(f"state must be two [{B}, {c.hidden}] tensors, got {list(h.shape)}, {list(cell.shape)}")
        gates_in = self.w_ih(audio).transpose(0, 1).contiguous()   # [T, B, 4H], all frames at once
        w_hh = self.w_hh.weight.t().contiguous()
        clip = c.cell_clip
        hs = []
        for t in range(T):
            gates = torch.addmm(gates_in[t], h, w_hh)
            i, f, g, o = gates.chunk(4, dim=1)
            cell = torch.sigmoid(f) * cell + torch.sigmoid(i) * torch.tanh(g)
            cell = cell.clamp(-clip, clip)
            h = torch.sigmoid(o) * torch.tanh(cell)
            hs.append(h)
        H = torch.stack(hs, dim=1) if T else audio.new_zeros(B, 0, c.hidden)
        x = c.clamp_sigma * torch.tanh(self.head(H))
        return x, (h, cell)

    # -- public API ------------------------------------------------------------------------------
    def step(self, mel: torch.Tensor, state: State, noise: Optional[torch.Tensor] = None
             ) -> tuple[torch.Tensor, State]:
        """One frame: mel [B, window_frames, n_mels], state (h, c), noise [B, noise_dim] or None
        (zeros) → (x [B, k] in stdev units, new state)."""
        a = self.embed_audio(mel)
        if a.ndim != 2:
            raise ValueError(f"step takes mel [B, {self.config.window_frames}, {self.config.n_mels}], "
                             f"got {list(torch.as_tensor(mel).shape)}")
        if noise is not None:
            noise = torch.as_tensor(noise, dtype=torch.float32, device=a.device)[:, None]
        x, state = self.unroll(a[:, None], state, noise)
        return x[:, 0], state

    def forward(self, mel_seq: torch.Tensor, w_anchor: Optional[torch.Tensor] = None,
                noise: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Training forward: mel_seq [B, T, window_frames, n_mels], w_anchor [B, w_dim] (not read,
        may be None, when ``w_dim = 0``), noise [B, T, noise_dim] or None → x [B, T, k]
        (== ``step`` unrolled from ``init_state``)."""
        a = self.embed_audio(mel_seq)
        if a.ndim != 3:
            raise ValueError(f"forward takes mel_seq [B, T, {self.config.window_frames}, {self.config.n_mels}], "
                             f"got {list(torch.as_tensor(mel_seq).shape)}")
        state = self.init_state(w_anchor) if self.uses_identity else self.init_state(batch=a.shape[0])
        x, _ = self.unroll(a, state, noise)
        return x
