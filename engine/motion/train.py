"""Training the learned motion model (``engine.motion.lstm.AudioMotionModel``) on (audio, x_t) pairs.

Data: :mod:`engine.motion.dataset` (pairs of audio and per-frame targets, read into clips of
log-mel windows and x_t).

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch
from tqdm import tqdm

from engine.audio.features import N_MELS
from engine.motion.dataset import MotionDataset
from engine.motion.lstm import AudioLSTMConfig, AudioMotionModel
from engine.motion.lstm_file import save_motion_model
from engine.weights_io import atomic_torch_save

__all__ = ["TrainConfig", "SequenceDiscriminator", "discriminator_loss", "generator_adv_loss",
           "train", "predict", "MODEL_FILE", "STATE_FILE"]

MODEL_FILE = "motion.safetensors"
STATE_FILE = "trainer_state.pt"


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
            "lookahead_ms": float(dataset.lookahead_ms), "step_hz": float(getattr(dataset, "step_hz", None) or 0.0)}


def _save(out_dir: Path, model, opt, step: int, rng: np.random.Generator, gen: torch.Generator,
          cfg: TrainConfig, seed: int, dataset: MotionDataset, history: list, disc=None) -> None:
    save_motion_model(model, out_dir / MODEL_FILE)          # atomic (temporary files + rename)
    extra = {}
    if disc is not None:
        D, d_opt = disc
        extra = {"discriminator": {k: v.detach().clone() for k, v in D.state_dict().items()},
                 "d_optimizer": d_opt.state_dict()}
    atomic_torch_save({
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
        saved = {"step_hz": 0.0, **json.loads(state["features"])}      # runs saved before step_hz existed
        if saved != _features(dataset):
            raise ValueError(f"resume: feature settings {_features(dataset)} differ from the saved run's {saved}")
        model_config = AudioLSTMConfig.from_dict(json.loads(state["model_config"]))
        seed = int(state["seed"])
    if model is None:
        if model_config is None:
            raise ValueError("give model_config (AudioLSTMConfig) or model")
        if isinstance(model_config, dict):
            model_config = AudioLSTMConfig.from_dict(model_config)
        torch.manual_seed(seed)
        model = AudioMotionModel(model_config)
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
