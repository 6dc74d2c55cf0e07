"""Train the audio → motion model: ``python -m engine.train_motion --data DIR --out DIR --steps N``.

DIR holds pairs NAME.wav (int16 PCM, any rate 8-48 kHz) + NAME.npy (x_t [T, k] in stdev units at
the dataset fps, or latents w_t [T, w_dim] / ws_t [T, num_ws, w_dim] with ``--directions``) +
optional NAME.json ({"fps": 25, "anchor": [w_dim floats]}); see ``engine.motion.train``. The model is written to OUT/motion.safetensors (+ motion.json, loadable
with ``engine.motion.lstm_file.load_motion_model`` / usable by ``AudioLSTMDriver``), the resumable
trainer state to OUT/trainer_state.pt, the per-step losses to OUT/train_log.jsonl.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Optional, Sequence

from engine.cli_util import (
    ArgumentParser,
    UsageError,
    fail,
    finite_float,
    resolve_device,
)

PROG = "python -m engine.train_motion"
EPILOG = """examples:
  # train 20k steps on a folder of NAME.wav + NAME.npy pairs (k from the .npy files)
  python -m engine.train_motion --data clips/ --out runs/lstm --steps 20000

  # continue that run up to 40k steps (same data; optimiser, step and RNG states restored)
  python -m engine.train_motion --data clips/ --out runs/lstm --steps 40000 --resume

  # small model, 30 fps data without JSON files, shorter crops, seed 7
  python -m engine.train_motion --data clips/ --out runs/small --steps 2000 --fps 30 \\
      --hidden 64 --audio-dim 64 --crop 16-32 --seed 7

  # latent targets from an inversion pipeline (NAME.npy = ws_t [T, num_ws, w_dim]), projected onto
  # named directions, with the adversarial sequence discriminator on
  python -m engine.train_motion --data inverted/ --out runs/lstm_w --directions directions.json \
      --names mouth_open,jaw,blink --adv-weight 0.05
"""


def _crop(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", text)
    if not m:
        raise argparse.ArgumentTypeError(f"bad crop {text!r}: use N or A-B frames")
    lo = int(m.group(1))
    hi = int(m.group(2)) if m.group(2) is not None else lo
    if not 2 <= lo <= hi:
        raise argparse.ArgumentTypeError(f"bad crop {text!r}: need 2 <= A <= B")
    return lo, hi


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog=PROG, description=__doc__, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="folder of NAME.wav + NAME.npy (+ NAME.json) pairs")
    p.add_argument("--out", type=Path, required=True, help="output folder (created if missing)")
    p.add_argument("--steps", type=int, required=True, help="total optimiser steps (a resumed run continues to this)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out (otherwise --out must not hold one)")
    p.add_argument("--seed", type=int, default=0, help="seed of initialisation, crops and noise (default 0)")
    p.add_argument("--crop", type=_crop, default=(16, 64), help="frames per random crop, A-B (default 16-64)")
    p.add_argument("--batch-size", type=int, default=8, help="crops per step (default 8)")
    p.add_argument("--lr", type=finite_float, default=1e-3, help="Adam learning rate (default 1e-3)")
    p.add_argument("--smooth", type=finite_float, default=0.1,
                   help="weight of the temporal-smoothness loss mean ||x_t - x_{t-1}||^2 (default 0.1)")
    p.add_argument("--grad-clip", type=finite_float, default=1.0, help="max gradient norm, 0 = off (default 1.0)")
    p.add_argument("--checkpoint-every", type=int, default=1000, help="steps between checkpoints (default 1000)")
    p.add_argument("--fps", type=finite_float, default=25.0, help="fps of clips without a JSON fps (default 25)")
    p.add_argument("--lookahead-ms", type=finite_float, default=40.0,
                   help="audio lookahead per frame, as the streaming FeatureStream (default 40)")
    p.add_argument("--window-frames", type=int, default=32, help="log-mel frames (10 ms) per window (default 32)")
    p.add_argument("--step-hz", type=finite_float, default=None,
                   help="give the model its own clock at this step rate, so it runs at any video frame rate "
                        "(e.g. 50; the clips' targets are interpolated at the steps; --crop counts steps); "
                        "default: one step per video frame, at the clips' fps only")
    p.add_argument("--w-dim", type=int, default=None,
                   help="anchor width when no JSON gives an anchor (default: from the anchors, else 512)")
    p.add_argument("--identity", choices=("none", "w"), default="none",
                   help="none (default): the LSTM starts from a learned state and reads audio only, so the "
                        "model drives the named directions of any generator; w: its state is encoded from "
                        "the identity's w (MoCoGAN-HD), tying the model to generators of this w_dim")
    p.add_argument("--hidden", type=int, default=256, help="LSTM width (default 256)")
    p.add_argument("--audio-dim", type=int, default=128, help="audio embedding width (default 128)")
    p.add_argument("--noise-dim", type=int, default=0, help="motion noise inputs per frame (default 0)")
    p.add_argument("--adv-weight", type=finite_float, default=0.0,
                   help="weight of the adversarial term of a sequence discriminator (MoCoGAN-HD's video "
                        "discriminator over motion sequences; default 0: off)")
    p.add_argument("--d-lr", type=finite_float, default=1e-3, help="discriminator learning rate (default 1e-3)")
    p.add_argument("--directions", type=Path, default=None,
                   help="DirectionSet JSON: latent targets (NAME.npy of w_t [T, w_dim] or ws_t [T, num_ws, w_dim]) "
                        "are projected onto its directions; the model stores their names")
    p.add_argument("--names", default=None,
                   help="comma-separated subset of the direction set's names, in output order (default: all)")
    p.add_argument("--num-ws", type=int, default=None,
                   help="the generator's layer count, needed for [T, w_dim] latent targets")
    p.add_argument("--targets", choices=("auto", "x", "w"), default="auto",
                   help="what NAME.npy holds: x_t, latents, or auto (by shape; default)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or a GPU index (default cpu)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from engine.motion.dataset import DatasetError, MotionDataset
    from engine.motion.lstm import AudioLSTMConfig
    from engine.motion.train import STATE_FILE, TrainConfig, train

    try:
        if args.steps < 0:
            raise UsageError("--steps must be >= 0")
        if args.batch_size < 1:
            raise UsageError("--batch-size must be at least 1")
        if args.checkpoint_every < 1:
            raise UsageError("--checkpoint-every must be at least 1")
        if args.window_frames < 1:
            raise UsageError("--window-frames must be at least 1")
        if args.out.exists() and not args.out.is_dir():
            raise UsageError(f"--out {os.fspath(args.out)!r} exists and is not a folder")
        state_exists = (args.out / STATE_FILE).exists()
        if state_exists and not args.resume:
            raise UsageError(f"{os.fspath(args.out)!r} already holds a training run; pass --resume to continue "
                             "it or choose another --out")
        device = resolve_device(args.device)
        cfg = TrainConfig(steps=args.steps, batch_size=args.batch_size, crop_min=args.crop[0],
                          crop_max=args.crop[1], lr=args.lr, smooth_weight=args.smooth,
                          grad_clip=args.grad_clip, checkpoint_every=args.checkpoint_every,
                          adv_weight=args.adv_weight, d_lr=args.d_lr)
        cfg.validate()
        window_frames, lookahead, step_hz = args.window_frames, args.lookahead_ms, args.step_hz
        if state_exists:   # the saved model fixes the feature settings
            import torch
            state = torch.load(args.out / STATE_FILE, map_location="cpu", weights_only=True)
            saved = json.loads(state["features"])
            window_frames, lookahead = int(saved["window_frames"]), float(saved["lookahead_ms"])
            step_hz = saved.get("step_hz") or None
        names = None
        if args.names is not None:
            names = [n.strip() for n in args.names.split(",") if n.strip()]
            if args.directions is None:
                raise UsageError("--names needs --directions")
        if args.num_ws is not None and args.num_ws < 1:
            raise UsageError("--num-ws must be at least 1")
        dataset = MotionDataset(args.data, fps=args.fps, window_frames=window_frames, lookahead_ms=lookahead,
                                w_dim=args.w_dim, directions=args.directions, names=names, num_ws=args.num_ws,
                                targets=args.targets, step_hz=step_hz)
        lossy = [c for c in dataset.clips if c.projection_loss is not None and c.projection_loss > 0.5]
        if lossy:
            print(f"{PROG}: note: the directions capture less than half of the latent motion of "
                  f"{len(lossy)} clip(s) (e.g. {lossy[0].name}: {100 * lossy[0].projection_loss:.0f}% dropped)",
                  file=sys.stderr)
        model_config = None
        if not state_exists:
            model_config = AudioLSTMConfig(window_frames=window_frames,
                                           w_dim=dataset.w_dim if args.identity == "w" else 0, k=dataset.k,
                                           hidden=args.hidden, audio_dim=args.audio_dim,
                                           noise_dim=args.noise_dim, fps=dataset.fps, names=dataset.names,
                                           lookahead_ms=dataset.lookahead_ms, step_hz=step_hz or 0.0)
        args.out.mkdir(parents=True, exist_ok=True)
    except (UsageError, DatasetError, ValueError, OSError) as exc:
        fail(PROG, str(exc))

    log_path = args.out / "train_log.jsonl"
    with open(log_path, "a") as log_file:
        def log(rec: dict) -> None:
            log_file.write(json.dumps(rec) + "\n")
        try:
            model = train(cfg, dataset, args.out, model_config=model_config, resume=args.resume, seed=args.seed,
                          device=device, progress=not args.quiet, log=log)
        except (ValueError, FileExistsError) as exc:
            fail(PROG, str(exc))
    last = model.history[-1] if model.history else None
    msg = f"wrote {os.fspath(args.out / 'motion.safetensors')} ({len(dataset)} clips, {dataset.frames} frames"
    if last is not None:
        msg += f"; step {last['step']}: mse {last['mse']:.4g}, smooth {last['smooth']:.4g}"
    print(msg + ")")
    return 0


if __name__ == "__main__":
    sys.exit(main())
