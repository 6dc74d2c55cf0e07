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
import json
import os
import re
import signal
import sys
from pathlib import Path
from typing import Optional, Sequence

import torch

from engine.cli_util import (
    THREADS_HELP,
    ArgumentParser,
    UsageError,
    fail,
    finite_float,
    resolve_device,
    thread_count,
)
from engine.generator_training.config import (
    DEMO_SCHEDULE_KIMG,
    DEMO2_SCHEDULE_KIMG,
    LOG_FILE,
    MAX_EXPORT_BYTES,
    OBJECTIVES,
    RECON_LR,
    RECON_SCALES,
    SCHEDULE_DEFAULTS,
    SCHEDULE_KIMG,
    SCHEDULES,
    STATE_FILE,
    TrainDemoConfig,
    export_bytes,
    recon_config,
)
from engine.generator_training.data import DataError, RenderedFaces, load_images
from engine.generator_training.trainer import DemoTrainer
from engine.runtime import set_threads
from engine.synthesis.networks import GeneratorConfig, demo_config

PROG = "python -m engine.train_demo"


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
                        "'demo2' (with --init V1_GENERATOR) fine-tunes it with the head and eyes free and the "
                        "adversarial term (lr 0.002, --adv-weight 0.3 unless given), "
                        f"{DEMO2_SCHEDULE_KIMG:g} kimg; 'none' leaves them to the options")
    p.add_argument("--adv-weight", type=finite_float, default=argparse.SUPPRESS,
                   help="objective recon: add StyleGAN2's adversarial loss (a discriminator on the renders, R1, "
                        "as --objective gan) with its image gradient scaled to this times the reconstruction's "
                        "(sharpens what an L1 blurs; 0 = off, the default; may change on --resume)")
    p.add_argument("--init", default=argparse.SUPPRESS,
                   help="objective recon: start a new run from an exported generator (a path or 'demo', the "
                        "shipped one) and the motion directions beside it, instead of a random initialisation")
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
    p.add_argument("--threads", type=thread_count, default=None,
                   help=THREADS_HELP + "; resume with the same count for exact reproduction")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


# option name → TrainDemoConfig field; options left out take the saved run's value on --resume
_TRAIN_OPTIONS = {"kimg": "kimg", "batch": "batch", "lr": "lr", "gamma": "r1_gamma", "r1_interval": "r1_interval",
                  "ema_kimg": "ema_kimg", "ema_rampup": "ema_rampup", "style_mixing": "style_mixing",
                  "mbstd_group": "mbstd_group", "snap": "snap_kimg", "grid": "grid", "objective": "objective",
                  "grad_weight": "grad_weight", "l2_weight": "l2_weight", "freeze": "frozen",
                  "motion_weight": "motion_weight", "schedule": "schedule", "adv_weight": "adv_weight",
                  "init": "init"}
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
    if state_path is None and values["schedule"] in SCHEDULE_KIMG and not hasattr(args, "kimg"):
        values["kimg"] = SCHEDULE_KIMG[values["schedule"]]
    if state_path is None:
        for name, value in SCHEDULE_DEFAULTS.get(values["schedule"], {}).items():
            if not hasattr(args, name):
                values[name] = value
    if state_path is None and values["objective"] == "recon" and not hasattr(args, "lr") and \
            "lr" not in SCHEDULE_DEFAULTS.get(values["schedule"], {}):
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
        device = resolve_device(args.device)
        set_threads(args.threads, device)
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
    n_d = sum(p.numel() for p in trainer.D.parameters()) if trainer.D is not None else 0
    r1 = f"R1 gamma {trainer.gamma:g} every {cfg.r1_interval} steps"
    if not recon:
        what = (f"{len(data)} images at {data.resolution} px; G {n_g / 1e6:.2f}M parameters, D {n_d / 1e6:.2f}M; "
                f"batch {cfg.batch}, {r1}")
    else:
        what = (f"decoder of the demo world's code, faces rendered at {data.resolution} px; "
                f"G {n_g / 1e6:.2f}M parameters; batch {cfg.batch}, L1 at scales {RECON_SCALES}, "
                f"schedule {cfg.schedule}"
                + (f"; adversarial term {cfg.adv_weight:g}, D {n_d / 1e6:.2f}M, {r1}" if n_d else "")
                + (f"; from {cfg.init}" if cfg.init and not trainer.resumed else ""))
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
