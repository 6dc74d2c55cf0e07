"""Cost of the face measure (``engine.faces``) per image, on one CPU thread.

The image is scikit-image's astronaut photo cut to an FFHQ-recipe aligned crop (the kind of image
a face generator makes) and resized to each ``--sizes`` (default 128, 256, 1024 px). Per size:

* ``read`` ms per image, end to end, for these configurations:
  - ``hog``: HOG detector (upsample 1) + 68 landmarks + head pose (``embed=False``);
  - ``hog_embed``: the same + the 128-D identity embedding;
  - ``hog_up0``: HOG without upsampling (finds faces >= ~80 px only);
  - ``aligned``: ``detector="none", aligned="auto"``: landmarks in the fixed FFHQ box, no detector;
  - ``mmod``: the CNN detector (upsample 0), only up to ``--mmod-max-size`` (seconds per image above);
* ``parts`` ms: HOG detection alone, the 68-point predictor, ``solvePnP`` pose, the 5-point
  predictor + ResNet embedding.

Median over ``--repeats`` (after one warm-up read).

    python -m benchmarks.faces                         # ~1 min on 2 cores
    python -m benchmarks.faces --sizes 256 --repeats 3
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from benchmarks.common import environment
from engine.faces import FaceMeasure, head_pose
from engine.faces.align import ffhq_align

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT_DIR = REPO_ROOT / "benchmarks" / "results"
CONFIGS: dict[str, dict[str, Any]] = {
    "hog": dict(detector="hog", upsample=1, embed=False),
    "hog_embed": dict(detector="hog", upsample=1, embed=True),
    "hog_up0": dict(detector="hog", upsample=0, embed=False),
    "aligned": dict(detector="none", aligned="auto", embed=False),
    "mmod": dict(detector="mmod", upsample=0, embed=False),
}


def aligned_astronaut(size: int) -> np.ndarray:
    """The astronaut photo as an FFHQ-aligned ``size`` px crop (uint8 RGB)."""
    from skimage.data import astronaut

    image = astronaut()
    return ffhq_align(image, FaceMeasure(embed=False).read(image).landmarks, size)


def _median_ms(fn: Callable[[], Any], repeats: int) -> float:
    fn()                                                       # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return float(statistics.median(times))


def bench_size(size: int, repeats: int, measures: dict[str, FaceMeasure], mmod_max_size: int) -> dict[str, Any]:
    image = aligned_astronaut(size)
    row: dict[str, Any] = {"size": size, "read_ms": {}, "found": {}, "parts_ms": {}}
    for name, fm in measures.items():
        if name == "mmod" and size > mmod_max_size:
            continue
        row["found"][name] = fm.read(image).source
        row["read_ms"][name] = _median_ms(lambda: fm.read(image), repeats)
    fm = measures["hog_embed"]
    models = fm.models
    faces = fm.detect(image)
    row["parts_ms"]["hog_detect"] = _median_ms(lambda: fm.detect(image), repeats)
    if faces:
        box = FaceMeasure.choose(faces)[0]
        rect = models.dlib.rectangle(*(int(round(v)) for v in box))
        landmarks = np.array([(p.x, p.y) for p in models.landmarks68(image, rect).parts()], np.float64)
        row["parts_ms"]["landmarks68"] = _median_ms(lambda: models.landmarks68(image, rect), repeats)
        row["parts_ms"]["pose"] = _median_ms(lambda: head_pose(models.cv2, landmarks, size, size), repeats)
        row["parts_ms"]["embedding"] = _median_ms(lambda: fm._descriptor(image, rect), repeats)
    return row


def format_table(rows: list[dict[str, Any]]) -> str:
    names = list(CONFIGS)
    header = f"{'size':>5} " + " ".join(f"{n:>10}" for n in names) + "  | " + \
        " ".join(f"{n:>11}" for n in ("hog_detect", "landmarks68", "pose", "embedding"))
    lines = ["ms per image (median)", header, "-" * len(header)]
    for r in rows:
        reads = " ".join(f"{r['read_ms'][n]:>10.1f}" if n in r["read_ms"] else f"{'-':>10}" for n in names)
        parts = " ".join(f"{r['parts_ms'][n]:>11.2f}" if n in r["parts_ms"] else f"{'-':>11}"
                         for n in ("hog_detect", "landmarks68", "pose", "embedding"))
        lines.append(f"{r['size']:>5} {reads}  | {parts}")
    return "\n".join(lines)


def plot(rows: list[dict[str, Any]], path: Path) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / len(CONFIGS)
    for i, name in enumerate(CONFIGS):
        xs = [j + i * width for j, r in enumerate(rows) if name in r["read_ms"]]
        ys = [r["read_ms"][name] for r in rows if name in r["read_ms"]]
        ax.bar(xs, ys, width, label=name)
    ax.set_xticks([j + 0.4 - width / 2 for j in range(len(rows))], [f"{r['size']} px" for r in rows])
    ax.set_yscale("log")
    ax.set_ylabel("ms per image (log)")
    ax.set_title("face measure, 1 CPU thread")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(prog="python -m benchmarks.faces", description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 1024])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--mmod-max-size", type=int, default=256, help="skip the CNN detector above this size")
    p.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR)
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    import cv2
    cv2.setNumThreads(1)
    torch.set_num_threads(1)
    measures = {name: FaceMeasure(**kw) for name, kw in CONFIGS.items()}
    rows = [bench_size(s, args.repeats, measures, args.mmod_max_size) for s in args.sizes]
    result = {"benchmark": "faces", "environment": environment(torch.device("cpu")),
              "omp_num_threads": os.environ.get("OMP_NUM_THREADS"), "repeats": args.repeats,
              "image": "skimage.data.astronaut(), FFHQ-aligned crop", "configs": CONFIGS, "sizes": rows}
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "faces.json").write_text(json.dumps(result, indent=2))
    plot(rows, args.out_dir / "faces.png")
    if not args.quiet:
        print(format_table(rows))
        print(f"wrote {args.out_dir / 'faces.json'}", file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
