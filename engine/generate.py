"""Render images from a StyleGAN2 generator: ``python -m engine.generate --seeds 0-3 --out out``."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from engine.cli_util import (
    ArgumentParser,
    UsageError,
    add_expect_sha256,
    fail,
    finite_float,
    parse_seeds,
    resolve_device,
)
from engine.frames import images_to_uint8
from engine.latent.identity import load_ws_array
from engine.runtime import tune_cpu_allocator
from engine.synthesis.networks import NOISE_MODES, Generator, seed_to_z

PROG = "python -m engine.generate"
EPILOG = """examples:
  # four images of the built-in demo generator (no download, no GPU needed)
  python -m engine.generate --seeds 0-3 --out out

  # an NVlabs network pickle (or a rosinality .pt, or a StyleCast .safetensors), untruncated
  python -m engine.generate --generator ffhq.pkl --seeds 0,7,42 --truncation 1 --out out

  # also save the raw float32 NCHW output in [-1, 1] as seedNNNN.npy
  python -m engine.generate --seeds 0-1 --raw --out out

  # render given latents: FILE.npy holds ws [N, num_ws, w_dim] or w [N, w_dim]
  python -m engine.generate --ws latents.npy --out out
"""


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog=PROG, description=__doc__, epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--generator", default="demo",
                   help="checkpoint path (.pkl NVlabs, .pt rosinality, .safetensors StyleCast) or preset name: "
                        "demo (default, built in), ffhq256, ffhq512, ffhq1024 (downloaded once to the cache)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--seeds", default=None, help="seeds as N, A-B or a comma-separated list (default 0-3)")
    src.add_argument("--ws", type=Path, default=None, help="render latents from a .npy file instead of seeds")
    add_expect_sha256(p)
    p.add_argument("--truncation", type=finite_float, default=0.7,
                   help="truncation psi toward w_avg for seeds (default 0.7, the NVlabs video default and the "
                        "engine's; 1 = none)")
    p.add_argument("--trunc", dest="truncation", type=finite_float, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    p.add_argument("--trunc-cutoff", type=int, default=None,
                   help="truncate only the first N ws (default: all, or the checkpoint's setting)")
    p.add_argument("--noise-mode", choices=NOISE_MODES, default="const", help="noise inputs (default const)")
    p.add_argument("--out", type=Path, default=None, help="output folder (created if missing; required)")
    p.add_argument("--outdir", dest="out", type=Path, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    p.add_argument("--raw", action="store_true", help="also write the float32 NCHW output as .npy")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or a GPU index (default cpu)")
    p.add_argument("--batch-size", type=int, default=4, help="images per synthesis call (default 4)")
    return p


def load_ws_file(path: Path, G: Generator) -> np.ndarray:
    """Read latents from ``path`` as float32 [N, num_ws, w_dim] (``engine.latent.identity.load_ws_array``).

    A 3-D array is per-layer ws; a 2-D array is N single w vectors and a 1-D array one w, each
    broadcast to every layer. Problems are reported as UsageError.
    """
    try:
        return load_ws_array(path, G.num_ws, G.w_dim)
    except (FileNotFoundError, ValueError) as exc:
        raise UsageError(str(exc)) from None


def _write(outdir: Path, stem: str, img: torch.Tensor, raw: bool) -> None:
    Image.fromarray(images_to_uint8(img[None])[0]).save(outdir / f"{stem}.png")
    if raw:
        np.save(outdir / f"{stem}.npy", img[None].float().cpu().numpy())


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.out is None:
        parser.error("the following arguments are required: --out")
    from engine.synthesis.checkpoints import CheckpointError, load_generator

    try:
        if args.batch_size < 1:
            raise UsageError("--batch-size must be at least 1")
        device = resolve_device(args.device)
        if device.type == "cpu":
            tune_cpu_allocator()
        seeds = parse_seeds(args.seeds if args.seeds is not None else "0-3") if args.ws is None else None
        G = load_generator(args.generator, device=device, expect_sha256=args.expect_sha256)
        if args.ws is not None:
            ws_all = load_ws_file(args.ws, G)
            jobs = [(f"ws{i:04d}", ws_all[i]) for i in range(len(ws_all))]
        else:
            jobs = [(f"seed{s:04d}", s) for s in seeds]
        args.out.mkdir(parents=True, exist_ok=True)
    except (UsageError, CheckpointError, OSError) as exc:
        fail(PROG, str(exc))

    cutoff = args.trunc_cutoff if args.trunc_cutoff is not None else G.config.truncation_cutoff
    with torch.inference_mode():
        for start in tqdm(range(0, len(jobs), args.batch_size), desc="generate", unit="batch",
                          disable=len(jobs) <= args.batch_size):
            chunk = jobs[start:start + args.batch_size]
            if args.ws is not None:
                ws = torch.from_numpy(np.stack([j[1] for j in chunk])).to(device)
            else:
                z = np.concatenate([seed_to_z(j[1], G.z_dim) for j in chunk])
                z = torch.from_numpy(z).to(device=device, dtype=torch.float32)
                ws = G.mapping(z, truncation_psi=args.truncation, truncation_cutoff=cutoff)
            img = G.synthesis(ws, noise_mode=args.noise_mode)
            for (stem, _), one in zip(chunk, img):
                _write(args.out, stem, one, args.raw)
    print(f"wrote {len(jobs)} image(s) to {os.fspath(args.out)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
