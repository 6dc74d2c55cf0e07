"""Photo inversion where the truth is known: held-out demo-world faces, drawn by the demo world's
renderer (not by the generator), through the whole photo path into the demo generator.

Per face: the renderer's 256 px image is the "photo"; it is searched for a face and aligned
(the demo template; where dlib's detector misses the cartoon face, the photo is resized instead
and the row says so), inverted (W, then W+), and measured: PSNR / SSIM of the reconstruction
against the crop, and the demo probes' reading of every identity field of the reconstruction
against the field's true value (correlation over the faces; the probes' reading of the photo
itself is the ceiling). Also the time per projection step of FFHQ-shape networks at
``--sizes`` px. Writes JSON and a grid (photo | aligned | reconstruction | mouth open | blink).

    python -m benchmarks.inversion                 # 8 faces, 200 + 100 steps
    python -m benchmarks.inversion --faces 16 --steps 300 --wplus-steps 200 --sizes 256 512 1024
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import REPO_ROOT, build_random_generator, environment, ffhq_shape_config

DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results" / "inversion.json"


def held_out_codes(n: int, seed: int) -> np.ndarray:
    """Demo-world codes at rest from a seed range the generator's training never drew."""
    from engine.demo_world.latent import MOTION_Z, Z_DIM, at_rest

    z = np.random.default_rng(seed).standard_normal((n, Z_DIM)).astype(np.float32)
    return at_rest(z, MOTION_Z)


def _moved(G, ws: np.ndarray, directions, name: str, units: float) -> np.ndarray:
    from engine.frames import images_to_uint8

    d = directions[name]
    mask = d.layer_mask(G.num_ws)[:, None]
    moved = ws[0] + units * d.stdev * mask * d.vector[None, :]
    with torch.no_grad():
        return images_to_uint8(G.synthesis(torch.from_numpy(moved[None].astype(np.float32))))[0]


def step_time(res: int, steps: int = 3) -> float:
    """Seconds per projection step (W stage) of a random FFHQ-shape network at ``res`` px."""
    from engine.inversion.project import Settings, project

    G = build_random_generator(ffhq_shape_config(res))
    target = np.zeros((res, res, 3), np.uint8)

    def timed(n: int) -> float:
        t0 = time.perf_counter()
        project(G, target, Settings(steps=n, wplus_steps=0, init_samples=0), progress=False)
        return time.perf_counter() - t0

    timed(1)                                   # warm-up
    return (timed(1 + steps) - timed(1)) / steps


def run(args) -> dict:
    from PIL import Image

    from engine.avatar import DEMO_DIRECTIONS
    from engine.demo_world.latent import params_from_z, render_z
    from engine.demo_world.params import IDENTITY_FIELDS
    from engine.demo_world.probe_measure import DEMO_PROBES
    from engine.demo_world.probes import load_probes
    from engine.faces.photo import NoFaceInPhoto
    from engine.inversion.project import Settings
    from engine.inversion.run import invert_photo
    from engine.latent.direction_set import DirectionSet
    from engine.synthesis import load_generator

    torch.manual_seed(0)
    G = load_generator("demo")
    directions = DirectionSet.load(DEMO_DIRECTIONS)
    probes = load_probes(DEMO_PROBES)
    settings = Settings(steps=args.steps, wplus_steps=args.wplus_steps)
    rows, grid, truth, read_photo, read_recon = [], [], [], [], []
    for i, z in enumerate(held_out_codes(args.faces, args.seed)):
        photo = render_z(z, size=256)
        small = np.asarray(Image.fromarray(photo).resize((G.img_resolution,) * 2, Image.LANCZOS))
        t0 = time.perf_counter()
        try:
            ident, _ = invert_photo(G, photo, name="demo", settings=settings, progress=False)
            path = "detected and aligned"
        except NoFaceInPhoto:
            ident, _ = invert_photo(G, small, name="demo", settings=settings, progress=False, aligned=True)
            path = "no face found: resized"
        seconds = time.perf_counter() - t0
        report = ident.meta["report"]
        truth.append(params_from_z(z)[0].to_vector())
        read_photo.append(small)
        read_recon.append(ident.reconstruction)
        rows.append({"face": i, "path": path, "seconds": round(seconds, 1), "psnr_db": report["psnr_db"],
                     "ssim": report["ssim"], "identity_distance": report.get("identity_distance"),
                     "prior": report["final"].get("prior")})
        print(f"[inversion] face {i}: {path}, {seconds:.1f} s, PSNR {report['psnr_db']} dB, SSIM {report['ssim']}",
              flush=True)
        if i < args.grid_rows:
            grid.append(np.concatenate([small, ident.crop, ident.reconstruction,
                                        _moved(G, ident.ws, directions, "mouth_open", 2.0),
                                        _moved(G, ident.ws, directions, "blink", 2.0)], axis=1))
    truth_a = np.stack(truth)
    pred_photo = probes.predict(np.stack(read_photo))
    pred_recon = probes.predict(np.stack(read_recon))
    fields = {}
    for j, name in enumerate(IDENTITY_FIELDS):
        if name not in pred_recon or np.std(truth_a[:, j]) < 1e-6:
            continue
        corr = lambda p: float(np.corrcoef(p, truth_a[:, j])[0, 1]) if np.std(p) > 1e-9 else float("nan")  # noqa: E731
        fields[name] = {"reconstruction": round(corr(pred_recon[name]), 3), "photo (ceiling)": round(corr(pred_photo[name]), 3)}
    sizes = {}
    for res in args.sizes:
        sizes[str(res)] = round(step_time(res), 3)
        print(f"[inversion] FFHQ-shape {res} px: {sizes[str(res)]} s per step", flush=True)
    if grid:
        Image.fromarray(np.concatenate(grid, axis=0)).save(args.out.with_suffix(".png"))
    recon_corr = [v["reconstruction"] for v in fields.values() if np.isfinite(v["reconstruction"])]
    return {"benchmark": "inversion", "faces": rows, "settings": {"steps": args.steps, "wplus_steps": args.wplus_steps,
            "seed": args.seed}, "identity_fields": fields,
            "median_field_correlation": float(np.median(recon_corr)) if recon_corr else None,
            "detected": sum(r["path"].startswith("detected") for r in rows),
            "psnr_db_median": float(np.median([r["psnr_db"] for r in rows])),
            "seconds_per_step_ffhq_shape": sizes}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.inversion", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--faces", type=int, default=8)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--wplus-steps", type=int, default=100)
    ap.add_argument("--seed", type=int, default=90_210, help="seed of the held-out codes")
    ap.add_argument("--sizes", type=int, nargs="*", default=[256, 512], help="FFHQ-shape sizes to time a step at")
    ap.add_argument("--grid-rows", type=int, default=6)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = run(args)
    report["environment"] = environment(torch.device("cpu"))
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: report[k] for k in ("detected", "psnr_db_median", "median_field_correlation",
                                             "seconds_per_step_ffhq_shape")}))
    print(f"wrote {args.out} (grid {args.out.with_suffix('.png')})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
