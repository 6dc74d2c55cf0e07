"""``python -m engine.faces measure IMG...``: read faces from image files, print a table or JSON.

    python -m engine.faces measure photo.jpg frames/*.png
    python -m engine.faces measure out/seed0007.png --aligned demo --json
    python -m engine.faces measure crop.png --aligned 0.21,0.33,0.79,0.91 --detector mmod --embedding

Exit status: 0 when every image was read (an image without a face counts as read: found 0),
1 when an image could not be opened (one line on stderr each; the others are still measured),
2 for usage mistakes and when the ``faces`` extra is not installed.
"""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
from PIL import Image, UnidentifiedImageError

from engine.faces.measure import ALIGNED_BOXES, FaceMeasure, FaceReading
from engine.faces.models import FaceModelsMissing

PROG = "python -m engine.faces"


def fail(message: str) -> NoReturn:
    """``PROG: error: message`` on one line of stderr, exit status 2 (as ``engine.cli_util.fail``;
    not imported from there, which would load torch for nothing)."""
    sys.stderr.write(f"{PROG}: error: {' '.join(str(message).split())}\n")
    raise SystemExit(2)


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors and exit status 2."""

    def error(self, message: str) -> NoReturn:
        fail(f"{message} (see --help)")


def parse_aligned(text: str | None) -> Any:
    """``--aligned`` value: None/"off" → False, a preset name, or ``l,t,r,b`` fractions."""
    if text is None or text == "off":
        return False
    if text in ALIGNED_BOXES:
        return text
    try:
        box = tuple(float(v) for v in text.split(","))
    except ValueError:
        box = ()
    if len(box) != 4:
        raise ValueError(f"--aligned takes {', '.join(ALIGNED_BOXES)}, off or l,t,r,b fractions; got {text!r}")
    return box


def _num(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def reading_json(path: str, r: FaceReading, embedding: bool) -> dict[str, Any]:
    """One image's reading as a JSON-ready dict (NaN → null; landmarks as [[x, y], ...])."""
    out: dict[str, Any] = {"image": path, "found": r.found, "source": r.source,
                           "box": None if r.box is None else [float(v) for v in r.box], "score": _num(r.score)}
    for k, v in r.values().items():
        if k != "found":
            out[k] = _num(v)
    out["mouth_width"] = out["jaw"]
    out["landmarks"] = None if r.landmarks is None else np.round(r.landmarks, 2).tolist()
    if embedding:
        out["embedding"] = None if r.embedding is None else [float(v) for v in r.embedding]
    return out


def format_row(path: str, r: FaceReading) -> str:
    def f(x: float, fmt: str) -> str:
        return "nan" if math.isnan(x) else format(x, fmt)
    return (f"{path:<32} {int(r.found):>5} {r.source:>8} {f(r.mouth_open, '.3f'):>10} {f(r.mouth_width, '.3f'):>6} "
            f"{f(r.blink, '.3f'):>6} {f(r.head_yaw, '.1f'):>6} {f(r.head_pitch, '.1f'):>6} {f(r.head_roll, '.1f'):>6}")


TABLE_HEADER = (f"{'image':<32} {'found':>5} {'source':>8} {'mouth_open':>10} {'jaw':>6} {'blink':>6} "
                f"{'yaw':>6} {'pitch':>6} {'roll':>6}")


EPILOG = """examples:
  python -m engine.faces measure photo.jpg frames/*.png
  python -m engine.faces measure out/seed0007.png --aligned demo --json
  python -m engine.faces measure crop.png --aligned 0.21,0.33,0.79,0.91 --detector mmod --embedding

Exit status: 0 when every image was read (an image without a face counts as read: found 0),
1 when an image could not be opened, 2 for usage mistakes and without the faces extra.
"""


def build_parser() -> ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    p = ArgumentParser(prog=PROG, description="Read faces from images with dlib (the 'faces' extra).",
                       epilog=EPILOG, formatter_class=fmt)
    sub = p.add_subparsers(dest="command", required=True, parser_class=ArgumentParser)
    m = sub.add_parser("measure", help="measure the face in each image", formatter_class=fmt, epilog=EPILOG,
                       description="Detect the face in each image, read dlib's 68 landmarks and print mouth_open, "
                                   "jaw (mouth width),\nblink and head pose (yaw, pitch, roll) as a table or one "
                                   "JSON object per line.")
    m.add_argument("images", nargs="+", help="image files (any format PIL reads)")
    m.add_argument("--json", action="store_true", help="one JSON object per line instead of a table")
    m.add_argument("--aligned", default=None, help="read the landmarks in a fixed box when the detector "
                   "misses: auto (= ffhq), demo, or l,t,r,b fractions of the image")
    m.add_argument("--detector", choices=("hog", "mmod", "none"), default="hog",
                   help="face detector: hog (default, dlib's HOG), mmod (dlib's CNN, slower) or none (--aligned "
                        "box only)")
    m.add_argument("--upsample", type=int, default=1, help="detector upsampling steps (default 1)")
    m.add_argument("--embedding", action="store_true", help="include the 128-D identity embedding in --json")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    try:
        measure = FaceMeasure(detector=args.detector, upsample=args.upsample, aligned=parse_aligned(args.aligned),
                              embed=args.embedding)
    except (FaceModelsMissing, ValueError) as e:
        fail(str(e))

    failed = 0
    if not args.json:
        print(TABLE_HEADER)
    for path in args.images:
        try:
            with Image.open(path) as im:
                rgb = np.asarray(im.convert("RGB"))
        except (OSError, UnidentifiedImageError, ValueError) as e:
            reason = " ".join(str(e).split()) or type(e).__name__
            sys.stderr.write(f"{PROG}: cannot read {path}: {reason}\n")
            failed += 1
            continue
        reading = measure.read(rgb)
        name = str(Path(path))
        print(json.dumps(reading_json(name, reading, args.embedding)) if args.json else format_row(name, reading),
              flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
