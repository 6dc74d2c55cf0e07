"""Train the demo generator on rendered faces: ``python -m engine.train_demo --data DIR --out RUN``.

Adversarial training of our StyleGAN2 :class:`~engine.synthesis.networks.Generator` against the
residual :class:`~engine.synthesis.discriminator.Discriminator`, with StyleGAN2's recipe as
NVlabs stylegan2-ada-pytorch runs it (its ``auto`` config, without augmentation and without the
path-length regulariser):

* non-saturating logistic loss: G minimises softplus(−D(G(z))); D minimises
  softplus(D(G(z))) + softplus(−D(x));
* lazy R1 on reals every ``r1_interval`` steps: (γ/2)·‖∇ₓD(x)‖² · interval, as a separate D
  step; D's Adam then uses lr·c and β^c with c = interval / (interval + 1);
* Adam β = (0, 0.99), ε = 1e-8; default lr 0.0025; γ default 0.0002·R²/batch;
* G_ema: p_ema ← p + β (p_ema − p), β = 0.5^(batch / (ema_kimg·1000)), ema_kimg default
  batch·10/32, ramp-up min(ema_kimg·1000, 0.05·images seen); buffers copied from G;
* style mixing (default probability 0.9: the ws from one crossover layer on come from a second z),
  the mapping's ``w_avg`` tracked with decay 0.995, random noise inputs while training;
* every step uses a fresh z for the G pass and another for the D pass, and one batch of reals;
* float32 throughout; D has G's channel table and no activation clamp (NVlabs clamps D's
  activations at ±256 to protect its float16 layers; a float32 run does not need that, and the
  clamp's backward costs time).

Data (``--data DIR``): ``shard-*.npz`` (or any ``*.npz``) files holding ``images`` uint8
[N, H, W, 3] — the shards ``engine.demo_world.dataset`` writes — or a folder of PNG images.
Images must be square with a power-of-two side, all the same size; they are held in memory.

The run folder (``--out RUN``) receives ``trainer_state.pt`` (G, D, G_ema, optimisers, step, images
seen, numpy and torch RNG states, configs, loss history), ``train_log.jsonl`` (one line per step),
``reals.png`` (a grid of training images), ``samples-KIMG.png`` (G_ema on fixed z: seeds 0..n−1
by the NVlabs convention, ``noise_mode="const"``), and the result
``demo_generator.safetensors`` + ``demo_generator.json`` (G_ema in float16,
``engine.synthesis.checkpoints.save_generator``; ``load_generator(path)`` reads it). State, grid
and export are written every ``--snap`` kimg and at the end. ``--resume`` continues the run so that
N steps + resume to M gives the same weights as M steps at once on the CPU (same data, seed, torch
build and thread count; CUDA kernels need not be deterministic). ``--max-minutes`` stops a run early (state saved, resumable); Ctrl-C does too, at
the next step boundary.
"""
from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import json
import math
import os
import re
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from engine.cli_util import ArgumentParser, UsageError, fail, finite_float, images_to_uint8, resolve_device
from engine.synthesis.discriminator import Discriminator, DiscriminatorConfig
from engine.synthesis.networks import Generator, GeneratorConfig, demo_config, seed_to_z

__all__ = ["DataError", "ImageData", "load_images", "TrainDemoConfig", "DemoTrainer", "parse_generator_config",
           "export_bytes", "STATE_FILE", "EXPORT_FILE", "LOG_FILE", "MAX_EXPORT_BYTES"]

PROG = "python -m engine.train_demo"
STATE_FILE = "trainer_state.pt"
EXPORT_FILE = "demo_generator.safetensors"
DIRECTIONS_FILE = "demo_directions.json"
LOG_FILE = "train_log.jsonl"
MAX_EXPORT_BYTES = 8_000_000        # the shipped float16 weights must stay under 8 MB
STATE_VERSION = 1
OBJECTIVES = ("gan", "recon")
RECON_SCALES = (1, 2, 4)            # L1 at full size and average-pooled by 2 and 4
MOTION_MASK_THRESHOLD = 0.04       # recon --motion-weight: a pixel "moved" when a channel changes by > 2% of range
RECON_LR = 0.008                    # the recon objective's default Adam lr (a regression takes more than a GAN)
#: the fields a schedule sets, and their values before its first phase
SCHEDULED = {"l2_weight": 0.0, "grad_weight": 0.0, "frozen": (), "motion_weight": 0.0}
#: ``--schedule demo``, the shipped demo generator's curriculum (its train_log.jsonl): from each kimg
#: on, these settings (cumulative). Plain L1 first (layout and colour); then edges and squared
#: error (small features); then the head held still (eyes and mouths did not form while the head
#: also turned); then the L1 over moving pixels (mouths on every skin tone). 258 kimg: ~2 h on the
#: 2-core VM.
DEMO_SCHEDULE = ((0.0, {}),
                 (35.0, {"grad_weight": 2.0}),
                 (45.5, {"l2_weight": 4.0}),
                 (58.0, {"frozen": ("yaw", "pitch", "roll", "gaze_x", "gaze_y")}),
                 (200.0, {"motion_weight": 1.0}),
                 (209.0, {"motion_weight": 3.0}))
DEMO_SCHEDULE_KIMG = 258.0
SCHEDULES = {"none": (), "demo": DEMO_SCHEDULE}


def scheduled_settings(schedule: str, kimg: float) -> dict:
    """The SCHEDULED fields' values at ``kimg`` of schedule ``schedule`` ({} for "none")."""
    phases = SCHEDULES[schedule]
    if not phases:
        return {}
    out = dict(SCHEDULED)
    for start, settings in phases:
        if kimg + 1e-9 >= start:
            out.update(settings)
    return out


class DataError(ValueError):
    """A problem with the training images (one-line message naming the folder or file)."""


# -- data ----------------------------------------------------------------------------------------
class ImageData:
    """Training images held in memory as uint8 [n, R, R, 3] arrays (one per shard)."""

    def __init__(self, parts: Sequence[np.ndarray], names: Sequence[str], root: Path, kind: str):
        self.parts = list(parts)
        self.names = list(names)
        self.root, self.kind = root, kind
        self.ends = np.cumsum([p.shape[0] for p in self.parts])
        self.resolution = int(self.parts[0].shape[1])

    def __len__(self) -> int:
        return int(self.ends[-1])

    def batch(self, indices: np.ndarray) -> np.ndarray:
        """uint8 [B, R, R, 3] of the images with these global indices."""
        part = np.searchsorted(self.ends, indices, side="right")
        starts = self.ends - np.array([p.shape[0] for p in self.parts])
        return np.stack([self.parts[k][i - starts[k]] for k, i in zip(part, indices)])

    def fingerprint(self) -> dict:
        """What a resumed run must find again: kind, count, resolution, a digest of names and sizes."""
        h = hashlib.sha1()
        for name, p in zip(self.names, self.parts):
            h.update(f"{name}:{p.shape[0]}\n".encode())
        return {"kind": self.kind, "count": len(self), "resolution": self.resolution, "digest": h.hexdigest()}


def _check_images(arr: np.ndarray, where: str) -> None:
    if arr.dtype != np.uint8:
        raise DataError(f"{where}: images must be uint8, got {arr.dtype}")
    if arr.ndim != 4 or arr.shape[-1] != 3:
        raise DataError(f"{where}: images must be [N, H, W, 3], got {list(arr.shape)}")
    n, h, w, _ = arr.shape
    if h != w or h < 4 or h & (h - 1):
        raise DataError(f"{where}: images are {w}x{h}; they must be square with a power-of-two side >= 4")


def load_images(root: os.PathLike | str, *, progress: bool = False) -> ImageData:
    """Read ``shard-*.npz`` (else ``*.npz``) files with an ``images`` array, else ``*.png`` files."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"data folder {os.fspath(root)!r} does not exist or is not a folder")
    shards = sorted(p for p in root.glob("shard-*.npz") if p.is_file()) or \
        sorted(p for p in root.glob("*.npz") if p.is_file())
    parts: list[np.ndarray] = []
    names: list[str] = []
    if shards:
        for p in shards:
            try:
                with np.load(p, allow_pickle=False) as z:
                    if "images" not in z.files:
                        raise DataError(f"{p.name}: no 'images' array (found: {', '.join(z.files) or 'nothing'})")
                    arr = z["images"]
            except DataError:
                raise
            except Exception as exc:  # zipfile.BadZipFile, ValueError, OSError, EOFError ...
                raise DataError(f"{p.name}: unreadable .npz shard ({type(exc).__name__})") from None
            _check_images(arr, p.name)
            if parts and arr.shape[1:] != parts[0].shape[1:]:
                raise DataError(f"{p.name}: images are {arr.shape[2]}x{arr.shape[1]}, "
                                f"{names[0]}'s are {parts[0].shape[2]}x{parts[0].shape[1]}")
            if arr.shape[0]:
                parts.append(arr)
                names.append(p.name)
        if not parts:
            raise DataError(f"the .npz shards in {os.fspath(root)!r} hold no images")
        return ImageData(parts, names, root, "npz")
    pngs = sorted(p for p in root.iterdir() if p.suffix.lower() == ".png" and p.is_file())
    if not pngs:
        raise DataError(f"no .npz shards or .png images in {os.fspath(root)!r}")
    from PIL import Image
    it = pngs
    if progress:
        from tqdm import tqdm
        it = tqdm(pngs, desc="load images", unit="img", dynamic_ncols=True, leave=False)
    imgs = []
    for p in it:
        try:
            with Image.open(p) as im:
                arr = np.asarray(im.convert("RGB"))
        except Exception as exc:  # PIL.UnidentifiedImageError, OSError ...
            raise DataError(f"{p.name}: unreadable image ({type(exc).__name__})") from None
        if imgs and arr.shape != imgs[0].shape:
            raise DataError(f"{p.name}: image is {arr.shape[1]}x{arr.shape[0]}, "
                            f"{pngs[0].name} is {imgs[0].shape[1]}x{imgs[0].shape[0]}")
        imgs.append(arr)
    stack = np.stack(imgs)
    _check_images(stack, os.fspath(root))
    return ImageData([stack], [p.name for p in pngs], root, "png")


class RenderedFaces:
    """Training images made on the fly for ``--objective recon``: for z ~ N(0, I) of the demo world's
    code (:mod:`engine.demo_world.latent`), the render of ``params_from_z(z)``."""

    kind = "rendered"

    def __init__(self, resolution: int = 128, supersample: int = 4):
        if resolution < 8 or resolution & (resolution - 1):
            raise DataError(f"rendered faces need a power-of-two size >= 8, got {resolution}")
        self.resolution, self.supersample = int(resolution), int(supersample)

    def __len__(self) -> int:
        return 0          # unbounded: every step renders new faces

    def render(self, z: np.ndarray) -> np.ndarray:
        from engine.demo_world.latent import render_z
        return render_z(np.asarray(z, np.float64), self.resolution, supersample=self.supersample)

    def fingerprint(self) -> dict:
        from engine.demo_world.dataset import RENDERER_VERSION
        from engine.demo_world.latent import LATENT_VERSION
        return {"kind": self.kind, "count": 0, "resolution": self.resolution,
                "digest": f"latent {LATENT_VERSION}, renderer {RENDERER_VERSION}, supersample {self.supersample}"}


def motion_mask(target: torch.Tensor, rest: torch.Tensor) -> torch.Tensor:
    """[B, 1, H, W] 0/1 mask of the pixels where images ``target`` differ from ``rest`` (both
    [B, C, H, W] in −1..1) by more than MOTION_MASK_THRESHOLD in any channel, dilated by one pixel."""
    mask = ((target - rest).abs().amax(dim=1, keepdim=True) > MOTION_MASK_THRESHOLD).to(target.dtype)
    return F.max_pool2d(mask, 3, stride=1, padding=1)


# -- configurations ------------------------------------------------------------------------------
def recon_config(base: Optional[GeneratorConfig] = None) -> GeneratorConfig:
    """The generator shape for ``--objective recon``: ``base`` (default the demo shape) with z the
    demo world's code (``Z_DIM`` wide, not normalised) and a mapping network at full learning rate."""
    from engine.demo_world.latent import Z_DIM, rest_pairs
    return dataclasses.replace(base or demo_config(), z_dim=Z_DIM, normalize_z=False, mapping_lr_multiplier=1.0,
                               z_rest=rest_pairs())


def parse_generator_config(spec: str, *, z_dim: int = 128, w_dim: int = 128, mapping_layers: int = 4) -> GeneratorConfig:
    """``demo`` (the 128 px demo generator's shape, :func:`~engine.synthesis.networks.demo_config`)
    or a channel list from 4 px up, ``"128,128,64,32"`` (here 32 px) or ``"4:128,8:128,16:64,32:32"``.
    z_dim / w_dim / mapping_layers apply to channel lists (``demo`` has its own)."""
    spec = spec.strip()
    if spec == "demo":
        return demo_config()
    items = [s.strip() for s in spec.split(",") if s.strip()]
    if not items:
        raise UsageError(f"bad --config {spec!r}: use 'demo' or channels per resolution from 4 px up, e.g. 128,128,64,32")
    channels: dict[int, int] = {}
    for k, item in enumerate(items):
        m = re.fullmatch(r"(?:(\d+)\s*:\s*)?(\d+)", item)
        if not m:
            raise UsageError(f"bad --config entry {item!r}: use C or RES:C")
        res = int(m.group(1)) if m.group(1) else 4 * 2**k
        if res != 4 * 2**k:
            raise UsageError(f"bad --config entry {item!r}: entry {k + 1} is the {4 * 2**k} px resolution")
        if int(m.group(2)) < 1:
            raise UsageError(f"bad --config entry {item!r}: channel counts must be positive")
        channels[res] = int(m.group(2))
    try:
        return GeneratorConfig(z_dim=z_dim, w_dim=w_dim, mapping_layers=mapping_layers, mapping_lr_multiplier=0.01,
                               img_resolution=max(channels), channels=channels, conv_clamp=256.0)
    except ValueError as exc:
        raise UsageError(f"bad --config {spec!r}: {exc}") from None


def export_bytes(config: GeneratorConfig) -> int:
    """Size of the float16 tensors of a generator with this config (the export is this + ~10 kB header)."""
    G = Generator(config)
    return 2 * sum(t.numel() for t in G.state_dict().values())


@dataclass
class TrainDemoConfig:
    """Optimisation settings (the networks' shapes live in GeneratorConfig / DiscriminatorConfig)."""
    kimg: float = 100.0                  # total length in thousands of real images shown to D
    batch: int = 16
    lr: float = 0.0025                   # Adam lr of G and D
    r1_gamma: Optional[float] = None     # None: 0.0002 · R² / batch (NVlabs' auto heuristic)
    r1_interval: int = 16                # lazy R1 every this many steps
    ema_kimg: Optional[float] = None     # G_ema half-life; None: batch · 10 / 32
    ema_rampup: Optional[float] = 0.05   # None: no ramp-up
    style_mixing: float = 0.9
    mbstd_group: int = 4
    w_avg_beta: float = 0.995
    snap_kimg: float = 4.0               # grid + state + export every this many kimg
    grid: int = 4                        # samples grid is grid x grid images
    objective: str = "gan"               # "gan" (StyleGAN2's) or "recon" (decoder of the demo world's code)
    linear_motion: float = 0.5           # recon: share of each batch whose motion enters w linearly
    grad_weight: float = 0.0             # recon: weight of the L1 between image gradients (edges: eyes, mouth)
    l2_weight: float = 0.0               # recon: weight of a squared error next to the L1 (features a median hides)
    frozen: tuple = ()                   # recon: motion fields held at rest in the targets (G learns to ignore them)
    motion_weight: float = 0.0           # recon: weight of an L1 averaged over only the pixels the motion changes
    schedule: str = "none"               # recon: "demo" sets the four fields above by kimg (DEMO_SCHEDULE)

    # settings a resumed run may change
    MUTABLE = ("kimg", "snap_kimg", "grid", "grad_weight", "l2_weight", "frozen", "motion_weight", "schedule")

    def validate(self) -> None:
        if not (math.isfinite(self.kimg) and self.kimg >= 0):
            raise ValueError(f"kimg must be a finite number >= 0, got {self.kimg!r}")
        if self.batch < 1:
            raise ValueError(f"batch must be >= 1, got {self.batch}")
        if self.mbstd_group < 1:
            raise ValueError(f"mbstd_group must be >= 1, got {self.mbstd_group}")
        g = min(self.mbstd_group, self.batch)
        if self.batch % g:
            raise ValueError(f"batch {self.batch} must be a multiple of the minibatch-stddev group size {g}")
        if self.r1_interval < 1:
            raise ValueError(f"r1_interval must be >= 1, got {self.r1_interval}")
        for name in ("lr", "r1_gamma", "ema_kimg", "ema_rampup", "snap_kimg", "grad_weight", "l2_weight",
                     "motion_weight"):
            v = getattr(self, name)
            if v is not None and not (math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {v!r}")
        if self.lr <= 0 or self.snap_kimg <= 0:
            raise ValueError("lr and snap_kimg must be > 0")
        if not 0 <= self.style_mixing <= 1:
            raise ValueError(f"style_mixing must be a probability in [0, 1], got {self.style_mixing!r}")
        if not 0 <= self.w_avg_beta < 1:
            raise ValueError(f"w_avg_beta must be in [0, 1), got {self.w_avg_beta!r}")
        from engine.demo_world.latent import MOTION_Z
        self.frozen = tuple(self.frozen)
        bad = [f for f in self.frozen if f not in MOTION_Z]
        if bad:
            raise ValueError(f"frozen: unknown motion fields {bad} (known: {', '.join(MOTION_Z)})")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.schedule != "none" and self.objective != "recon":
            raise ValueError("a schedule sets the recon objective's loss terms; the gan objective has none")
        if not 0 <= self.linear_motion <= 1:
            raise ValueError(f"linear_motion must be a fraction in [0, 1], got {self.linear_motion!r}")
        if self.objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
        if not 1 <= self.grid <= 16:
            raise ValueError(f"grid must be 1..16, got {self.grid}")

    def gamma(self, resolution: int) -> float:
        return 0.0002 * resolution**2 / self.batch if self.r1_gamma is None else float(self.r1_gamma)

    def ema_half_life_kimg(self) -> float:
        return self.batch * 10 / 32 if self.ema_kimg is None else float(self.ema_kimg)

    @property
    def total_steps(self) -> int:
        return int(math.ceil(self.kimg * 1000 / self.batch - 1e-9))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainDemoConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


# -- training ------------------------------------------------------------------------------------
def _atomic_torch_save(obj, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _image_grid(images: np.ndarray, cols: int) -> np.ndarray:
    """uint8 [n, H, W, 3] → one [rows·H, cols·W, 3] image (missing cells black)."""
    n, h, w, c = images.shape
    rows = int(math.ceil(n / cols))
    grid = np.zeros((rows * h, cols * w, c), np.uint8)
    for i, img in enumerate(images):
        r, q = divmod(i, cols)
        grid[r * h:(r + 1) * h, q * w:(q + 1) * w] = img
    return grid


def _save_png(array: np.ndarray, path: Path) -> None:
    from PIL import Image
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        Image.fromarray(array).save(tmp, format="PNG")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class DemoTrainer:
    """G, D, G_ema, their optimisers and the RNG streams of one run in ``out_dir``.

    A fresh run builds G from ``gen_config`` (NVlabs initialisation: the Generator constructor's)
    and D with G's channel table. With ``resume=True`` and a ``trainer_state.pt`` in ``out_dir``
    everything comes from the state (its configs win; ``gen_config``, when given, must equal the
    saved one; the train config may differ only in ``kimg``/``snap_kimg``/``grid``; the data must
    have the same fingerprint). ``resume=False`` refuses a folder that holds a run.
    """

    def __init__(self, config: TrainDemoConfig, data: ImageData, out_dir: os.PathLike | str, *,
                 gen_config: Optional[GeneratorConfig] = None, seed: int = 0, resume: bool = False,
                 device: str | torch.device = "cpu"):
        config.validate()
        self.out_dir = Path(out_dir)
        self.data = data
        self.device = torch.device(device)
        state_path = self.out_dir / STATE_FILE
        state = None
        if state_path.exists():
            if not resume:
                raise FileExistsError(f"{os.fspath(self.out_dir)!r} already holds a training run ({STATE_FILE}); "
                                      "resume it or use another output folder")
            state = torch.load(state_path, map_location="cpu", weights_only=True)
            if int(state.get("version", 0)) != STATE_VERSION:
                raise ValueError(f"resume: {STATE_FILE} has version {state.get('version')}, expected {STATE_VERSION}")
            old = TrainDemoConfig.from_dict(json.loads(state["train_config"]))
            for f in dataclasses.fields(TrainDemoConfig):
                if f.name not in TrainDemoConfig.MUTABLE and getattr(old, f.name) != getattr(config, f.name):
                    raise ValueError(f"resume: {f.name} was {getattr(old, f.name)!r} in the saved run, "
                                     f"now {getattr(config, f.name)!r}")
            saved_gen = GeneratorConfig.from_dict(json.loads(state["generator_config"]))
            if gen_config is not None and gen_config.to_dict() != saved_gen.to_dict():
                raise ValueError("resume: the generator config differs from the saved run's (leave --config out "
                                 "to continue with the saved one)")
            gen_config = saved_gen
            saved_data = json.loads(state["data"])
            if saved_data != data.fingerprint():
                raise ValueError(f"resume: the training images differ from the saved run's "
                                 f"({saved_data['count']} {saved_data['kind']} images at {saved_data['resolution']} px "
                                 f"then, {len(data)} at {data.resolution} px now, or other files)")
            seed = int(state["seed"])
        recon = config.objective == "recon"
        if recon != isinstance(data, RenderedFaces):
            raise ValueError("the recon objective trains on RenderedFaces (faces rendered from z), the gan objective "
                             "on images; got " + ("images" if recon else "RenderedFaces"))
        if gen_config is None:
            gen_config = recon_config() if recon else demo_config()
        if recon:
            from engine.demo_world.latent import Z_DIM
            if gen_config.z_dim != Z_DIM or gen_config.normalize_z:
                raise ValueError(f"the recon objective needs z_dim {Z_DIM} (the demo world's code) without z "
                                 f"normalisation; got z_dim {gen_config.z_dim}, normalize_z {gen_config.normalize_z}")
        if gen_config.img_resolution != data.resolution or gen_config.img_channels != 3:
            raise ValueError(f"the images are {data.resolution} px but the generator makes "
                             f"{gen_config.img_resolution} px images (choose a --config with "
                             f"{int(math.log2(data.resolution)) - 1} channel entries)")
        self.config, self.seed = config, int(seed)
        dev = self.device
        torch.manual_seed(self.seed)
        self.G = Generator(gen_config).to(dev).train().requires_grad_(True)
        self.G_ema = copy.deepcopy(self.G).eval().requires_grad_(False)
        self.motion_dirs = self.motion_dirs_ema = None
        if recon:     # a regression: no D; Adam with momentum; the motion directions learned with G
            from engine.demo_world.latent import MOTION_Z
            self.D_config = self.D = self.D_opt = None
            self.gamma = 0.0
            self.motion_dirs = torch.nn.Parameter(0.01 * torch.randn(len(MOTION_Z), gen_config.w_dim).to(dev))
            self.motion_dirs_ema = self.motion_dirs.detach().clone()
            self.G_opt = torch.optim.Adam([*self.G.parameters(), self.motion_dirs], lr=config.lr, betas=(0.9, 0.99),
                                          eps=1e-8)
        else:
            self.D_config = (DiscriminatorConfig.from_dict(json.loads(state["discriminator_config"]))
                             if state is not None else
                             DiscriminatorConfig.matching(gen_config, mbstd_group_size=config.mbstd_group,
                                                          conv_clamp=None))
            self.D = Discriminator(self.D_config).to(dev).train().requires_grad_(True)
            self.gamma = config.gamma(data.resolution)
            betas = (0.0, 0.99)
            self.G_opt = torch.optim.Adam(self.G.parameters(), lr=config.lr, betas=betas, eps=1e-8)
            c = config.r1_interval / (config.r1_interval + 1) if self.gamma > 0 else 1.0
            self.D_opt = torch.optim.Adam(self.D.parameters(), lr=config.lr * c, betas=tuple(b**c for b in betas),
                                          eps=1e-8)
        self.rng = np.random.default_rng(self.seed)            # which reals
        self.gen = torch.Generator().manual_seed(self.seed)    # z, style-mixing draws
        self.step = 0
        self.history: list[dict] = []
        self.train_seconds = 0.0
        if state is not None:
            self.G.load_state_dict(state["G"])
            self.G_ema.load_state_dict(state["G_ema"])
            self.G_opt.load_state_dict(state["G_opt"])
            if self.D is not None:
                self.D.load_state_dict(state["D"])
                self.D_opt.load_state_dict(state["D_opt"])
            if self.motion_dirs is not None:
                with torch.no_grad():
                    self.motion_dirs.copy_(state["motion_dirs"])
                    self.motion_dirs_ema.copy_(state["motion_dirs_ema"])
            self.rng.bit_generator.state = json.loads(state["numpy_rng"])
            self.gen.set_state(state["torch_rng"])
            torch.set_rng_state(state["torch_global_rng"])   # random noise inputs of the synthesis
            if self.device.type == "cuda" and state.get("torch_cuda_rng") is not None:
                torch.cuda.set_rng_state(state["torch_cuda_rng"], self.device)
            self.step = int(state["step"])
            self.history = json.loads(state["history"])
            self.train_seconds = float(state.get("train_seconds", 0.0))
        self.resumed = state is not None

    # -- one step ----------------------------------------------------------------------------
    @property
    def nimg(self) -> int:
        return self.step * self.config.batch

    def _reals(self) -> torch.Tensor:
        idx = self.rng.integers(0, len(self.data), size=self.config.batch)
        x = torch.from_numpy(self.data.batch(idx)).to(self.device)
        return x.permute(0, 3, 1, 2).to(torch.float32) / 127.5 - 1

    def _run_G(self, track_w_avg: bool = True) -> torch.Tensor:
        """Images of a fresh z batch (with style mixing), random noise; updates G's w_avg."""
        G, B = self.G, self.config.batch
        z = torch.randn(B, G.z_dim, generator=self.gen).to(self.device)
        z2 = torch.randn(B, G.z_dim, generator=self.gen).to(self.device)
        cutoff = int(torch.randint(1, G.num_ws, (), generator=self.gen)) if G.num_ws > 1 else 1
        mix = float(torch.rand((), generator=self.gen)) < self.config.style_mixing
        w = G.mapping.forward_w(z)
        if track_w_avg:
            with torch.no_grad():
                G.mapping.w_avg.copy_(w.detach().mean(dim=0).lerp(G.mapping.w_avg, self.config.w_avg_beta))
        ws = w.unsqueeze(1).repeat(1, G.num_ws, 1)
        if mix and cutoff < G.num_ws:
            w2 = G.mapping.forward_w(z2)
            ws = torch.cat([ws[:, :cutoff], w2.unsqueeze(1).expand(-1, G.num_ws - cutoff, -1)], dim=1)
        return G.synthesis(ws, noise_mode="random")

    def _recon_step(self, rec: dict) -> None:
        """Decoder step: fresh z, its renders as targets, L1 over RECON_SCALES (G's ``loss_G``).

        The first ``linear_motion`` share of the batch takes w = mapping(z at rest) + Σ_k
        (m_k − rest_k) / scale_k · a_k, with m the code's motion fields, so that the synthesis
        network learns to render each motion as a fixed W direction a_k (``motion_dirs``, the
        exported direction set); the rest takes w = mapping(z), the generator's own path."""
        from engine.demo_world.latent import motion_params, motion_x
        from engine.latent.identity import rest_z
        self.apply_schedule()
        G, B = self.G, self.config.batch
        z = torch.randn(B, G.z_dim, generator=self.gen)
        z_in = z
        if self.config.frozen:      # the targets (and the linear path) keep these fields at rest
            from engine.demo_world.latent import at_rest
            z = at_rest(z, self.config.frozen)
        as_image = lambda a: torch.from_numpy(a).to(self.device).permute(0, 3, 1, 2).to(torch.float32) / 127.5 - 1  # noqa: E731
        target = as_image(self.data.render(z.numpy()))
        h = int(round(B * self.config.linear_motion))
        w = G.mapping.forward_w(z_in.to(self.device))
        with torch.no_grad():
            G.mapping.w_avg.copy_(w.detach().mean(dim=0).lerp(G.mapping.w_avg, self.config.w_avg_beta))
        if h > 0:
            x = torch.from_numpy(motion_x(motion_params(z[:h].numpy()))).to(self.device, torch.float32)
            w_lin = G.mapping.forward_w(rest_z(G, z[:h]).to(self.device)) + x @ self.motion_dirs
            w = torch.cat([w_lin, w[h:]])
        img = G.synthesis(w.unsqueeze(1).repeat(1, G.num_ws, 1), noise_mode="random")
        pool = lambda t, s: F.avg_pool2d(t, s) if s > 1 else t                 # noqa: E731
        scales = [(pool(img, s), pool(target, s)) for s in RECON_SCALES]
        loss = sum(F.l1_loss(a, b) for a, b in scales) / len(scales)
        if self.config.l2_weight > 0:      # a squared error pulls on rare, uncertain features an L1 (a median) drops
            sq = sum(F.mse_loss(a, b) for a, b in scales) / len(scales)
            rec["loss_l2"] = float(sq.detach())
            loss = loss + self.config.l2_weight * sq
        if self.config.grad_weight > 0:    # edges: the small high-contrast features a plain L1 learns last
            dx = lambda t: t[..., :, 1:] - t[..., :, :-1]                     # noqa: E731
            dy = lambda t: t[..., 1:, :] - t[..., :-1, :]                     # noqa: E731
            edge = F.l1_loss(dx(img), dx(target)) + F.l1_loss(dy(img), dy(target))
            rec["loss_edge"] = float(edge.detach())
            loss = loss + self.config.grad_weight * edge
        if self.config.motion_weight > 0:
            # The motion (a mouth, eyelids) covers ~1% of the image, so the whole-image L1 barely sees
            # it, least on dark faces where the mouth is low in contrast. This term is the L1 averaged
            # over only the pixels where the face differs from the same face at rest (3x3 dilated):
            # each face's motion counts as much as the whole image, whatever its size or contrast.
            mask = motion_mask(target, as_image(self.data.render(rest_z(G, z).numpy())))
            moved = (mask * (img - target).abs()).sum() / (mask.sum() * img.shape[1]).clamp_min(1.0)
            rec["loss_motion"] = float(moved.detach())
            loss = loss + self.config.motion_weight * moved
        self.G_opt.zero_grad(set_to_none=True)
        loss.backward()
        self.G_opt.step()
        rec["loss_G"] = float(loss.detach())

    def apply_schedule(self) -> None:
        """Set the scheduled loss settings for the images seen so far (``config.schedule``)."""
        for name, value in scheduled_settings(self.config.schedule, self.nimg / 1000).items():
            setattr(self.config, name, value)

    def train_step(self) -> dict:
        """One step: G (non-saturating), D (logistic), lazy R1 when step % r1_interval == 0, EMA
        (objective "gan"); or a decoder step on rendered faces and EMA (objective "recon")."""
        cfg = self.config
        t0 = time.perf_counter()
        rec: dict = {"step": self.step + 1}
        if cfg.objective == "recon":
            self._recon_step(rec)
            self._finish_step(rec, t0)
            return rec
        reals = self._reals()

        # G: maximise D's logits of generated images.
        self.D.requires_grad_(False)
        fake_logits = self.D(self._run_G())
        loss_G = F.softplus(-fake_logits).mean()
        self.G_opt.zero_grad(set_to_none=True)
        loss_G.backward()
        self.G_opt.step()
        self.D.requires_grad_(True)

        # D: minimise the logits of generated images, maximise those of reals.
        with torch.no_grad():
            fakes = self._run_G()
        fake_logits = self.D(fakes)
        real_logits = self.D(reals)
        loss_D = F.softplus(fake_logits).mean() + F.softplus(-real_logits).mean()
        self.D_opt.zero_grad(set_to_none=True)
        loss_D.backward()
        self.D_opt.step()
        rec.update(loss_G=float(loss_G.detach()), loss_D=float(loss_D.detach()),
                   score_real=float(real_logits.detach().mean()), score_fake=float(fake_logits.detach().mean()))

        # Lazy R1 on reals, scaled by the interval, as its own D step.
        if self.gamma > 0 and self.step % cfg.r1_interval == 0:
            x = reals.detach().requires_grad_(True)
            logits = self.D(x)
            (grad,) = torch.autograd.grad(logits.sum(), x, create_graph=True)
            penalty = grad.square().sum(dim=[1, 2, 3])
            loss_r1 = (penalty * (self.gamma / 2)).mean() * cfg.r1_interval
            self.D_opt.zero_grad(set_to_none=True)
            loss_r1.backward()
            self.D_opt.step()
            rec["r1_penalty"] = float(penalty.detach().mean())
        self._finish_step(rec, t0)
        return rec

    def _finish_step(self, rec: dict, t0: float) -> None:
        """Count the step, update G_ema, time and record it."""
        cfg, B = self.config, self.config.batch
        self.step += 1
        ema_nimg = self.config.ema_half_life_kimg() * 1000
        if cfg.ema_rampup is not None:
            ema_nimg = min(ema_nimg, self.nimg * cfg.ema_rampup)
        beta = 0.5 ** (B / max(ema_nimg, 1e-8))
        with torch.no_grad():
            for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters()):
                p_ema.copy_(p.lerp(p_ema, beta))
            if self.motion_dirs is not None:
                self.motion_dirs_ema.copy_(self.motion_dirs.detach().lerp(self.motion_dirs_ema, beta))
            for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers()):
                b_ema.copy_(b)
        rec["kimg"] = self.nimg / 1000
        rec["sec"] = time.perf_counter() - t0
        self.train_seconds += rec["sec"]
        self.history.append(rec)

    # -- outputs -----------------------------------------------------------------------------
    def save_state(self) -> Path:
        path = self.out_dir / STATE_FILE
        self.out_dir.mkdir(parents=True, exist_ok=True)
        cpu = lambda sd: {k: v.detach().to("cpu").clone() for k, v in sd.items()}  # noqa: E731
        _atomic_torch_save({
            "version": STATE_VERSION,
            "step": self.step,
            "nimg": self.nimg,
            "seed": self.seed,
            "G": cpu(self.G.state_dict()),
            "D": cpu(self.D.state_dict()) if self.D is not None else None,
            "motion_dirs": self.motion_dirs.detach().cpu().clone() if self.motion_dirs is not None else None,
            "motion_dirs_ema": self.motion_dirs_ema.cpu().clone() if self.motion_dirs is not None else None,
            "G_ema": cpu(self.G_ema.state_dict()),
            "G_opt": self.G_opt.state_dict(),
            "D_opt": self.D_opt.state_dict() if self.D_opt is not None else None,
            "numpy_rng": json.dumps(self.rng.bit_generator.state),
            "torch_rng": self.gen.get_state(),
            "torch_global_rng": torch.get_rng_state(),
            "torch_cuda_rng": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
            "train_config": json.dumps(self.config.to_dict()),
            "generator_config": json.dumps(self.G.config.to_dict()),
            "discriminator_config": json.dumps(self.D_config.to_dict() if self.D_config is not None else None),
            "data": json.dumps(self.data.fingerprint()),
            "history": json.dumps(self.history),
            "train_seconds": self.train_seconds,
        }, path)
        return path

    def export(self) -> Path:
        """G_ema as float16 safetensors + JSON config in ``out_dir`` (``load_generator`` reads it)."""
        from engine.synthesis.checkpoints import save_generator
        G = copy.deepcopy(self.G_ema).to("cpu")
        if G.config.z_rest:
            # w_avg, the face truncation pulls toward, is the mean face at rest (random z with the
            # rest coordinates fixed), not the mean over random mouths, eyes and poses
            from engine.latent.identity import rest_z
            gen = torch.Generator().manual_seed(self.seed)
            with torch.no_grad():
                w = G.mapping.forward_w(rest_z(G, torch.randn(4096, G.z_dim, generator=gen)))
                G.mapping.w_avg.copy_(w.mean(dim=0))
        path = save_generator(G, self.out_dir / EXPORT_FILE, dtype=torch.float16,
                              source=f"engine.train_demo ({self.config.objective}): {self.nimg / 1000:.3f} kimg, "
                                     f"seed {self.seed}")
        if self.motion_dirs is not None:
            self.export_directions(path)
        return path

    def export_directions(self, generator_path: Path) -> Path:
        """The learned motion directions (G_ema's) as a DirectionSet JSON beside the export
        (``DIRECTIONS_FILE``), tied to the exported generator's hash: one direction per motion
        role (:data:`engine.demo_world.name_directions.ROLE_OF`), x in standard deviations of the
        motion field over random faces (``MOTION_SCALE``), so x = (value − rest) / scale."""
        from engine.demo_world.latent import MOTION_SCALE, MOTION_Z
        from engine.demo_world.name_directions import ROLE_OF
        from engine.latent.basis import generator_hash
        from engine.latent.directions import Direction, DirectionSet
        from engine.synthesis.checkpoints import load_generator

        h = generator_hash(load_generator(generator_path))
        ds = DirectionSet()
        A = self.motion_dirs_ema.detach().cpu().double().numpy()
        for k, name in enumerate(MOTION_Z):
            if name not in ROLE_OF or name in self.config.frozen:
                continue
            norm = float(np.linalg.norm(A[k]))
            ds.add(Direction(ROLE_OF[name], A[k], stdev=max(norm, 1e-12), origin="learned",
                             source=f"engine.train_demo: learned with the generator; x = ({name} - rest) / "
                                    f"{MOTION_SCALE[name]:.4f}"), checkpoint_hash=h)
        return ds.save(self.out_dir / DIRECTIONS_FILE)

    @torch.no_grad()
    def write_samples(self) -> Path:
        """G_ema on the fixed z of seeds 0..grid²−1, ``noise_mode="const"``, as one PNG."""
        n = self.config.grid ** 2
        z = torch.from_numpy(np.concatenate([seed_to_z(s, self.G_ema.z_dim) for s in range(n)])).to(torch.float32)
        imgs = []
        for i in range(0, n, 16):
            imgs.append(images_to_uint8(self.G_ema(z[i:i + 16].to(self.device), noise_mode="const")))
        path = self.out_dir / f"samples-{self.nimg / 1000:08.3f}kimg.png"
        _save_png(_image_grid(np.concatenate(imgs), self.config.grid), path)
        return path

    def write_reals(self) -> Path:
        """A grid of training images; for the recon objective the renders of the samples grid's z."""
        path = self.out_dir / "reals.png"
        if isinstance(self.data, RenderedFaces):
            n = self.config.grid ** 2
            z = np.concatenate([seed_to_z(s, self.G.z_dim) for s in range(n)])
            _save_png(_image_grid(self.data.render(z), self.config.grid), path)
            return path
        n = min(self.config.grid ** 2, len(self.data))
        idx = np.random.default_rng(self.seed).choice(len(self.data), size=n, replace=False)
        _save_png(_image_grid(self.data.batch(np.sort(idx)), self.config.grid), path)
        return path

    def snapshot(self) -> dict:
        """State, samples grid and export; returns their paths."""
        return {"state": self.save_state(), "samples": self.write_samples(), "export": self.export()}

    # -- the loop ----------------------------------------------------------------------------
    def run(self, *, progress: bool = True, max_seconds: Optional[float] = None,
            log: Optional[Callable[[dict], None]] = None, should_stop: Optional[Callable[[], bool]] = None) -> dict:
        """Train up to ``config.total_steps``; snapshot every ``snap_kimg`` and at the end.

        Stops early after ``max_seconds`` of this call or when ``should_stop()`` turns true (checked
        between steps); the state is saved either way. Returns ``{"steps": ..., "stopped": bool,
        "last": snapshot paths}``.
        """
        self.out_dir.mkdir(parents=True, exist_ok=True)
        if not self.resumed and not (self.out_dir / "reals.png").exists():
            self.write_reals()
        total = self.config.total_steps
        snap_nimg = max(1, int(round(self.config.snap_kimg * 1000)))
        bar = None
        if progress and total > self.step:
            from tqdm import tqdm
            bar = tqdm(total=total, initial=self.step, desc="train demo", unit="step", dynamic_ncols=True)
        start, done, stopped = time.perf_counter(), 0, False
        paths: dict = {}
        try:
            while self.step < total:
                if (max_seconds is not None and time.perf_counter() - start >= max_seconds) or \
                        (should_stop is not None and should_stop()):
                    stopped = True
                    break
                before = self.nimg
                rec = self.train_step()
                done += 1
                if log is not None:
                    log(rec)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(kimg=f"{rec['kimg']:.2f}", G=f"{rec['loss_G']:.3f}",
                                    **({"D": f"{rec['loss_D']:.3f}"} if "loss_D" in rec else {}), refresh=False)
                if self.nimg // snap_nimg > before // snap_nimg and self.step < total:
                    paths = self.snapshot()
        finally:
            if bar is not None:
                bar.close()
        paths = self.snapshot()
        return {"steps": done, "stopped": stopped, "last": paths}


# -- command line --------------------------------------------------------------------------------
EPILOG = """examples:
  # render faces first (engine.demo_world), then train the demo generator for 2 hours at most
  python -m engine.demo_world.dataset --out faces/ --n 20000
  python -m engine.train_demo --data faces/ --out runs/demo --kimg 200 --max-minutes 120

  # continue that run (same data; G, D, G_ema, optimisers, step and RNG states restored)
  python -m engine.train_demo --data faces/ --out runs/demo --kimg 300 --resume

  # a tiny 32 px network on a folder of PNGs, R1 gamma 1, no style mixing
  python -m engine.train_demo --data pngs/ --out runs/tiny --config 64,64,32,16 --gamma 1 --style-mixing 0

The result, RUN/demo_generator.safetensors (+ .json, float16), loads with
engine.synthesis.checkpoints.load_generator and works as --generator RUN/demo_generator.safetensors.
"""


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0], epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=None,
                   help="folder of shard-*.npz (images uint8 [N,H,W,3]) or of .png images (objective gan)")
    p.add_argument("--objective", choices=OBJECTIVES, default=argparse.SUPPRESS,
                   help="gan: StyleGAN2's adversarial training on --data; recon: train G as the decoder of the demo "
                        "world's code z (faces rendered on the fly, L1 loss; no --data). Default: gan with --data, "
                        "recon without; a resumed run keeps its own")
    p.add_argument("--out", type=Path, required=True, help="run folder (created if missing)")
    p.add_argument("--kimg", type=finite_float, default=argparse.SUPPRESS,
                   help="total length in thousands of real images (a resumed run continues to this; default 100, "
                        f"{DEMO_SCHEDULE_KIMG:g} for the recon objective's demo schedule; resumed: the saved run's)")
    p.add_argument("--batch", type=int, default=argparse.SUPPRESS, help="images per step (default 16)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out (otherwise --out must not hold one)")
    p.add_argument("--seed", type=int, default=0, help="seed of initialisation, z, reals order and noise (default 0)")
    p.add_argument("--config", default=None,
                   help="generator shape: 'demo' (128 px, the demo generator's channels; default) or channels "
                        "per resolution from 4 px up, e.g. 128,128,64,32 for 32 px")
    p.add_argument("--z-dim", type=int, default=128, help="z and w width for a channel-list --config (default 128)")
    p.add_argument("--mapping-layers", type=int, default=4, help="mapping layers for a channel-list --config (default 4)")
    p.add_argument("--lr", type=finite_float, default=argparse.SUPPRESS,
                   help="Adam learning rate of G and D (default 0.0025; objective recon: 0.008)")
    p.add_argument("--gamma", type=finite_float, default=argparse.SUPPRESS,
                   help="R1 weight gamma (default 0.0002 * resolution^2 / batch; 0 turns R1 off)")
    p.add_argument("--r1-interval", type=int, default=argparse.SUPPRESS, help="lazy R1 every this many steps (default 16)")
    p.add_argument("--ema-kimg", type=finite_float, default=argparse.SUPPRESS, help="G_ema half-life in kimg (default batch * 10 / 32)")
    p.add_argument("--ema-rampup", type=finite_float, default=argparse.SUPPRESS,
                   help="G_ema half-life ramp-up as a fraction of images seen, 0 = none (default 0.05)")
    p.add_argument("--style-mixing", type=finite_float, default=argparse.SUPPRESS, help="style-mixing probability (default 0.9)")
    p.add_argument("--grad-weight", type=finite_float, default=argparse.SUPPRESS,
                   help="objective recon: weight of an L1 between the image gradients of output and render "
                        "(sharpens small features; may change on --resume; default 0)")
    p.add_argument("--l2-weight", type=finite_float, default=argparse.SUPPRESS,
                   help="objective recon: weight of a squared-error term next to the L1 (may change on --resume; "
                        "default 0)")
    p.add_argument("--motion-weight", type=finite_float, default=argparse.SUPPRESS,
                   help="objective recon: weight of an L1 averaged over only the pixels the motion changes "
                        "(render vs the same face at rest): mouths and eyelids learned as well on dark faces as "
                        "on light ones (may change on --resume; default 0)")
    p.add_argument("--schedule", choices=tuple(SCHEDULES), default=argparse.SUPPRESS,
                   help="objective recon: 'demo' (the default for a new run that sets none of --l2-weight, "
                        "--grad-weight, --freeze, --motion-weight) sets those four by kimg as the shipped "
                        f"generator was trained, for {DEMO_SCHEDULE_KIMG:g} kimg unless --kimg says otherwise; "
                        "'none' leaves them to the options")
    p.add_argument("--freeze", type=lambda t: tuple(x.strip() for x in t.split(",") if x.strip()),
                   default=argparse.SUPPRESS,
                   help="objective recon: motion fields held at rest in the rendered targets, comma-separated "
                        "(e.g. yaw,pitch,roll,gaze_x,gaze_y: a world without head motion; G learns to ignore "
                        "their z coordinates and exports no direction for them; may change on --resume)")
    p.add_argument("--mbstd-group", type=int, default=argparse.SUPPRESS, help="minibatch-stddev group size (default 4)")
    p.add_argument("--snap", type=finite_float, default=argparse.SUPPRESS,
                   help="write samples grid, state and export every this many kimg (default 4)")
    p.add_argument("--grid", type=int, default=argparse.SUPPRESS, help="samples grid side in images (default 4: 16 images)")
    p.add_argument("--max-minutes", type=finite_float, default=None,
                   help="stop after this many minutes of training (state saved; --resume continues)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or a GPU index (default cpu)")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads of torch (default: torch's choice, one per core; on a machine shared with "
                        "another busy process 1 can be faster than 2); resume with the same count for exact "
                        "reproduction")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


# option name → TrainDemoConfig field; options left out take the saved run's value on --resume
_TRAIN_OPTIONS = {"kimg": "kimg", "batch": "batch", "lr": "lr", "gamma": "r1_gamma", "r1_interval": "r1_interval",
                  "ema_kimg": "ema_kimg", "ema_rampup": "ema_rampup", "style_mixing": "style_mixing",
                  "mbstd_group": "mbstd_group", "snap": "snap_kimg", "grid": "grid", "objective": "objective",
                  "grad_weight": "grad_weight", "l2_weight": "l2_weight", "freeze": "frozen",
                  "motion_weight": "motion_weight", "schedule": "schedule"}
_SCHEDULED_OPTIONS = ("grad_weight", "l2_weight", "freeze", "motion_weight")


def _train_config(args: argparse.Namespace, state_path: Optional[Path]) -> TrainDemoConfig:
    values = TrainDemoConfig().to_dict()
    if state_path is not None:
        try:
            state = torch.load(state_path, map_location="cpu", weights_only=True)
            values.update(TrainDemoConfig.from_dict(json.loads(state["train_config"])).to_dict())
        except Exception as exc:  # a truncated or foreign file: pickle / zip / key errors
            raise UsageError(f"{state_path}: unreadable trainer state ({type(exc).__name__}); "
                             "delete it to start over") from None
    for opt, name in _TRAIN_OPTIONS.items():
        if hasattr(args, opt):
            values[name] = getattr(args, opt)
    explicit = [f"--{o.replace('_', '-')}" for o in _SCHEDULED_OPTIONS if hasattr(args, o)]
    if explicit:          # options that a schedule would overwrite: the schedule is off
        if getattr(args, "schedule", "none") != "none":
            raise UsageError(f"--schedule {args.schedule} sets {', '.join(explicit)} itself; "
                             "give --schedule none to set them by hand")
        values["schedule"] = "none"
    elif state_path is None and values["objective"] == "recon" and not hasattr(args, "schedule"):
        values["schedule"] = "demo"
    if state_path is None and values["schedule"] == "demo" and not hasattr(args, "kimg"):
        values["kimg"] = DEMO_SCHEDULE_KIMG
    if state_path is None and values["objective"] == "recon" and not hasattr(args, "lr"):
        values["lr"] = RECON_LR
    if values["ema_rampup"] == 0:
        values["ema_rampup"] = None
    return TrainDemoConfig(**values)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    torch.set_flush_denormal(True)   # tiny activations late in training otherwise slow CPU convolutions down
    try:
        if args.out.exists() and not args.out.is_dir():
            raise UsageError(f"--out {os.fspath(args.out)!r} exists and is not a folder")
        state_exists = (args.out / STATE_FILE).exists()
        if state_exists and not args.resume:
            raise UsageError(f"{os.fspath(args.out)!r} already holds a training run; pass --resume to continue "
                             "it or choose another --out")
        if args.max_minutes is not None and args.max_minutes <= 0:
            raise UsageError("--max-minutes must be > 0")
        if args.z_dim < 1 or args.mapping_layers < 1:
            raise UsageError("--z-dim and --mapping-layers must be at least 1")
        if args.threads is not None:
            if args.threads < 1:
                raise UsageError("--threads must be at least 1")
            torch.set_num_threads(args.threads)
        device = resolve_device(args.device)
        if not hasattr(args, "objective") and not state_exists:
            args.objective = "gan" if args.data is not None else "recon"
        cfg = _train_config(args, args.out / STATE_FILE if state_exists else None)
        cfg.validate()
        recon = cfg.objective == "recon"
        if recon and args.data is not None:
            raise UsageError("--objective recon renders its faces; leave --data out")
        if not recon and args.data is None:
            raise UsageError("--objective gan needs --data (a folder of images)")
        gen_config = None
        if args.config is not None or not state_exists:
            gen_config = parse_generator_config(args.config or "demo", z_dim=args.z_dim, w_dim=args.z_dim,
                                                mapping_layers=args.mapping_layers)
            if recon:
                gen_config = recon_config(gen_config)
            size = export_bytes(gen_config)
            if size > MAX_EXPORT_BYTES:
                raise UsageError(f"this generator's float16 weights take {size / 1e6:.1f} MB; the demo generator "
                                 f"must stay under {MAX_EXPORT_BYTES / 1e6:.0f} MB (narrow the --config)")
        if recon:
            size = gen_config.img_resolution if gen_config is not None else json.loads(
                torch.load(args.out / STATE_FILE, map_location="cpu", weights_only=True)["data"])["resolution"]
            data = RenderedFaces(size)
        else:
            data = load_images(args.data, progress=not args.quiet)
        trainer = DemoTrainer(cfg, data, args.out, gen_config=gen_config, seed=args.seed, resume=args.resume,
                              device=device)
        args.out.mkdir(parents=True, exist_ok=True)
    except (UsageError, DataError, ValueError, FileExistsError, OSError) as exc:
        fail(PROG, str(exc))

    interrupted = {"flag": False}

    def on_sigint(signum, frame):
        if interrupted["flag"]:
            raise KeyboardInterrupt
        interrupted["flag"] = True
        sys.stderr.write(f"\n{PROG}: stopping after this step (Ctrl-C again to abort without saving)\n")

    try:
        old_handler = signal.signal(signal.SIGINT, on_sigint)
    except ValueError:      # not the main thread: Ctrl-C handling stays as it is
        old_handler = None
    G = trainer.G
    n_g = sum(p.numel() for p in G.parameters())
    if trainer.D is not None:
        n_d = sum(p.numel() for p in trainer.D.parameters())
        what = (f"{len(data)} images at {data.resolution} px; G {n_g / 1e6:.2f}M parameters, D {n_d / 1e6:.2f}M; "
                f"batch {cfg.batch}, R1 gamma {trainer.gamma:g} every {cfg.r1_interval} steps")
    else:
        what = (f"decoder of the demo world's code, faces rendered at {data.resolution} px; "
                f"G {n_g / 1e6:.2f}M parameters; batch {cfg.batch}, L1 at scales {RECON_SCALES}, "
                f"schedule {cfg.schedule}")
    print(f"{PROG}: {what}, G_ema half-life {cfg.ema_half_life_kimg():g} kimg; "
          f"{'resuming at' if trainer.resumed else 'starting at'} {trainer.nimg / 1000:.3f} of {cfg.kimg:g} kimg",
          file=sys.stderr)
    log_path = args.out / LOG_FILE
    if trainer.resumed:   # the log holds exactly the saved steps, then this run's
        log_path.write_text("".join(json.dumps(r) + "\n" for r in trainer.history))
    try:
        with open(log_path, "a", buffering=1) as log_file:    # line-buffered: tail -f works
            def log(rec: dict) -> None:
                log_file.write(json.dumps(rec) + "\n")
            result = trainer.run(progress=not args.quiet,
                                 max_seconds=None if args.max_minutes is None else 60 * args.max_minutes,
                                 log=log, should_stop=lambda: interrupted["flag"])
    except KeyboardInterrupt:
        fail(PROG, f"interrupted; the last saved state ({trainer.out_dir / STATE_FILE}) can be resumed")
    finally:
        if old_handler is not None:
            signal.signal(signal.SIGINT, old_handler)
    export = result["last"]["export"]
    size = export.stat().st_size
    last = trainer.history[-1] if trainer.history else None
    msg = (f"wrote {os.fspath(export)} ({size / 1e6:.2f} MB float16, {trainer.nimg / 1000:.3f} kimg"
           + (f"; step {last['step']}: loss G {last['loss_G']:.3f}"
              + (f", D {last['loss_D']:.3f}" if "loss_D" in last else "") if last else "")
           + f"; samples {result['last']['samples'].name})")
    print(msg)
    if size > MAX_EXPORT_BYTES:
        print(f"{PROG}: warning: {export.name} is over {MAX_EXPORT_BYTES / 1e6:.0f} MB", file=sys.stderr)
    if result["stopped"]:
        print(f"{PROG}: stopped early at {trainer.nimg / 1000:.3f} kimg; --resume continues the run", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
