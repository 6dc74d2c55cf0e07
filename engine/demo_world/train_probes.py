"""Train the demo world's probes: ``python -m engine.demo_world.train_probes --data faces/ --out probes.safetensors``.

The command line of :mod:`engine.demo_world.probes` (what the probes are and read).
"""
from __future__ import annotations

import argparse
import os
import sys

from engine.cli_util import THREADS_HELP, ArgumentParser, UsageError, fail, thread_count
from engine.demo_world.dataset import load_shards
from engine.demo_world.probes import OUTPUT_NAMES, ProbeConfig, ProbesError, save_probes, train_probes
from engine.runtime import set_threads


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="python -m engine.demo_world.train_probes",
        description="Train the probes (mouth_open, blink, every motion and identity field) on a demo data set.",
        epilog="examples:\n  python -m engine.demo_world.train_probes --data data/faces --out probes.safetensors\n"
               "  python -m engine.demo_world.train_probes --data data/faces --out probes.safetensors "
               "--limit 12000 --epochs 6 --threads 1",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="data-set folder (python -m engine.demo_world.dataset)")
    parser.add_argument("--out", required=True, help="output .safetensors")
    parser.add_argument("--limit", type=int, default=None, help="use the first N samples (default: all)")
    parser.add_argument("--epochs", type=int, default=8, help="passes over the training split (default 8)")
    parser.add_argument("--batch-size", type=int, default=32, help="images per optimiser step (default 32)")
    parser.add_argument("--lr", type=float, default=4e-3, help="Adam learning rate (default 4e-3)")
    parser.add_argument("--input-size", type=int, default=64, help="network input size (power of two; default 64)")
    parser.add_argument("--width", type=int, default=16, help="stem channels, doubling per stage up to 8x (default 16)")
    parser.add_argument("--val", type=float, default=0.1, help="held-out fraction (default 0.1)")
    parser.add_argument("--seed", type=int, default=0, help="seed of initialisation and batch order (default 0)")
    parser.add_argument("--threads", type=thread_count, default=None, help=THREADS_HELP)
    parser.add_argument("--names", default=None,
                        help="comma-separated outputs to train (default: every motion and identity field); e.g. "
                             "gaze_x,gaze_y,blink for an eye probe")
    parser.add_argument("--crop", default=None,
                        help="x0,y0,x1,y1 as image fractions, the region the network sees (default "
                             f"{','.join(f'{v:g}' for v in ProbeConfig().crop)}, the head; e.g. 0.3,0.3,0.7,0.56 "
                             "for the eyes)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _crop(text: str | None) -> tuple:
    if text is None:
        return ProbeConfig().crop
    try:
        box = tuple(float(v) for v in text.split(","))
    except ValueError:
        box = ()
    if len(box) != 4 or not (0 <= box[0] < box[2] <= 1 and 0 <= box[1] < box[3] <= 1):
        raise UsageError(f"--crop must be x0,y0,x1,y1 with 0 <= x0 < x1 <= 1 and 0 <= y0 < y1 <= 1, got {text!r}")
    return box


def _names(text: str | None) -> tuple:
    if text is None:
        return OUTPUT_NAMES
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    bad = [n for n in names if n not in OUTPUT_NAMES]
    if not names or bad:
        raise UsageError(f"--names: unknown outputs {bad or [text]} (known: {', '.join(OUTPUT_NAMES)})")
    return names


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.epochs < 1 or args.batch_size < 1:
        parser.error("--epochs and --batch-size must be >= 1")
    if not 0.0 < args.val < 0.9:
        parser.error(f"--val must be in (0, 0.9), got {args.val}")
    if args.input_size < 8 or args.input_size & (args.input_size - 1):
        parser.error(f"--input-size must be a power of two >= 8, got {args.input_size}")
    set_threads(args.threads)
    try:
        cfg = ProbeConfig(input_size=args.input_size, width=args.width, crop=_crop(args.crop), names=_names(args.names))
        data = load_shards(args.data, limit=args.limit)
        probes = train_probes(data["images"], data["identity"], data["motion"], cfg=cfg, epochs=args.epochs,
                              batch_size=args.batch_size, lr=args.lr, val_fraction=args.val, seed=args.seed,
                              progress=not args.no_progress)
        save_probes(probes, args.out)
    except (ProbesError, UsageError) as e:
        fail(parser.prog, str(e))
    except KeyboardInterrupt:
        fail(parser.prog, "interrupted")
    r2 = probes.report["r2"]
    print(f"held-out R² ({probes.report['n_val']} samples):")
    for n in probes.names:
        print(f"  {n:15s} {r2[n]:.3f}")
    print(f"wrote {args.out} ({os.path.getsize(args.out) / 1e6:.2f} MB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
