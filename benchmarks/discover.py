"""What direction discovery costs: render vs measure per 1000 images, on the demo generator and an
FFHQ-shape 256 px StyleGAN2 (NVlabs ``paper256``: 512-wide w, 14 layers; random weights, so only
its speed means anything), and each measure's ms per image on the demo's frames (the landmark
measure's cost on real faces at 128/256/1024 px is ``python -m benchmarks.faces``).

    python -m benchmarks.discover [--images 64] [--out-dir benchmarks/results]

Discovery renders and measures ``2·n + holdout`` images for the local estimator, then
``holdout · 2 · (roles + roles_kept · layer ranges)`` for the screen and the layer choice (the
latter with identity embeddings). Writes ``discover.json``.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from engine.demo_world.probe_measure import ProbeMeasure
from engine.faces.landmark_measure import LandmarkMeasure
from engine.latent.defaults import faces_available
from engine.latent.sources import GeneratorSource
from engine.synthesis.checkpoints import load_generator
from engine.synthesis.networks import Generator, GeneratorConfig

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT_DIR = REPO_ROOT / "benchmarks" / "results"


def _per_1000(fn, count: int) -> float:
    """Seconds per 1000 items (= milliseconds per item) of one call of ``fn`` over ``count`` items."""
    t0 = time.perf_counter()
    fn()
    return 1000.0 * (time.perf_counter() - t0) / count


def time_render(G, images: int, batch: int = 16) -> float:
    src = GeneratorSource(G, batch=batch)
    w = src.sample_w(images, 0)
    ws = np.broadcast_to(w[:, None], (images, src.num_ws, src.w_dim)).copy()
    src.render(ws[:batch])                                    # warm-up
    return _per_1000(lambda: src.render(ws), images)


def time_measures(images: np.ndarray) -> dict:
    """ms per image of each measure on the demo generator's own frames (what discovery reads)."""
    probes = ProbeMeasure()
    out = {"probes_ms": _per_1000(lambda: probes(images), len(images))}
    if faces_available():
        m = LandmarkMeasure(aligned="demo")
        out["landmarks_ms"] = _per_1000(lambda: m(images), len(images))
        out["landmarks_detected_fraction"] = float(m.detected(images).mean())
        out["embedding_ms"] = _per_1000(lambda: m.embed(images), len(images))   # on top of the reading
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m benchmarks.discover", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", type=int, default=64, help="images per timing (default 64)")
    p.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR)
    args = p.parse_args(argv)

    torch.manual_seed(0)
    demo = load_generator("demo")
    ffhq = Generator(GeneratorConfig.nvlabs(img_resolution=256, channel_base=16384, channel_max=512)).eval()
    n = int(args.images)
    src = GeneratorSource(demo)
    demo_imgs = src.render(np.broadcast_to(src.sample_w(n, 0)[:, None], (n, demo.num_ws, demo.w_dim)).copy())
    report = {"threads": torch.get_num_threads(), "images": n,
              "render_per_1000_s": {"demo_128": time_render(demo, n), "ffhq_shape_256": time_render(ffhq, n)},
              "measure_ms_per_image_demo": time_measures(demo_imgs)}
    print(f"render per 1000 images: demo 128 px {report['render_per_1000_s']['demo_128']:.1f} s, "
          f"FFHQ-shape 256 px {report['render_per_1000_s']['ffhq_shape_256']:.1f} s "
          f"({report['threads']} torch threads)")
    for k, v in report["measure_ms_per_image_demo"].items():
        print(f"{k:>28}: {v:8.3f}" + ("" if k.endswith("fraction") else " ms per image (demo frames)"))
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "discover.json").write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
