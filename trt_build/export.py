"""ONNX export of the synthesis network: ``python -m trt_build.export --generator G --out syn.onnx``.

The command line of :mod:`engine.synthesis.onnx_export` (what the graph is, how it is checked,
its JSON sidecar).
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

from engine.cli_util import ArgumentParser, UsageError, fail
from engine.synthesis.checkpoints import CheckpointError, load_generator
from engine.synthesis.onnx_export import DEFAULT_OPSET, ExportError, export_synthesis

PROG = "python -m trt_build.export"
EPILOG = """examples:
  # the built-in demo generator (128 px), checked with onnxruntime at batch 1, 2 and 5
  python -m trt_build.export --out demo_synthesis.onnx

  # an NVlabs / rosinality / StyleCast checkpoint, batch axis up to 32
  python -m trt_build.export --generator ffhq.pkl --out ffhq_synthesis.onnx --max-batch 32
"""


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog=PROG, description=__doc__.split("\n")[0], epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--generator", default="demo", help="checkpoint path or preset name (default demo)")
    p.add_argument("--out", type=Path, required=True, help="the .onnx file to write (plus OUT.json)")
    p.add_argument("--max-batch", type=int, default=64, help="largest batch of the dynamic axis (default 64)")
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    p.add_argument("--noise-mode", choices=("const", "none"), default="const", help="noise inputs (default const)")
    p.add_argument("--tolerance", type=float, default=1e-3, help="max |onnx - torch| accepted (default 1e-3)")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.max_batch < 1:
            raise UsageError("--max-batch must be at least 1")
        if args.out.suffix.lower() != ".onnx":
            raise UsageError(f"--out {os.fspath(args.out)!r} should end in .onnx")
        G = load_generator(args.generator)
        meta = export_synthesis(G, args.out, opset=args.opset, max_batch=args.max_batch, noise_mode=args.noise_mode,
                                tolerance=args.tolerance, source=str(args.generator))
    except (UsageError, CheckpointError, ExportError, ValueError, OSError) as exc:
        fail(PROG, str(exc))
    print(f"wrote {os.fspath(args.out)} ({meta['size_bytes'] / 1e6:.1f} MB, {meta['img_resolution']} px, "
          f"batch 1..{meta['max_batch']}, opset {meta['opset']}) in {meta['export_s']:.1f} s; onnxruntime vs torch: "
          f"max |diff| {meta['max_abs_diff']:.2e} at batch {', '.join(meta['per_batch_abs_diff'])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
