"""Convert a StyleGAN2 checkpoint to StyleCast's format (safetensors + JSON config).

    python -m engine.convert IN OUT.safetensors [--dtype float16|float32]

IN is an NVlabs stylegan2-ada-pytorch / stylegan3 network pickle, a rosinality
stylegan2-pytorch ``.pt``, a StyleCast ``.safetensors`` file, or a preset name. The format is
recognised from the file's content. Pickles are read without executing anything in them.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import torch

from engine.cli_util import ArgumentParser, add_expect_sha256
from engine.synthesis.checkpoints import (
    CheckpointError,
    load_generator,
    read_checkpoint,
    save_generator,
    sidecar_path,
)
from engine.synthesis.integrity import check_file_sha256

EXAMPLES = """\
examples:
  # an NVlabs network snapshot, stored as float16 for shipping
  python -m engine.convert network-snapshot-025000.pkl ffhq512.safetensors --dtype float16

  # a rosinality checkpoint (converted weights or a train.py checkpoint)
  python -m engine.convert stylegan2-ffhq-config-f.pt ffhq1024.safetensors

  # a preset (downloaded once into $STYLECAST_CACHE or ~/.cache/stylecast)
  python -m engine.convert ffhq256 ffhq256.safetensors

The output is OUT.safetensors (weights; the config is in its header metadata) plus OUT.json
(the same config, human-readable). Load it with engine.synthesis.load_generator("OUT.safetensors").
Exit status: 0 on success, 2 when the input cannot be converted (one-line reason on stderr).
"""

DTYPES = {"float16": torch.float16, "float32": torch.float32}


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="python -m engine.convert",
        description="Convert an NVlabs .pkl, rosinality .pt or StyleCast .safetensors generator "
        "checkpoint to StyleCast's safetensors + JSON format.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("input", help="checkpoint file, or a preset name (demo, ffhq256, ffhq512, ffhq1024)")
    parser.add_argument("output", nargs="?", default=None,
                        help="output path, must end in .safetensors (OUT.json is written beside it); or --out")
    parser.add_argument("--out", dest="out", default=None, help="the output path (the same as the second argument)")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32",
                        help="on-disk float type (default: float32, lossless; float16 halves the size)")
    add_expect_sha256(parser)
    return parser


def convert(input: str, output: str, dtype: str = "float32",
            expect_sha256: str | None = None) -> tuple[Path, str, list[str]]:
    """Convert ``input`` to ``output``; returns (output path, summary line, notes). The output
    records the sha256 of its tensors, checked on every load; ``expect_sha256`` checks the input."""
    out = Path(output)
    if out.suffix != ".safetensors":
        raise CheckpointError(f"{out}: output must end in .safetensors")
    src = Path(input)
    if src.exists() and src.resolve() == out.resolve():
        raise CheckpointError(f"{out}: output would overwrite the input")
    notes: list[str] = []
    if src.exists():
        check_file_sha256(src, expect_sha256)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # reported through ckpt.notes instead
            ckpt = read_checkpoint(src)
        G = ckpt.build()
        fmt, notes = ckpt.format, ckpt.notes
    else:
        G = load_generator(input, expect_sha256=expect_sha256)
        fmt = "preset"
    save_generator(G, out, dtype=DTYPES[dtype], source=f"{src.name} ({fmt})")
    c = G.config
    n_params = sum(t.numel() for t in G.state_dict().values())
    summary = (
        f"{input} ({fmt}) -> {out} + {sidecar_path(out).name}: {c.img_resolution} px, z_dim={c.z_dim}, "
        f"w_dim={c.w_dim}, {c.mapping_layers} mapping layers, {n_params:,} values as {dtype}"
    )
    return out, summary, notes


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if (args.output is None) == (args.out is None):
        parser.error("give the output path once: as the second argument or as --out")
    try:
        _, summary, notes = convert(args.input, args.output or args.out, args.dtype, args.expect_sha256)
    except (CheckpointError, ValueError, OSError) as exc:
        message = " ".join(str(exc).split())
        print(f"{parser.prog}: error: {message}", file=sys.stderr)
        return 2
    print(summary)
    for note in notes:
        print(f"note: {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
