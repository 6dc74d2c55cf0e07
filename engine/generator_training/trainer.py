"""The demo generator's trainer: G, D, G_ema, their optimisers and RNG streams, one step of the GAN
or reconstruction objective, snapshots, export and resume (the recipe: ``engine.train_demo``'s doc)."""
from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import time
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from engine.demo_world.latent import MOTION_Z, Z_DIM, Z_FIELDS, at_rest, motion_params, motion_x
from engine.frames import images_to_uint8
from engine.generator_training.adversarial import adversarial_backward, discriminator_step
from engine.generator_training.config import (
    DIRECTIONS_FILE,
    EXPORT_FILE,
    POSE_FIELDS,
    RECON_SCALES,
    STATE_FILE,
    STATE_VERSION,
    TrainDemoConfig,
    recon_config,
    scheduled_settings,
)
from engine.generator_training.data import ImageData, RenderedFaces, motion_mask
from engine.generator_training.outputs import (
    export_generator,
    image_grid,
    init_from_export,
    learned_directions,
    save_png,
)
from engine.latent.identity import rest_z
from engine.synthesis.discriminator import Discriminator, DiscriminatorConfig
from engine.synthesis.networks import Generator, GeneratorConfig, demo_config, seed_to_z
from engine.weights_io import atomic_torch_save

__all__ = ["DemoTrainer"]

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
        self.D_config = self.D = self.D_opt = None
        self.gamma = 0.0
        saved_d = state is not None and state.get("D") is not None
        if recon:     # a regression: Adam with momentum; the motion directions learned with G
            self.motion_dirs = torch.nn.Parameter(0.01 * torch.randn(len(MOTION_Z), gen_config.w_dim).to(dev))
            if config.init and state is None:
                init_from_export(self.G, self.motion_dirs, config.init)
            self.G_ema.load_state_dict(self.G.state_dict())
            self.motion_dirs_ema = self.motion_dirs.detach().clone()
            self.G_opt = torch.optim.Adam([*self.G.parameters(), self.motion_dirs], lr=config.lr, betas=(0.9, 0.99),
                                          eps=1e-8)
        if not recon or config.adv_weight > 0 or saved_d:
            self.D_config = (DiscriminatorConfig.from_dict(json.loads(state["discriminator_config"])) if saved_d else
                             DiscriminatorConfig.matching(gen_config, mbstd_group_size=config.mbstd_group,
                                                          conv_clamp=None))
            self.D = Discriminator(self.D_config).to(dev).train().requires_grad_(True)
            self.gamma = config.gamma(data.resolution)
            betas = (0.0, 0.99)
            if not recon:
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
            if saved_d:
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
        exported direction set); the rest takes w = mapping(z), the generator's own path. The
        first ``single_motion`` share of the linear rows moves one field each, and with
        ``motion_weight`` each of those rows' moved pixels count on their own as well."""
        self.apply_schedule()
        G, B = self.G, self.config.batch
        z = torch.randn(B, G.z_dim, generator=self.gen)
        if self.config.pose_scale != 1.0:   # a narrower world: G sees the code of the face it must draw
            idx = [Z_FIELDS.index(f) for f in POSE_FIELDS]
            z[:, idx] *= self.config.pose_scale
        z_in = z
        if self.config.frozen:      # the targets (and the linear path) keep these fields at rest
            z = at_rest(z, self.config.frozen)
        as_image = lambda a: torch.from_numpy(a).to(self.device).permute(0, 3, 1, 2).to(torch.float32) / 127.5 - 1  # noqa: E731
        h = int(round(B * self.config.linear_motion))
        single = int(round(h * self.config.single_motion))
        if single:
            z = self._one_field_each(z, single)
        target = as_image(self.data.render(z.numpy()))
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
            err = (mask * (img - target).abs()).sum(dim=(1, 2, 3))          # per face
            area = mask.sum(dim=(1, 2, 3)) * img.shape[1]
            moved = err.sum() / area.sum().clamp_min(1.0)
            rec["loss_motion"] = float(moved.detach())
            loss = loss + self.config.motion_weight * moved
            if single:    # each one-field face on its own: a glance's few pixels weigh as much as a turn's
                own = (err[:single] / area[:single].clamp_min(1.0)).mean()
                rec["loss_single"] = float(own.detach())
                loss = loss + self.config.motion_weight * own
        self.G_opt.zero_grad(set_to_none=True)
        if self.D is not None and self.config.adv_weight > 0:
            adversarial_backward(self.D, img, loss, self.config.adv_weight, rec)
        else:
            loss.backward()
        self.G_opt.step()
        rec["loss_G"] = float(loss.detach())
        if self.D is not None and self.config.adv_weight > 0:
            self._discriminator_step(img.detach(), target, rec)

    def _one_field_each(self, z: torch.Tensor, count: int) -> torch.Tensor:
        """Codes ``z`` with each of the first ``count`` rows' motion at rest but for one field,
        drawn at random among the fields not frozen (weighted by ``single_weights``; its value
        keeps the row's draw)."""
        free = [f for f in MOTION_Z if f not in self.config.frozen]
        weights = self.config.single_weights
        if weights:      # the weak fields drawn more often (uniform without: the RNG stream of earlier runs)
            p = torch.tensor([float(weights.get(f, 1.0)) for f in free])
            picks = torch.multinomial(p, count, replacement=True, generator=self.gen).tolist()
        else:
            picks = torch.randint(len(free), (count,), generator=self.gen).tolist()
        z = z.clone()
        for i, k in enumerate(picks):
            z[i:i + 1] = at_rest(z[i:i + 1], [f for f in free if f != free[k]])
        return z

    def _discriminator_step(self, fakes: torch.Tensor, reals: torch.Tensor, rec: dict) -> None:
        discriminator_step(self.D, self.D_opt, fakes, reals, rec,
                           gamma=self.gamma if self.step % self.config.r1_interval == 0 else 0.0,
                           r1_interval=self.config.r1_interval)

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

        rec["loss_G"] = float(loss_G.detach())

        # D: minimise the logits of generated images, maximise those of reals; then lazy R1.
        with torch.no_grad():
            fakes = self._run_G()
        self._discriminator_step(fakes, reals, rec)
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
        atomic_torch_save({
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
        """G_ema as float16 safetensors + JSON config in ``out_dir`` (``load_generator`` reads it),
        and its learned directions beside it."""
        path = export_generator(self.G_ema, self.out_dir / EXPORT_FILE, seed=self.seed,
                                source=f"engine.train_demo ({self.config.objective}): {self.nimg / 1000:.3f} kimg, "
                                       f"seed {self.seed}")
        if self.motion_dirs is not None:
            self.export_directions(path)
        return path

    def export_directions(self, generator_path: Path) -> Path:
        """The learned motion directions (G_ema's) as a DirectionSet JSON beside the export
        (``DIRECTIONS_FILE``), tied to the exported generator's hash (:func:`learned_directions`)."""
        ds = learned_directions(self.motion_dirs_ema, generator_path, frozen=self.config.frozen)
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
        save_png(image_grid(np.concatenate(imgs), self.config.grid), path)
        return path

    def write_reals(self) -> Path:
        """A grid of training images; for the recon objective the renders of the samples grid's z."""
        path = self.out_dir / "reals.png"
        if isinstance(self.data, RenderedFaces):
            n = self.config.grid ** 2
            z = np.concatenate([seed_to_z(s, self.G.z_dim) for s in range(n)])
            save_png(image_grid(self.data.render(z), self.config.grid), path)
            return path
        n = min(self.config.grid ** 2, len(self.data))
        idx = np.random.default_rng(self.seed).choice(len(self.data), size=n, replace=False)
        save_png(image_grid(self.data.batch(np.sort(idx)), self.config.grid), path)
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


