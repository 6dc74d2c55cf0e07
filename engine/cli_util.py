"""Small helpers shared by the ``python -m engine.X`` command-line tools."""
from __future__ import annotations

import argparse
import math
import re
import sys
from pathlib import Path
from typing import NoReturn

import torch

from engine.synthesis.integrity import parse_sha256


class UsageError(Exception):
    """A user mistake a CLI reports as one line on stderr with exit code 2."""


def sha256_hex(text: str) -> str:
    """argparse type for ``--expect-sha256``: 64 hex digits."""
    try:
        return parse_sha256(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_expect_sha256(p: argparse.ArgumentParser) -> None:
    p.add_argument("--expect-sha256", type=sha256_hex, default=None, metavar="HEX",
                   help="refuse the checkpoint unless the file's sha256 is HEX (for files that carry no hash "
                        "of their own; StyleCast files written by engine.convert check theirs on every load)")


def fail(prog: str, message: str) -> NoReturn:
    """Print ``prog: error: message`` (one line) and exit with status 2."""
    first_line = " ".join(str(message).split())
    sys.stderr.write(f"{prog}: error: {first_line}\n")
    raise SystemExit(2)


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors: ``prog: error: ... (see --help)`` and exit status 2."""

    def error(self, message: str) -> NoReturn:
        fail(self.prog, f"{message} (see --help)")


def parse_int_ranges(text: str, what: str = "seed", *, max_value: int | None = None,
                     max_count: int = 1_000_000) -> list[int]:
    """Parse ``"0-3"``, ``"1,5,9"`` or ``"0-3,10,20-21"`` into non-negative integers (order kept).

    ``what`` names the items in error messages ("seed", "component", ...).
    """
    out: list[int] = []
    if not text or not text.strip():
        raise UsageError(f"empty {what} list")
    for part in text.split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)\s*(?:-\s*(\d+))?", part)
        if not m:
            raise UsageError(f"bad {what} range {part!r}: use N, A-B or a comma-separated list of them")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if hi < lo:
            raise UsageError(f"bad {what} range {part!r}: end is before start")
        if max_value is not None and hi > max_value:
            raise UsageError(f"{what} {hi} is out of range (0 .. {max_value})")
        if hi - lo >= max_count:
            raise UsageError(f"{what} range {part!r} is too long (at most {max_count:,} {what}s)")
        out.extend(range(lo, hi + 1))
    return out


def parse_seeds(text: str) -> list[int]:
    """Seeds as ``N``, ``A-B`` or a comma-separated list of them (0 .. 2**32-1)."""
    return parse_int_ranges(text, "seed", max_value=2**32 - 1)


def finite_float(text: str) -> float:
    """argparse type: a finite float (rejects nan / inf)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be finite, got {text!r}")
    return value


def thread_count(text: str) -> int:
    """argparse type of every ``--threads``: an integer in 1 .. 1024."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if not 1 <= n <= 1024:
        raise argparse.ArgumentTypeError(f"must be at least 1 (and at most 1024), got {n}")
    return n


#: help of every ``--threads`` option (the count is set once at startup: engine.runtime.set_threads)
THREADS_HELP = ("torch CPU threads (default: engine.runtime.default_threads(), 1 on machines with up to 4 cores "
                "(see the README's thread measurement); on a CUDA device torch's default)")


def resolve_device(name: str) -> torch.device:
    """``cpu``, ``cuda``, ``cuda:N`` or a bare GPU index; CUDA requested without CUDA is an error."""
    if name.isdigit():
        name = f"cuda:{name}"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UsageError(f"unknown device {name!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {name!r} requested but CUDA is not available on this machine")
    return device


def parse_identity(text: str):
    """``--identity``: a seed (int), or the path (str) of an existing .npy with w / ws or an
    identity .npz from ``engine.invert``."""
    text = text.strip()
    if text.isdigit():
        seed = int(text)
        if seed >= 2**32:
            raise UsageError(f"--identity seed {seed} is out of range (0 .. 2**32-1)")
        return seed
    path = Path(text)
    if not path.is_file():
        raise UsageError(f"--identity {text!r} is neither a seed nor an existing .npy / .npz file")
    return str(path)
