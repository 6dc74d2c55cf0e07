"""Probes: a small CNN that reads the demo world's parameters back from an image.

    python -m engine.demo_world.train_probes --data data/faces --out probes.safetensors [--epochs 8]

One network regresses every motion field (``mouth_open``, ``blink``, ``smile``, head angles,
gaze, ...) and every identity field from a face image, so a generator trained on the renders can
be checked: does moving along a latent direction open the mouth, close the eyes, keep the
identity? Outputs are trained on targets scaled to 0..1 by their ranges and returned in the
fields' own units. The file is safetensors (float32 weights) with the config and the held-out R²
per output in its header metadata and a JSON sidecar.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open
from tqdm import tqdm

from engine.weights_io import save_with_sidecar

from .params import IDENTITY_FIELDS, IDENTITY_RANGES, MOTION_FIELDS, MOTION_RANGES

__all__ = ["OUTPUT_NAMES", "ProbeConfig", "ProbeNet", "Probes", "ProbesError", "train_probes", "r2_scores",
           "load_probes", "save_probes"]

OUTPUT_NAMES = tuple(MOTION_FIELDS) + tuple(IDENTITY_FIELDS)
_RANGES = {**MOTION_RANGES, **IDENTITY_RANGES}
METADATA_KEY = "stylecast_probes"


class ProbesError(ValueError):
    """A probes file or training set is unusable (one-line message)."""


@dataclass(frozen=True)
class ProbeConfig:
    input_size: int = 64          # images are area-resized to this before the network
    width: int = 16               # channels of the stem (doubles per stage, capped at 8x)
    crop: tuple[float, float, float, float] = (0.2, 0.15, 0.8, 0.85)  # x0, y0, x1, y1 as image fractions:
    #                               the demo world's head (eyes and mouth at 0.83x the 128-px scale)
    names: tuple[str, ...] = OUTPUT_NAMES


class ProbeNet(nn.Module):
    """A stride-2 stem, then stages (3x3 conv, BN, ReLU, 3x3 stride-2 conv, BN, ReLU) down to 4x4
    (channels double per stage up to 8x ``width``), then an MLP on the flattened 4x4 map.
    Input NCHW float in [-1, 1] at ``input_size``; output [N, len(names)] in 0..1 units."""

    def __init__(self, cfg: ProbeConfig):
        super().__init__()
        if cfg.input_size < 8 or cfg.input_size & (cfg.input_size - 1):
            raise ValueError(f"input_size must be a power of two >= 8, got {cfg.input_size}")
        # stride-2 stem, then per stage a 3x3 conv and a 3x3 stride-2 conv (BN + ReLU after each)
        c = cfg.width
        layers: list[nn.Module] = [nn.Conv2d(3, c, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c),
                                   nn.ReLU(inplace=True)]
        c_in, res = c, cfg.input_size // 2
        while res > 4:
            c_out = min(2 * c_in, 8 * cfg.width)
            if res < cfg.input_size // 2:   # (no extra conv at the widest map: the most costly one)
                layers += [nn.Conv2d(c_in, c_in, 3, padding=1, bias=False), nn.BatchNorm2d(c_in),
                           nn.ReLU(inplace=True)]
            layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c_out),
                       nn.ReLU(inplace=True)]
            c_in, res = c_out, res // 2
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(c_in * 16, 256), nn.ReLU(inplace=True),
                                  nn.Linear(256, len(cfg.names)))
        self.cfg = cfg

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.cfg.input_size
        assert x.ndim == 4 and x.shape[1:] == (3, s, s), f"expected [N, 3, {s}, {s}], got {tuple(x.shape)}"
        return self.head(self.features(x))


def _to_input(images: np.ndarray | torch.Tensor, size: int,
              crop: tuple[float, float, float, float] = (0.0, 0.0, 1.0, 1.0)) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> the ``crop`` box -> float NCHW in [-1, 1] at ``size`` (area resize)."""
    x = torch.as_tensor(np.asarray(images))
    if x.ndim != 4 or x.shape[-1] != 3 or x.dtype != torch.uint8:
        raise ValueError(f"images must be uint8 [N, H, W, 3], got {x.dtype} {tuple(x.shape)}")
    x = x.permute(0, 3, 1, 2).float()
    h, w = x.shape[-2:]
    x0, y0, x1, y1 = crop
    x = x[..., int(round(y0 * h)):int(round(y1 * h)), int(round(x0 * w)):int(round(x1 * w))]
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="area")
    return x / 127.5 - 1.0


def _scale(names) -> tuple[np.ndarray, np.ndarray]:
    lo = np.array([_RANGES[n][0] for n in names], np.float32)
    hi = np.array([_RANGES[n][1] for n in names], np.float32)
    return lo, hi - lo


class Probes:
    """A trained :class:`ProbeNet` with its config; ``predict`` maps images to named values."""

    def __init__(self, net: ProbeNet, report: dict | None = None):
        self.net = net.eval()
        self.cfg = net.cfg
        self.report = dict(report or {})
        self._lo, self._span = _scale(self.cfg.names)

    @property
    def names(self) -> tuple[str, ...]:
        return self.cfg.names

    @torch.no_grad()
    def predict(self, images: np.ndarray, batch_size: int = 256) -> dict[str, np.ndarray]:
        """images uint8 [N, H, W, 3] (any H = W) -> {name: float32 [N]} in each field's units,
        clipped to its range."""
        outs = []
        for i in range(0, len(images), batch_size):
            outs.append(self.net(_to_input(images[i:i + batch_size], self.cfg.input_size, self.cfg.crop)).numpy())
        y = np.concatenate(outs) if outs else np.zeros((0, len(self.names)), np.float32)
        y = np.clip(y, 0.0, 1.0) * self._span + self._lo
        return {n: y[:, k].astype(np.float32) for k, n in enumerate(self.names)}


def r2_scores(pred: dict[str, np.ndarray], truth: dict[str, np.ndarray]) -> dict[str, float]:
    """Coefficient of determination per name (1 - SSE / SST; SST of a constant target -> nan)."""
    out = {}
    for n, t in truth.items():
        t = np.asarray(t, np.float64)
        sst = float(((t - t.mean()) ** 2).sum())
        out[n] = float("nan") if sst == 0 else 1.0 - float(((np.asarray(pred[n], np.float64) - t) ** 2).sum()) / sst
    return out


def _targets(identity: np.ndarray, motion: np.ndarray, names) -> np.ndarray:
    cols = {**{n: motion[:, k] for k, n in enumerate(MOTION_FIELDS)},
            **{n: identity[:, k] for k, n in enumerate(IDENTITY_FIELDS)}}
    lo, span = _scale(names)
    return ((np.stack([cols[n] for n in names], 1) - lo) / span).astype(np.float32)


def train_probes(images: np.ndarray, identity: np.ndarray, motion: np.ndarray, *, cfg: ProbeConfig = ProbeConfig(),
                 epochs: int = 8, batch_size: int = 32, lr: float = 4e-3, val_fraction: float = 0.1, seed: int = 0,
                 weights: dict[str, float] | None = None, progress: bool = True) -> Probes:
    """Train on ``images`` uint8 [N,H,W,3] with their identity / motion vectors (a data set's
    arrays); the last ``val_fraction`` is held out and its R² per output lands in
    ``probes.report["r2"]``. ``weights``: loss weight per output (default 8 for mouth_open and
    blink, 1 for the rest). Deterministic under ``seed`` on one machine."""
    n = len(images)
    if not (len(identity) == len(motion) == n) or n < 10:
        raise ProbesError(f"need >= 10 samples with matching identity/motion rows, got {n}")
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    n_val = max(1, int(round(n * val_fraction)))
    n_tr = n - n_val
    # resize once, keep uint8-sized memory (area resize, then back to bytes)
    xs = []
    for i in range(0, n, 512):
        x = _to_input(images[i:i + 512], cfg.input_size, cfg.crop)
        xs.append(((x + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8))
    x_all = torch.cat(xs)
    y_all = torch.from_numpy(_targets(identity, motion, cfg.names))
    w = {"mouth_open": 8.0, "blink": 8.0, **(weights or {})}
    w_vec = torch.tensor([w.get(nm, 1.0) for nm in cfg.names])
    net = ProbeNet(cfg)
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    steps_per_epoch = max(1, n_tr // batch_size)
    total = epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total, pct_start=0.15)
    bar = tqdm(total=total, unit="step", desc="probes", disable=not progress, dynamic_ncols=True)
    net.train()
    for _ in range(epochs):
        perm = torch.randperm(n_tr, generator=gen)
        for s in range(steps_per_epoch):
            idx = perm[s * batch_size:(s + 1) * batch_size]
            x = x_all[idx].float() / 127.5 - 1.0
            loss = ((net(x) - y_all[idx]) ** 2 * w_vec).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
    bar.close()
    probes = Probes(net)
    val = slice(n_tr, n)
    pred = probes.predict(images[val])
    truth = {nm: col for nm, col in zip(cfg.names, (y_all[val].numpy() * _scale(cfg.names)[1] + _scale(cfg.names)[0]).T)}
    probes.report = {"r2": r2_scores(pred, truth), "n_train": n_tr, "n_val": n_val, "epochs": epochs}
    return probes


def save_probes(probes: Probes, path: str | os.PathLike) -> Path:
    path = Path(path)
    cfg = probes.cfg
    config = {"format": "stylecast-probes", "version": 1, "input_size": cfg.input_size, "width": cfg.width,
              "crop": list(cfg.crop),
              "names": list(cfg.names), "ranges": {n: list(_RANGES[n]) for n in cfg.names},
              "report": probes.report}
    tensors = {k: v.detach().float().contiguous() for k, v in probes.net.state_dict().items()
               if v.dtype.is_floating_point}
    tensors.update({k: v.detach().to(torch.int64) for k, v in probes.net.state_dict().items()
                    if not v.dtype.is_floating_point})
    text = json.dumps(config, allow_nan=True)
    return save_with_sidecar(tensors, path, path.with_suffix(".json"), {METADATA_KEY: text}, config)


def load_probes(path: str | os.PathLike) -> Probes:
    """Read a file written by :func:`save_probes`. Raises ``ProbesError`` (one line) on a bad file."""
    path = Path(path)
    if not path.is_file():
        raise ProbesError(f"{path}: no such probes file")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = (f.metadata() or {}).get(METADATA_KEY)
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        raise ProbesError(f"{path}: not a probes file ({' '.join(str(e).split())})") from None
    if meta is None:
        raise ProbesError(f"{path}: not a probes file (no {METADATA_KEY} metadata)")
    config = json.loads(meta)
    names = tuple(config["names"])
    unknown = [n for n in names if n not in _RANGES]
    if unknown:
        raise ProbesError(f"{path}: unknown outputs {unknown}")
    crop = tuple(float(v) for v in config.get("crop", (0.0, 0.0, 1.0, 1.0)))
    net = ProbeNet(ProbeConfig(input_size=int(config["input_size"]), width=int(config["width"]), crop=crop,
                               names=names))
    try:
        net.load_state_dict(state)
    except RuntimeError as e:
        raise ProbesError(f"{path}: weights do not match the config ({str(e).splitlines()[0]})") from None
    return Probes(net, config.get("report"))
