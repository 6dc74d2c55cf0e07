"""Training the learned motion model (``engine.motion.lstm.AudioMotionModel``) on (audio, x_t) pairs.

Data: a directory of pairs ``NAME.wav`` + ``NAME.npy`` (+ optional ``NAME.json``):

* ``NAME.wav``: int16 PCM, any rate 8-48 kHz, 1-8 channels (read with the stdlib ``wave``
  module, converted to 16 kHz mono by :class:`engine.audio.input.AudioInput`).
* ``NAME.npy``: the per-frame targets, one row per video frame at the clip's fps, either
  control vectors x_t [T, k] (stdev units), or latents, the form an inversion pipeline produces
  from video: w_t [T, w_dim] (one w for all layers) or ws_t [T, num_ws, w_dim]. Latents need a
  :class:`~engine.latent.directions.DirectionSet` (``directions=``): they are turned into x_t by
  the least-squares projection of their offsets from the anchor onto the chosen directions
  (``DirectionSet.project``, with each direction's layer mask and stdev — the same map the
  ``TrajectoryDriver`` uses), so the loss is on x_t and the model drives the same ``LatentPath``.
  The part of the offsets outside the directions' span is lost; :attr:`Clip.projection_loss`
  reports it per clip.
* ``NAME.json`` (optional): ``{"fps": 25.0, "anchor": [w_dim floats]}``; fps defaults to the
  dataset's fps. The anchor (the identity's w, input of the LSTM's state encoder) defaults to
  the zero vector for x_t targets and to the first frame's w for latent targets (whose offsets
  are then measured from it).

Features: :func:`frame_windows` runs the clip through :class:`engine.audio.features.FeatureStream`
(push everything, then flush), so training sees exactly the log-mel windows the streaming driver
sees, lookahead included. The audio may be up to one frame longer or shorter than x_t; both are
cut to the shorter. Anything else (no pairs, a longer mismatch, NaN/Inf, wrong k, unreadable
files) is a :class:`DatasetError` with a one-line message.

Loss per step (one random crop of ``crop_min``..``crop_max`` frames, the same length for every
clip of the batch): ``MSE(x̂, x) + smooth_weight · mean_t ‖x̂_t − x̂_{t−1}‖²``, plus, when
``adv_weight > 0``, MoCoGAN-HD's adversarial term: a :class:`SequenceDiscriminator` (its video
discriminator, over motion sequences) is trained each step to tell the dataset's sequences from
the model's, with the non-saturating logistic loss, ``softplus(D(x̂)) + softplus(−D(x))``, and
the model gets ``adv_weight · softplus(−D(x̂))``. The discriminator sees x sequences: within the
directions' span the latent offset is ``w_t − w = A·x_t`` for a fixed full-rank linear map A
(``DirectionSet.projector``), so judging x sequences is judging the w-sequences the model drives,
without a num_ws·w_dim-wide input. The LSTM state of each crop starts from
``init_state(anchor)``. Adam, optional gradient-norm clipping.

Checkpoints in ``out_dir``: ``motion.safetensors`` (+ its JSON config, via
``save_motion_model``; load with ``load_motion_model``) and ``trainer_state.pt`` (model and
optimizer state, step, the numpy and torch RNG states, both configs), written every
``checkpoint_every`` steps and at the end. ``train(..., resume=True)`` continues from
``trainer_state.pt`` so that N steps + resume to 2N gives the same weights as 2N steps at once
(given the same data, seed and torch build / thread count). ``steps`` is the total step count.
The discriminator and its optimiser are part of ``trainer_state.pt`` (not of the model file).
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np
import torch

from engine.audio.features import HOP_LENGTH, N_MELS, FeatureStream
from engine.audio.input import MAX_RATE, MIN_RATE, SAMPLE_RATE, AudioInput

__all__ = ["frame_windows", "read_wav", "Clip", "MotionDataset", "DatasetError", "TrainConfig",
           "SequenceDiscriminator", "discriminator_loss", "generator_adv_loss",
           "train", "predict", "MODEL_FILE", "STATE_FILE"]

MODEL_FILE = "motion.safetensors"
STATE_FILE = "trainer_state.pt"
LENGTH_TOLERANCE = 1          # frames of audio / x_t length mismatch that are cut silently


class DatasetError(ValueError):
    """A problem with a training data directory (one-line message naming the file)."""


# -- features ------------------------------------------------------------------------------------
def frame_windows(samples_16k: np.ndarray, fps: float = 25.0, window_frames: int = 32,
                  lookahead_ms: float = 40.0) -> np.ndarray:
    """Log-mel windows [T, window_frames, 80] float32, one per video frame, exactly as a
    :class:`FeatureStream` (same fps, lookahead, window) emits them for this signal pushed in
    one piece and flushed (T = frames whose interval starts before the end of the signal)."""
    if not (isinstance(window_frames, (int, np.integer)) and window_frames >= 1):
        raise ValueError(f"window_frames must be a positive integer, got {window_frames!r}")
    window_ms = int(window_frames) * 1000.0 * HOP_LENGTH / SAMPLE_RATE
    stream = FeatureStream(fps=fps, lookahead_ms=lookahead_ms, window_ms=window_ms)
    if stream.window_frames != window_frames:  # pragma: no cover - rounding guard
        raise ValueError(f"window_frames {window_frames} not representable")
    feats = stream.push(np.asarray(samples_16k)) + stream.flush()
    if not feats:
        return np.zeros((0, int(window_frames), N_MELS), dtype=np.float32)
    return np.stack([f.mel for f in feats]).astype(np.float32, copy=False)


def read_wav(path: os.PathLike | str) -> np.ndarray:
    """16 kHz mono float32 samples of an int16 PCM .wav (any rate 8-48 kHz, 1-8 channels)."""
    path = Path(path)
    try:
        with wave.open(os.fspath(path), "rb") as f:
            channels, width, rate, n = f.getnchannels(), f.getsampwidth(), f.getframerate(), f.getnframes()
            raw = f.readframes(n)
    except (wave.Error, EOFError) as exc:
        raise DatasetError(f"{path.name}: not a readable PCM .wav file ({exc})") from None
    if width != 2:
        raise DatasetError(f"{path.name}: {8 * width}-bit samples; only 16-bit PCM .wav is supported")
    if not MIN_RATE <= rate <= MAX_RATE:
        raise DatasetError(f"{path.name}: sample rate {rate} Hz is outside {MIN_RATE}..{MAX_RATE} Hz")
    if not 1 <= channels <= 8:
        raise DatasetError(f"{path.name}: {channels} channels (supported: 1..8)")
    pcm = np.frombuffer(raw, dtype="<i2")
    pcm = pcm[: (pcm.size // channels) * channels]
    conv = AudioInput(rate, channels, "int16")
    out = [conv.push(pcm.copy()), conv.flush()]
    return np.concatenate(out).astype(np.float32, copy=False)


# -- dataset -------------------------------------------------------------------------------------
@dataclass
class Clip:
    name: str
    windows: np.ndarray      # [T, window_frames, 80] float32
    x: np.ndarray            # [T, k] float32
    anchor: np.ndarray       # [w_dim] float32
    projection_loss: Optional[float] = None   # latent targets: dropped fraction of Σ‖Δw‖²

    @property
    def frames(self) -> int:
        return int(self.x.shape[0])


class MotionDataset:
    """Pairs NAME.wav + NAME.npy (+ NAME.json) of a directory, features precomputed in memory.

    Args:
        root: the directory.
        k: expected number of x components (default: taken from the first clip; all must agree).
        w_dim: anchor width (default: from the first anchor in a JSON file, else ``default_w_dim``).
        fps: the dataset fps when a clip has no JSON ``fps``; every clip must have the same fps.
        window_frames, lookahead_ms: the feature settings (must match the model's).
        directions: DirectionSet (or the path of its JSON) that latent targets are projected onto;
            its names (or ``names``) are the x components, in order.
        num_ws: the generator's layer count (needed for [T, w_dim] latent targets; checked
            against [T, num_ws, w_dim] ones).
        targets: ``"x"``, ``"w"`` or ``"auto"`` (3-D → w; 2-D → w when the width is the
            directions' w_dim and not k, else x).
    """

    def __init__(self, root: os.PathLike | str, *, k: Optional[int] = None, w_dim: Optional[int] = None,
                 fps: float = 25.0, window_frames: int = 32, lookahead_ms: float = 40.0,
                 default_w_dim: int = 512, directions: Any = None, names: Optional[Sequence[str]] = None,
                 num_ws: Optional[int] = None, targets: str = "auto"):
        if targets not in ("auto", "x", "w"):
            raise ValueError(f"targets must be 'auto', 'x' or 'w', got {targets!r}")
        self.targets = targets
        self.directions = self._directions(directions)
        self.names: Optional[list[str]] = None
        if self.directions is not None:
            self.names = [str(n) for n in (names if names is not None else self.directions.names)]
            for n in self.names:
                if n not in self.directions:
                    raise DatasetError(f"direction {n!r} is not in the direction set ({', '.join(self.directions.names)})")
            if k is not None and int(k) != len(self.names):
                raise DatasetError(f"k={k} but {len(self.names)} directions are chosen")
            k = len(self.names)
            if w_dim is None:
                w_dim = self.directions.w_dim
        elif targets == "w":
            raise DatasetError("latent (w_t) targets need a DirectionSet to project onto (directions=)")
        self.num_ws = None if num_ws is None else int(num_ws)
        self.root = Path(root)
        self.window_frames = int(window_frames)
        self.lookahead_ms = float(lookahead_ms)
        if not self.root.is_dir():
            raise DatasetError(f"data directory {os.fspath(self.root)!r} does not exist or is not a directory")
        wavs = {p.stem: p for p in self.root.iterdir() if p.suffix.lower() == ".wav" and p.is_file()}
        npys = {p.stem: p for p in self.root.iterdir() if p.suffix.lower() == ".npy" and p.is_file()}
        names = sorted(set(wavs) & set(npys))
        if not names:
            raise DatasetError(f"no NAME.wav + NAME.npy pairs in {os.fspath(self.root)!r} "
                               f"({len(wavs)} .wav, {len(npys)} .npy files)")
        lonely = sorted(set(wavs) ^ set(npys))
        if lonely:
            n = lonely[0]
            have, miss = (".wav", ".npy") if n in wavs else (".npy", ".wav")
            raise DatasetError(f"{n}{have} has no matching {n}{miss} in {os.fspath(self.root)!r}")
        metas = {n: self._read_json(n) for n in names}
        fpss = {float(metas[n].get("fps", fps)) for n in names}
        if len(fpss) != 1:
            raise DatasetError(f"clips have different fps {sorted(fpss)}; resample the x_t files to one fps")
        self.fps = fpss.pop()
        if not (math.isfinite(self.fps) and 0 < self.fps <= 1000):
            raise DatasetError(f"bad fps {self.fps!r}")
        if w_dim is None:
            w_dim = next((len(metas[n]["anchor"]) for n in names if "anchor" in metas[n]), default_w_dim)
        self.w_dim = int(w_dim)
        self.k = None if k is None else int(k)
        self.clips: list[Clip] = [self._load(n, wavs[n], npys[n], metas[n]) for n in names]

    @staticmethod
    def _directions(directions):
        if directions is None:
            return None
        from engine.latent.directions import DirectionSet
        if isinstance(directions, DirectionSet):
            return directions
        try:
            return DirectionSet.load(directions)
        except (OSError, ValueError) as exc:
            raise DatasetError(f"direction set {os.fspath(directions)!r}: {exc}") from None

    def _kind(self, npy: Path, x: np.ndarray) -> str:
        if self.targets != "auto":
            return self.targets
        if x.ndim == 3:
            return "w"
        if (self.directions is not None and x.ndim == 2 and x.shape[1] == self.directions.w_dim
                and x.shape[1] != len(self.names)):
            return "w"
        return "x"

    def _project(self, name: str, npy: Path, rec: np.ndarray, meta: dict) -> tuple[np.ndarray, np.ndarray, float]:
        """(x [T, k], anchor [w_dim], dropped) of a latent recording w_t / ws_t."""
        d = self.directions
        w_dim = d.w_dim
        if rec.ndim not in (2, 3) or rec.shape[-1] != w_dim:
            raise DatasetError(f"{npy.name}: latent targets must be [T, {w_dim}] or [T, num_ws, {w_dim}], "
                               f"got {rec.shape}")
        num_ws = self.num_ws
        if rec.ndim == 3:
            if num_ws is not None and rec.shape[1] != num_ws:
                raise DatasetError(f"{npy.name}: has {rec.shape[1]} layers, the generator has num_ws={num_ws}")
            num_ws = int(rec.shape[1])
        elif num_ws is None:
            raise DatasetError(f"{npy.name}: [T, w_dim] latent targets need num_ws (the generator's layer count)")
        rec = rec.astype(np.float64)
        if "anchor" in meta:
            anchor = np.asarray(meta["anchor"], dtype=np.float64)
            if anchor.shape != (w_dim,):
                raise DatasetError(f"{name}.json: anchor has {anchor.size} values, expected w_dim={w_dim}")
            ref = anchor if rec.ndim == 2 else np.broadcast_to(anchor, rec.shape[1:])
        else:
            ref = rec[0]
            anchor = rec[0] if rec.ndim == 2 else rec[0, 0]
        try:
            x, dropped = d.project(rec - ref[None], num_ws, self.names)
        except ValueError as exc:
            raise DatasetError(f"{npy.name}: {exc}") from None
        return x, anchor, dropped

    def _read_json(self, name: str) -> dict:
        p = self.root / f"{name}.json"
        if not p.is_file():
            return {}
        try:
            meta = json.loads(p.read_text())
        except (OSError, ValueError) as exc:
            raise DatasetError(f"{p.name}: not valid JSON ({exc})") from None
        if not isinstance(meta, dict):
            raise DatasetError(f"{p.name}: expected a JSON object with 'fps' and/or 'anchor'")
        if "fps" in meta and not isinstance(meta["fps"], (int, float)):
            raise DatasetError(f"{p.name}: 'fps' must be a number")
        if "anchor" in meta and not (isinstance(meta["anchor"], list) and meta["anchor"]):
            raise DatasetError(f"{p.name}: 'anchor' must be a list of w_dim numbers")
        return meta

    def _load(self, name: str, wav: Path, npy: Path, meta: dict) -> Clip:
        try:
            x = np.load(npy, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise DatasetError(f"{npy.name}: cannot read ({exc})") from None
        if not np.issubdtype(x.dtype, np.floating):
            raise DatasetError(f"{npy.name}: expected float targets, got {x.dtype}")
        if x.ndim not in (2, 3) or 0 in x.shape:
            raise DatasetError(f"{npy.name}: expected x_t of shape [T, k] (or latents [T, w_dim] / "
                               f"[T, num_ws, w_dim]), got {x.shape}")
        if not np.isfinite(x).all():
            raise DatasetError(f"{npy.name}: contains NaN or infinity")
        dropped = None
        if self._kind(npy, x) == "w":
            if self.directions is None:
                raise DatasetError(f"{npy.name}: latent targets {x.shape} need a DirectionSet to project onto")
            x, anchor_w, dropped = self._project(name, npy, x, meta)
            meta = dict(meta, anchor=[float(v) for v in anchor_w])
        elif x.ndim != 2:
            raise DatasetError(f"{npy.name}: expected x_t of shape [T, k], got {x.shape}")
        if self.k is None:
            self.k = int(x.shape[1])
        elif x.shape[1] != self.k:
            raise DatasetError(f"{npy.name}: has k={x.shape[1]} components, expected k={self.k}")
        anchor = np.asarray(meta.get("anchor", np.zeros(self.w_dim)), dtype=np.float64)
        if anchor.shape != (self.w_dim,):
            raise DatasetError(f"{name}.json: anchor has {anchor.size} values, expected w_dim={self.w_dim}")
        if not np.isfinite(anchor).all():
            raise DatasetError(f"{name}.json: anchor contains NaN or infinity")
        audio = read_wav(wav)
        try:
            win = frame_windows(audio, self.fps, self.window_frames, self.lookahead_ms)
        except ValueError as exc:
            raise DatasetError(f"{wav.name}: {exc}") from None
        t_audio, t_x = win.shape[0], x.shape[0]
        if abs(t_audio - t_x) > LENGTH_TOLERANCE:
            raise DatasetError(f"{name}: audio is {t_audio} frames at {self.fps:g} fps but {npy.name} has "
                               f"{t_x} rows (more than {LENGTH_TOLERANCE} frame apart)")
        t = min(t_audio, t_x)
        if t < 2:
            raise DatasetError(f"{name}: only {t} frame(s); need at least 2")
        return Clip(name, np.ascontiguousarray(win[:t]), np.ascontiguousarray(x[:t], dtype=np.float32),
                    anchor.astype(np.float32), dropped)

    def __len__(self) -> int:
        return len(self.clips)

    @property
    def frames(self) -> int:
        return sum(c.frames for c in self.clips)

    def fingerprint(self) -> list:
        return [[c.name, c.frames] for c in self.clips]

    @classmethod
    def from_clips(cls, clips: Sequence[Clip], *, fps: float = 25.0, window_frames: int = 32,
                   lookahead_ms: float = 40.0) -> "MotionDataset":
        """A dataset of clips already in memory (features from :func:`frame_windows`)."""
        if not clips:
            raise DatasetError("no clips")
        self = cls.__new__(cls)
        self.root, self.fps = None, float(fps)
        self.directions, self.names, self.num_ws, self.targets = None, None, None, "x"
        self.window_frames, self.lookahead_ms = int(window_frames), float(lookahead_ms)
        self.k, self.w_dim = int(clips[0].x.shape[1]), int(clips[0].anchor.shape[0])
        for c in clips:
            if c.x.ndim != 2 or c.x.shape[1] != self.k or c.windows.shape[0] != c.x.shape[0]:
                raise DatasetError(f"{c.name}: x {c.x.shape} / windows {c.windows.shape} do not match")
            if c.windows.shape[1:] != (self.window_frames, N_MELS):
                raise DatasetError(f"{c.name}: windows {c.windows.shape} are not [T, {self.window_frames}, {N_MELS}]")
        self.clips = list(clips)
        return self


# -- training ------------------------------------------------------------------------------------
@dataclass
class TrainConfig:
    """Optimisation settings (the model's own settings live in ``AudioLSTMConfig``)."""
    steps: int = 10_000            # total optimiser steps (resume continues up to this)
    batch_size: int = 8
    crop_min: int = 16             # frames per random crop, uniform in [crop_min, crop_max]
    crop_max: int = 64
    lr: float = 1e-3
    smooth_weight: float = 0.1     # λ of the temporal-smoothness term
    grad_clip: float = 1.0         # max gradient norm (0: off)
    checkpoint_every: int = 1000   # steps between checkpoints (and always at the end)
    adv_weight: float = 0.0        # weight of the adversarial term (0: no discriminator)
    d_lr: float = 1e-3             # discriminator learning rate
    d_hidden: int = 64             # discriminator width

    def validate(self) -> None:
        if self.steps < 0:
            raise ValueError(f"steps must be >= 0, got {self.steps}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if not 2 <= self.crop_min <= self.crop_max:
            raise ValueError(f"need 2 <= crop_min <= crop_max, got {self.crop_min}-{self.crop_max}")
        if self.d_hidden < 1:
            raise ValueError(f"d_hidden must be >= 1, got {self.d_hidden}")
        for name in ("lr", "smooth_weight", "grad_clip", "adv_weight", "d_lr"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
        if self.lr <= 0 or self.d_lr <= 0:
            raise ValueError("lr and d_lr must be > 0")
        if self.checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be >= 1, got {self.checkpoint_every}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


class SequenceDiscriminator(torch.nn.Module):
    """MoCoGAN-HD's video discriminator, over motion sequences: x [B, T, k] → logit [B].

    Input channels per frame are x_t and its first difference x_t − x_{t−1} (0 at t = 0), so
    both the poses and the motion between frames are judged. Three 1-D temporal convolutions
    (kernel 5, LeakyReLU 0.2; the middle one strided) and a mean over time, then a linear layer:
    the score does not depend on the crop length. Works for any T ≥ 1.
    """

    def __init__(self, k: int, hidden: int = 64):
        super().__init__()
        nn = torch.nn
        self.k = int(k)
        self.net = nn.Sequential(
            nn.Conv1d(2 * self.k, hidden, 5, padding=2), nn.LeakyReLU(0.2),
            nn.Conv1d(hidden, hidden, 5, stride=2, padding=2), nn.LeakyReLU(0.2),
            nn.Conv1d(hidden, hidden, 5, padding=2), nn.LeakyReLU(0.2),
        )
        self.out = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 3 or x.shape[-1] != self.k:
            raise ValueError(f"expected x [B, T, {self.k}], got {list(x.shape)}")
        d = torch.cat([torch.zeros_like(x[:, :1]), x[:, 1:] - x[:, :-1]], dim=1)
        h = self.net(torch.cat([x, d], dim=-1).transpose(1, 2))
        return self.out(h.mean(dim=2))[:, 0]


def discriminator_loss(D: torch.nn.Module, real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """Non-saturating logistic loss of D: mean softplus(D(fake)) + mean softplus(−D(real))."""
    F = torch.nn.functional
    return F.softplus(D(fake)).mean() + F.softplus(-D(real)).mean()


def generator_adv_loss(D: torch.nn.Module, fake: torch.Tensor) -> torch.Tensor:
    """The model's adversarial loss: mean softplus(−D(fake))."""
    return torch.nn.functional.softplus(-D(fake)).mean()


def _lstm():
    from engine.motion import lstm
    return lstm


def _sample_batch(dataset: MotionDataset, cfg: TrainConfig, rng: np.random.Generator):
    """One batch: clip indices, a crop length (same for all) and start frames, all from ``rng``."""
    idx = rng.integers(0, len(dataset.clips), size=cfg.batch_size)
    length = int(rng.integers(cfg.crop_min, cfg.crop_max + 1))
    length = min(length, min(dataset.clips[i].frames for i in idx))
    starts = [int(rng.integers(0, dataset.clips[i].frames - length + 1)) for i in idx]
    mel = np.stack([dataset.clips[i].windows[s:s + length] for i, s in zip(idx, starts)])
    x = np.stack([dataset.clips[i].x[s:s + length] for i, s in zip(idx, starts)])
    anchor = np.stack([dataset.clips[i].anchor for i in idx])
    return torch.from_numpy(mel), torch.from_numpy(x), torch.from_numpy(anchor)


def losses(pred: torch.Tensor, target: torch.Tensor, smooth_weight: float):
    """(total, mse, smooth): MSE over all elements + λ · mean over (b, t ≥ 1) of ‖x̂_t − x̂_{t−1}‖²."""
    mse = torch.mean((pred - target) ** 2)
    if pred.shape[1] > 1:
        smooth = torch.mean(torch.sum((pred[:, 1:] - pred[:, :-1]) ** 2, dim=-1))
    else:
        smooth = pred.new_zeros(())
    return mse + smooth_weight * smooth, mse, smooth


def _features(dataset: MotionDataset) -> dict:
    return {"fps": float(dataset.fps), "window_frames": int(dataset.window_frames),
            "lookahead_ms": float(dataset.lookahead_ms)}


def _atomic_torch_save(obj, path: Path) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _save(out_dir: Path, model, opt, step: int, rng: np.random.Generator, gen: torch.Generator,
          cfg: TrainConfig, seed: int, dataset: MotionDataset, history: list, disc=None) -> None:
    lstm = _lstm()
    lstm.save_motion_model(model, out_dir / MODEL_FILE)          # atomic (temporary files + rename)
    extra = {}
    if disc is not None:
        D, d_opt = disc
        extra = {"discriminator": {k: v.detach().clone() for k, v in D.state_dict().items()},
                 "d_optimizer": d_opt.state_dict()}
    _atomic_torch_save({
        **extra,
        "step": step,
        "seed": seed,
        "model": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "optimizer": opt.state_dict(),
        "numpy_rng": json.dumps(rng.bit_generator.state),
        "torch_rng": gen.get_state(),
        "torch_global_rng": torch.get_rng_state(),
        "train_config": json.dumps(cfg.to_dict()),
        "model_config": json.dumps(model.config.to_dict()),
        "dataset": json.dumps(dataset.fingerprint()),
        "features": json.dumps(_features(dataset)),
        "history": json.dumps(history),
    }, out_dir / STATE_FILE)


def train(config: TrainConfig, dataset: MotionDataset, out_dir: os.PathLike | str, *,
          model_config: Any = None, model: Optional[torch.nn.Module] = None, resume: bool = True,
          seed: int = 0, device: str | torch.device = "cpu", progress: bool = True,
          log: Optional[Callable[[dict], None]] = None):
    """Train ``model`` (or a fresh ``AudioMotionModel(model_config)``) on ``dataset``; returns the model.

    ``model_config`` is an ``AudioLSTMConfig`` (or its dict); k, window_frames, fps and n_mels
    must match the dataset. With ``resume=True`` and a ``trainer_state.pt`` in ``out_dir`` the
    run continues from it (its model config wins; the train config must match apart from
    ``steps``/``checkpoint_every``, the dataset must have the same clips and lengths); without
    one it starts at step 0. ``resume=False`` refuses to overwrite an existing state.
    ``model.history`` (attribute set on return) holds the per-step losses of this run.
    """
    lstm = _lstm()
    config.validate()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state_path = out_dir / STATE_FILE
    device = torch.device(device)
    state = None
    if state_path.exists():
        if not resume:
            raise FileExistsError(f"{os.fspath(out_dir)!r} already holds a training run ({STATE_FILE}); "
                                  "resume it or use another output directory")
        state = torch.load(state_path, map_location="cpu", weights_only=True)
        old = json.loads(state["train_config"])
        for key in ("batch_size", "crop_min", "crop_max", "lr", "smooth_weight", "grad_clip", "adv_weight",
                    "d_lr", "d_hidden"):
            if old.get(key, TrainConfig.__dataclass_fields__[key].default) != getattr(config, key):
                raise ValueError(f"resume: {key} was {old[key]!r} in the saved run, now {getattr(config, key)!r}")
        if json.loads(state["dataset"]) != dataset.fingerprint():
            raise ValueError("resume: the dataset's clips or lengths differ from the saved run's")
        if json.loads(state["features"]) != _features(dataset):
            raise ValueError(f"resume: feature settings {_features(dataset)} differ from the saved run's "
                             f"{json.loads(state['features'])}")
        model_config = lstm.AudioLSTMConfig.from_dict(json.loads(state["model_config"]))
        seed = int(state["seed"])
    if model is None:
        if model_config is None:
            raise ValueError("give model_config (AudioLSTMConfig) or model")
        if isinstance(model_config, dict):
            model_config = lstm.AudioLSTMConfig.from_dict(model_config)
        torch.manual_seed(seed)
        model = lstm.AudioMotionModel(model_config)
    mc = model.config
    checks = [("k", mc.k, dataset.k), ("window_frames", mc.window_frames, dataset.window_frames),
              ("n_mels", mc.n_mels, N_MELS)]
    if mc.w_dim:                                     # a model that reads the identity's w
        checks.append(("w_dim", mc.w_dim, dataset.w_dim))
    for what, a, b in checks:
        if int(a) != int(b):
            raise ValueError(f"model {what}={a} but the dataset has {what}={b}")
    if abs(float(mc.fps) - dataset.fps) > 1e-6:
        raise ValueError(f"model fps={mc.fps:g} but the dataset is at {dataset.fps:g} fps")
    if abs(float(mc.lookahead_ms) - dataset.lookahead_ms) > 1e-6:
        raise ValueError(f"model lookahead_ms={mc.lookahead_ms:g} but the dataset's features use "
                         f"{dataset.lookahead_ms:g} ms (the live FeatureStream must use the model's)")
    model.to(device).train()
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    disc = None
    if config.adv_weight > 0:
        with torch.random.fork_rng(devices=[]):      # its init leaves the model's random stream alone
            torch.manual_seed(seed + 1)
            D = SequenceDiscriminator(mc.k, config.d_hidden).to(device).train()
        disc = (D, torch.optim.Adam(D.parameters(), lr=config.d_lr, betas=(0.5, 0.999)))
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    step = 0
    history: list = []
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        if disc is not None:
            disc[0].load_state_dict(state["discriminator"])
            disc[1].load_state_dict(state["d_optimizer"])
        rng.bit_generator.state = json.loads(state["numpy_rng"])
        gen.set_state(state["torch_rng"])
        torch.set_rng_state(state["torch_global_rng"])
        step = int(state["step"])
        history = json.loads(state["history"])
    else:
        torch.manual_seed(seed)
    noise_dim = int(getattr(mc, "noise_dim", 0) or 0)
    run_history: list = []
    bar = None
    if progress and config.steps > step:
        from tqdm import tqdm
        bar = tqdm(total=config.steps, initial=step, desc="train motion", unit="step", dynamic_ncols=True)
    t0 = time.perf_counter()
    while step < config.steps:
        mel, x, anchor = _sample_batch(dataset, config, rng)
        mel, x, anchor = mel.to(device), x.to(device), anchor.to(device)
        noise = None
        if noise_dim:
            noise = torch.randn(x.shape[0], x.shape[1], noise_dim, generator=gen).to(device)
        pred = model(mel, anchor, noise)
        total, mse, smooth = losses(pred, x, config.smooth_weight)
        d_rec = {}
        if disc is not None:
            D, d_opt = disc
            d_loss = discriminator_loss(D, x, pred.detach())
            d_opt.zero_grad(set_to_none=True)
            d_loss.backward()
            d_opt.step()
            for p_ in D.parameters():
                p_.requires_grad_(False)
            adv = generator_adv_loss(D, pred)
            for p_ in D.parameters():
                p_.requires_grad_(True)
            total = total + config.adv_weight * adv
            d_rec = {"adv": float(adv.detach()), "d_loss": float(d_loss.detach())}
        opt.zero_grad(set_to_none=True)
        total.backward()
        if config.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
        opt.step()
        step += 1
        rec = {"step": step, "loss": float(total.detach()), "mse": float(mse.detach()), "smooth": float(smooth.detach()),
               **d_rec}
        run_history.append(rec)
        history.append(rec)
        if log is not None:
            log(rec)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(mse=f"{rec['mse']:.4f}", smooth=f"{rec['smooth']:.4f}", refresh=False)
        if step % config.checkpoint_every == 0 or step == config.steps:
            _save(out_dir, model, opt, step, rng, gen, config, seed, dataset, history, disc)
    if bar is not None:
        bar.close()
    if state is None and config.steps == 0:
        _save(out_dir, model, opt, step, rng, gen, config, seed, dataset, history, disc)
    model.history = run_history
    model.step_time_s = (time.perf_counter() - t0) / max(1, len(run_history))
    model.eval()
    return model


@torch.no_grad()
def predict(model, windows: np.ndarray, anchor: Optional[np.ndarray] = None, noise=None) -> np.ndarray:
    """x̂ [T, k] for one clip's windows [T, window_frames, 80] (the whole sequence, from init_state)."""
    was = model.training
    model.eval()
    p = next(model.parameters())
    mel = torch.as_tensor(np.asarray(windows, dtype=np.float32), device=p.device)[None]
    if anchor is None:
        anchor = np.zeros(model.config.w_dim, dtype=np.float32)
    a = torch.as_tensor(np.asarray(anchor, dtype=np.float32), device=p.device)[None]
    out = model(mel, a, noise)[0].cpu().numpy()
    model.train(was)
    return out
