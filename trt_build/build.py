"""TensorRT FP16 engines for the synthesis network: ``python -m trt_build.build --generator G``.

The command line of :mod:`engine.synthesis.trt_engine` (how engines are built, checked and cached).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from engine.cli_util import ArgumentParser, UsageError, fail, resolve_device
from engine.synthesis.checkpoints import CheckpointError, load_generator
from engine.synthesis.trt_backend import ensure_engine
from engine.synthesis.trt_engine import TRTBuildError, load_tensorrt

PROG = "python -m trt_build.build"
EPILOG = """examples:
  # FP16 engine of the demo generator for batch 1..16 (cached; a second run just loads it)
  python -m trt_build.build --max-batch 16

  # an FFHQ checkpoint at 1024 px, optimised for batch 8, on GPU 1 (--gpu 1 is the same)
  python -m trt_build.build --generator ffhq.pkl --max-batch 32 --opt-batch 8 --device cuda:1
"""


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog=PROG, description=__doc__.split("\n")[0], epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--generator", default="demo", help="checkpoint path or preset name (default demo)")
    p.add_argument("--device", "--gpu", dest="device", default="cuda:0",
                   help="CUDA device: cuda, cuda:N or a GPU index (default cuda:0); --gpu N is the alias")
    p.add_argument("--max-batch", type=int, default=16, help="largest batch of the profile (default 16)")
    p.add_argument("--opt-batch", type=int, default=None, help="batch the profile is tuned for (default min(4, max))")
    p.add_argument("--precision", choices=("fp16", "fp32"), default="fp16", help="engine precision (default fp16)")
    p.add_argument("--cache-dir", type=Path, default=None, help="engine cache (default $STYLECAST_CACHE/trt)")
    return p


def cuda_device_name(text: str) -> str:
    """``--device`` / ``--gpu``: a GPU index, ``cuda`` or ``cuda:N`` as ``cuda:N`` (whether CUDA is
    there is checked later, by :func:`engine.cli_util.resolve_device`); anything else is a UsageError."""
    name = text.strip().lower()
    if name.isdigit():
        name = f"cuda:{name}"
    if name == "cuda":
        name = "cuda:0"
    head, _, index = name.partition(":")
    if head != "cuda" or not index.isdigit():
        raise UsageError(f"--device must be a CUDA device (cuda, cuda:N or a GPU index), got {text!r}")
    return name


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.max_batch < 1:
            raise UsageError("--max-batch must be at least 1")
        name = cuda_device_name(args.device)
        load_tensorrt()
        device = resolve_device(name)
        G = load_generator(args.generator)
        path, spec, record = ensure_engine(G, device=f"cuda:{device.index or 0}", max_batch=args.max_batch,
                                           opt_batch=args.opt_batch, precision=args.precision,
                                           cache_dir=args.cache_dir)
    except (UsageError, CheckpointError, TRTBuildError, ValueError, OSError) as exc:
        fail(PROG, str(exc))
    print(f"{path} ({spec.precision}, batch 1..{spec.max_batch}, {spec.gpu_name}, TensorRT {spec.trt_version}): "
          f"PSNR {record['psnr_db']:.1f} dB vs float32 torch, built in {record['build_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
