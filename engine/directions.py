"""Discover a generator's motion directions: ``python -m engine.directions discover ...``.

Samples identities, renders them, reads each image with a face measure (``landmarks``: dlib's
68 points and head pose, the ``faces`` extra; ``probes``: the demo world's probes), fits one W
direction per motion role and chooses its layers (:mod:`engine.latent.discover`). Writes the
direction set (``--out``), a report (``<out>.report.json``: per role R², gain per σ, identity
distance at ±2σ, leakage into the other roles, layers chosen and every candidate's numbers) and a
labelled grid (``<out>.grid.png``: rows = roles, columns −2σ…+2σ, the measured value under each
cell). The set is also cached by checkpoint hash (``$STYLECAST_CACHE/directions/``), where
``AvatarEngine`` finds it.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
from PIL import Image, ImageDraw

from engine.cli_util import (
    ArgumentParser,
    UsageError,
    fail,
    finite_float,
    resolve_device,
)
from engine.demo_world.probe_measure import ProbeMeasure
from engine.faces.landmark_measure import LandmarkMeasure
from engine.latent.defaults import MEASURES, cached_path, report_path, save_cached
from engine.latent.direction_set import DirectionSet
from engine.latent.sources import moved as _moved

PROG = "python -m engine.directions"
EPILOG = """examples:
  # the demo generator, read by its probes
  python -m engine.directions discover --measure probes --out demo_discovered.json
  # your FFHQ checkpoint, read by dlib landmarks (pip install 'stylecast[faces]')
  python -m engine.directions discover --generator ffhq.pkl --n 1000 --out ffhq_directions.json
"""
DISCOVER_DESCRIPTION = """\
Sample --n identities of a generator, read each image with a face measure, fit one W direction per
motion role and choose its layers. Writes the set (--out), OUT.report.json and OUT.grid.png, and
caches the set by checkpoint hash, where AvatarEngine finds it."""
GRID_SIGMAS = (-2.0, -1.0, 0.0, 1.0, 2.0)


def make_measure(name: str, *, probes: Optional[Path] = None, aligned="ffhq"):
    if name == "probes":
        return ProbeMeasure(probes)
    if name == "landmarks":
        return LandmarkMeasure(aligned=aligned)  # FaceModelsMissing (an ImportError) without the extra
    raise UsageError(f"unknown measure {name!r} (choose {', '.join(MEASURES)})")


def save_grid(source, measure, ds: DirectionSet, report: dict, path: Path, *, seed: int = 0) -> Path:
    """Rows = roles, columns = −2…+2 units on one identity (its chosen layers), value printed under each
    cell; the row label says the unit (σ, or calibrated: how many σ one unit is)."""
    w = source.sample_w(1, seed + 12345)
    ws0 = np.broadcast_to(w[:, None, :], (1, source.num_ws, source.w_dim)).copy()
    rows = []
    for d in ds:
        key = report["roles"][d.name]["key"]
        imgs = np.concatenate([source.render(_moved(ws0, d, source.num_ws, t, d.layers)) for t in GRID_SIGMAS])
        vals = np.asarray(measure(imgs)[key], dtype=np.float64)
        rows.append((d.name, key, imgs, vals))
    size = min(int(rows[0][2].shape[1]), 256)
    label_w, text_h = 110, 16
    grid = Image.new("RGB", (label_w + size * len(GRID_SIGMAS), (size + text_h) * len(rows) + text_h), "white")
    draw = ImageDraw.Draw(grid)
    for j, t in enumerate(GRID_SIGMAS):
        draw.text((label_w + j * size + 4, 2), f"{t:+g} units", fill="black")
    for i, (name, key, imgs, vals) in enumerate(rows):
        y = text_h + i * (size + text_h)
        draw.text((4, y + size // 2), name, fill="black")
        unit = report["roles"][name].get("unit", {})
        unit = f"unit {unit['sigma_per_unit']:.2f} sigma" if unit.get("unit") == "calibrated" else "unit 1 sigma"
        draw.text((4, y + size // 2 + text_h), unit, fill="black")
        for j, img in enumerate(imgs):
            grid.paste(Image.fromarray(img).resize((size, size), Image.LANCZOS), (label_w + j * size, y))
            txt = f"{key} {vals[j]:.3f}" if np.isfinite(vals[j]) else f"{key}: no face"
            draw.text((label_w + j * size + 4, y + size + 2), txt, fill="black")
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)
    return path


def _cached_settings(path: Path) -> Optional[dict]:
    """The settings a cached set was discovered with (None: no readable cached set)."""
    try:
        return json.loads(report_path(path).read_text()).get("settings", {}) if path.is_file() else None
    except (OSError, ValueError, AttributeError):
        return None


def build_parser() -> ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    p = ArgumentParser(prog=PROG, description=__doc__, epilog=EPILOG, formatter_class=fmt)
    sub = p.add_subparsers(dest="command", required=True, parser_class=ArgumentParser)
    d = sub.add_parser("discover", help="discover named motion directions of a generator", formatter_class=fmt,
                       description=DISCOVER_DESCRIPTION, epilog=EPILOG)
    d.add_argument("--generator", default="demo", help="checkpoint path or preset (default demo)")
    d.add_argument("--out", type=Path, required=True, help="direction-set JSON to write")
    d.add_argument("--n", type=int, default=1000, help="identities sampled (default 1000; more than w_dim)")
    d.add_argument("--holdout", type=int, default=16, help="held-out identities for the layer choice (default 16)")
    d.add_argument("--measure", choices=MEASURES, default="landmarks", help="landmarks (default) or probes")
    d.add_argument("--probes", type=Path, default=None, help="probes file for --measure probes (default: shipped)")
    d.add_argument("--aligned", default=None, choices=("ffhq", "demo", "off"),
                   help="landmarks: the face box read where the detector misses (default: demo for the demo "
                        "generator, ffhq otherwise; off: detector only)")
    d.add_argument("--estimator", choices=("local", "global"), default="local",
                   help="local (default): the measure's average gradient in W from random ± offsets; "
                        "global: regression across identities")
    d.add_argument("--step", type=finite_float, default=0.5, help="local offsets' size in w spreads (default 0.5)")
    d.add_argument("--refine", action="store_true",
                   help="local: estimate each direction again where its motion shows (past a closed mouth's "
                        "hinge); 2·n more images per role")
    d.add_argument("--no-calibrate", action="store_true",
                   help="keep σ units (the identities' spread) instead of the shipped drivers' units for "
                        "mouth_open and jaw")
    d.add_argument("--seed", type=int, default=0, help="seed of the sampled identities and offsets (default 0)")
    d.add_argument("--truncation", type=finite_float, default=1.0,
                   help="truncation psi of the discovery samples (default 1: untruncated, so the samples cover "
                        "the generator's whole face distribution; the engine's identities use 0.7)")
    d.add_argument("--trunc", dest="truncation", type=finite_float, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    d.add_argument("--batch", type=int, default=32, help="images per synthesis and measure call (default 32)")
    d.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or a GPU index (default cpu)")
    d.add_argument("--force", action="store_true", help="discover again even when the cache has this checkpoint")
    d.add_argument("--no-grid", action="store_true", help="skip the grid image")
    d.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from engine.latent.discover import GeneratorSource, NoFaceError, discover, settings
    from engine.synthesis.checkpoints import load_generator

    def log(msg: str) -> None:
        print(f"{PROG}: {msg}", file=sys.stderr, flush=True)

    try:
        if args.n < 2 or args.holdout < 1 or args.batch < 1:
            raise UsageError("--n must be >= 2, --holdout and --batch >= 1")
        G = load_generator(args.generator, device=resolve_device(args.device))
        aligned = {"off": False, None: "demo" if args.generator == "demo" else "ffhq"}.get(args.aligned, args.aligned)
        source = GeneratorSource(G, truncation_psi=args.truncation, batch=args.batch)
        cached = cached_path(source.checkpoint_hash, args.measure)
        want = settings(args.measure, n=args.n, holdout=args.holdout, seed=args.seed, estimator=args.estimator,
                        step=args.step, refine=args.refine, calibrate=not args.no_calibrate, truncation_psi=args.truncation)
        want["aligned"] = str(aligned)
        have = _cached_settings(cached)
        if have is not None and have != want and not args.force:
            differ = sorted(k for k in set(have) | set(want) if have.get(k) != want.get(k))
            what = f"other settings ({', '.join(differ)})" if have else "settings it did not record"
            log(f"the cached set {cached} was discovered with {what}; discovering again")
        if have == want and not args.force:
            log(f"using the cached set {cached} (--force discovers again)")
            ds = DirectionSet.load(cached, num_ws=G.num_ws, w_dim=G.w_dim, checkpoint_hash=source.checkpoint_hash)
            report = json.loads(report_path(cached).read_text())
            measure = None if args.no_grid else make_measure(args.measure, probes=args.probes, aligned=aligned)
        else:
            measure = make_measure(args.measure, probes=args.probes, aligned=aligned)
            ds, report = discover(source, measure, n=args.n, holdout=args.holdout, seed=args.seed,
                                  estimator=args.estimator, step=args.step, batch=args.batch, refine=args.refine,
                                  calibrate=not args.no_calibrate, progress=not args.quiet, log=log)
            report["settings"]["aligned"] = str(aligned)
            cached = save_cached(source.checkpoint_hash, args.measure, ds, report)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        ds.save(args.out)
        report_path(args.out).write_text(json.dumps(report, indent=1) + "\n")
        if not args.no_grid:
            save_grid(source, measure, ds, report, args.out.with_name(args.out.stem + ".grid.png"), seed=args.seed)
    except NoFaceError as exc:
        fail(PROG, str(exc))
    except ImportError as exc:        # the faces extra is missing
        fail(PROG, str(exc).splitlines()[0])
    except (UsageError, ValueError, FileNotFoundError, OSError) as exc:
        fail(PROG, str(exc))
    print(f"{'role':<12} {'R²':>6} {'gain/σ':>8} {'id dist':>8} {'layers':>7} {'unit':>10}")
    for role, r in report["roles"].items():
        unit = r.get("unit", {})
        unit = f"{unit['sigma_per_unit']:.2f} σ" + ("!" if unit.get("capped") else "") \
            if unit.get("unit") == "calibrated" else "σ"
        print(f"{role:<12} {r['r2']:6.3f} {r['gain_per_sigma_scaled']:8.3f} {r['identity_distance_2sigma']:8.3f} "
              f"{r['layers'][0]:>3}-{r['layers'][1]:<3} {unit:>10}")
    if any(r.get("unit", {}).get("capped") for r in report["roles"].values()):
        print("!: the shipped drivers' unit was not reached within the allowed range (see the report's 'unit')")
    if report.get("left_out"):
        print(f"left out (not rendered by this generator): {', '.join(report['left_out'])}")
    print(f"wrote {os.fspath(args.out)} (+ report, grid; cached as {cached})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
