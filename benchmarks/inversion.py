"""Photo inversion where the truth is known, and on real photos.

Held-out demo-world faces, drawn by the demo world's renderer (not by the generator), go through
the whole photo path into the demo generator. Per face: the renderer's 256 px image is the
"photo"; it is searched for a face and aligned (the demo template; where dlib's detector misses
the cartoon face, the photo is resized instead and the row says so), then inverted three ways:
W only, W then W+, and W+ then pivotal tuning (PTI). Measured per way: PSNR / SSIM of the
reconstruction against the crop, the identity distance, and the demo probes' reading of every
identity field of the reconstruction against the field's true value (correlation over the faces;
the probes' reading of the photo itself is the ceiling); for the tuned way also how each motion
direction's image change was kept. With ``--lipsync DIR``, the first face's three identities
speak the held-out utterances (``benchmarks.lipsync``) beside the usual seeds.

Then the real photos that ship inside installed packages (scikit-image's astronaut, matplotlib's
Grace Hopper): the eye and mouth centres after alignment against where the FFHQ recipe and the
demo template put them (pixels), the whole path into the demo generator (W+, tuned) and into a
random FFHQ-shape network; and the time per projection step of FFHQ-shape networks at
``--sizes`` px. Writes JSON and a grid (photo | aligned | W | W+ | tuned | tuned mouth open |
tuned blink).

    python -m benchmarks.inversion                 # 8 faces, 200 + 100 steps, 150 tuning steps
    python -m benchmarks.inversion --lipsync talking/holdout --sizes 256 512 1024
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import (
    REPO_ROOT,
    build_random_generator,
    environment,
    ffhq_shape_config,
)

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


VARIANTS = ("w", "w+", "w+ tuned")


def _variant_settings(args, variant: str):
    from engine.inversion.project import Settings
    from engine.inversion.tune import TuneSettings

    if variant == "w":
        return Settings(steps=args.steps, wplus_steps=0, space="w"), None
    return Settings(steps=args.steps, wplus_steps=args.wplus_steps), (
        TuneSettings(steps=args.tune_steps) if variant == "w+ tuned" else None)


def invert_variants(G, photo, small, directions, args) -> tuple[str, dict]:
    """(path, variant → IdentityFile): the photo inverted in W, in W+ and in W+ then tuned."""
    from engine.faces.photo import NoFaceInPhoto
    from engine.inversion.run import invert_photo

    out, path = {}, "detected and aligned"
    for variant in VARIANTS:
        settings, tune = _variant_settings(args, variant)
        kw = dict(name="demo", settings=settings, tune=tune, directions=directions, progress=False)
        try:
            out[variant], _ = invert_photo(G, photo if path.startswith("detected") else small,
                                           aligned=not path.startswith("detected"), **kw)
        except NoFaceInPhoto:
            path = "no face found: resized"
            out[variant], _ = invert_photo(G, small, aligned=True, **kw)
    return path, out


def run(args) -> dict:
    from PIL import Image

    from engine.avatar import DEMO_DIRECTIONS
    from engine.demo_world.latent import params_from_z, render_z
    from engine.demo_world.params import IDENTITY_FIELDS
    from engine.demo_world.probe_measure import DEMO_PROBES
    from engine.demo_world.probes import load_probes
    from engine.latent.direction_set import DirectionSet
    from engine.synthesis import load_generator

    torch.manual_seed(0)
    G = load_generator("demo")
    directions = DirectionSet.load(DEMO_DIRECTIONS)
    probes = load_probes(DEMO_PROBES)
    rows, grid, truth, read_photo = [], [], [], []
    read_recon: dict[str, list] = {v: [] for v in VARIANTS}
    kept: dict[str, object] = {}
    for i, z in enumerate(held_out_codes(args.faces, args.seed)):
        photo = render_z(z, size=256)
        small = np.asarray(Image.fromarray(photo).resize((G.img_resolution,) * 2, Image.LANCZOS))
        t0 = time.perf_counter()
        path, idents = invert_variants(G, photo, small, directions, args)
        seconds = time.perf_counter() - t0
        truth.append(params_from_z(z)[0].to_vector())
        read_photo.append(small)
        row = {"face": i, "path": path, "seconds_all_variants": round(seconds, 1)}
        for v, ident in idents.items():
            rep = ident.meta["report"]
            read_recon[v].append(ident.reconstruction)
            row[v] = {k: rep.get(k) for k in ("psnr_db", "ssim", "identity_distance")} | {
                "seconds": round(rep["seconds_project"] + rep.get("tuning", {}).get("seconds", 0.0), 1)}
            if "tuning" in rep:
                row[v]["motion"] = rep["tuning"]["directions"]
                row[v]["others_psnr_db"] = rep["tuning"]["others_psnr_db"]
        rows.append(row)
        if i == 0:
            kept = idents
        print(f"[inversion] face {i}: {path}, " + ", ".join(f"{v} {row[v]['psnr_db']} dB" for v in VARIANTS), flush=True)
        if i < args.grid_rows:
            tuned = idents["w+ tuned"]
            Gt = _tuned_generator(G, tuned)
            grid.append(np.concatenate([small, idents["w"].crop] + [idents[v].reconstruction for v in VARIANTS] + [
                _moved(Gt, tuned.ws, directions, "mouth_open", 2.0), _moved(Gt, tuned.ws, directions, "blink", 2.0)],
                axis=1))
    truth_a = np.stack(truth)
    pred_photo = probes.predict(np.stack(read_photo))
    preds = {v: probes.predict(np.stack(read_recon[v])) for v in VARIANTS}
    fields = {}
    for j, name in enumerate(IDENTITY_FIELDS):
        if name not in pred_photo or np.std(truth_a[:, j]) < 1e-6:
            continue
        corr = lambda p: float(np.corrcoef(p, truth_a[:, j])[0, 1]) if np.std(p) > 1e-9 else float("nan")  # noqa: E731
        fields[name] = {v: round(corr(preds[v][name]), 3) for v in VARIANTS} | {"photo (ceiling)": round(
            corr(pred_photo[name]), 3)}
    if grid:
        Image.fromarray(np.concatenate(grid, axis=0)).save(args.out.with_suffix(".png"))
    summary = {}
    for v in VARIANTS:
        c = [f[v] for f in fields.values() if np.isfinite(f[v])]
        summary[v] = {"psnr_db_median": float(np.median([r[v]["psnr_db"] for r in rows])),
                      "ssim_median": float(np.median([r[v]["ssim"] for r in rows])),
                      "median_field_correlation": float(np.median(c)) if c else None}
    report = {"benchmark": "inversion", "faces": rows, "identity_fields": fields, "summary": summary,
              "settings": {"steps": args.steps, "wplus_steps": args.wplus_steps, "tune_steps": args.tune_steps,
                           "seed": args.seed},
              "detected": sum(r["path"].startswith("detected") for r in rows)}
    if args.lipsync is not None:
        report["lipsync"] = lipsync_of(kept, args)
    report["real_photos"] = real_photos(G, directions, args)
    sizes = {}
    for res in args.sizes:
        sizes[str(res)] = round(step_time(res), 3)
        print(f"[inversion] FFHQ-shape {res} px: {sizes[str(res)]} s per step", flush=True)
    report["seconds_per_step_ffhq_shape"] = sizes
    return report


def _tuned_generator(G, ident):
    import copy

    from engine.inversion.project import apply_noise
    from engine.inversion.tune import apply_tuned

    Gt = copy.deepcopy(G)
    apply_noise(Gt, {k: torch.from_numpy(v) for k, v in ident.noise.items()})
    apply_tuned(Gt, {k: torch.from_numpy(v) for k, v in ident.tuned.items()})
    return Gt


#: eye-to-mouth over eye-to-eye distance where the FFHQ recipe's two crop-size rules meet
#: (2 |eye-to-eye| = 1.8 |eye-to-mouth|)
RECIPE_RATIO = 2.0 / 1.8
#: where the recipe puts the eye centres and the mouth centre of such a face, as fractions of the
#: crop side: eyes a quarter side apart, their midpoint 0.1 eye-to-mouth above the centre
RECIPE_POINTS = np.array([[0.375, 0.5 - 0.1 * 0.25 * RECIPE_RATIO], [0.625, 0.5 - 0.1 * 0.25 * RECIPE_RATIO],
                          [0.5, 0.5 + 0.9 * 0.25 * RECIPE_RATIO]])


def _points(landmarks: np.ndarray) -> np.ndarray:
    """[3, 2]: the photo's left and right eye centres and mouth centre (dlib 68-point indices)."""
    return np.stack([landmarks[36:42].mean(0), landmarks[42:48].mean(0), (landmarks[48] + landmarks[54]) / 2])


def _in_quad(quad: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """Fractions (u across, v down) of the recipe's square, placed in a template quad [4, 2]."""
    return quad[0] + uv[:, :1] * (quad[3] - quad[0]) + uv[:, 1:] * (quad[1] - quad[0])


def alignment_check(photo: np.ndarray, landmarks: np.ndarray, size: int, template) -> dict:
    """Landmark positions in the aligned crop against where the template puts them (pixels), and
    dlib's landmarks found again in the crop against the transformed ones."""
    from engine.faces import FaceMeasure
    from engine.faces.align import align_face

    face = align_face(photo, landmarks, size, template)
    got = _points(face.landmarks_aligned)
    want = (RECIPE_POINTS if template is None else _in_quad(np.asarray(template), RECIPE_POINTS)) * size
    again = FaceMeasure(aligned="auto", embed=False).read(face.image, embed=False)
    off = np.linalg.norm(got - want, axis=1)
    return {"size": size, "points": ["left eye", "right eye", "mouth"], "aligned_px": got.round(1).tolist(),
            "template_px": want.round(1).tolist(), "offset_px": off.round(1).tolist(),
            "offset_over_eye_distance": round(float(off.max() / np.linalg.norm(want[1] - want[0])), 3),
            "redetected_median_px": None if again.landmarks is None else round(float(np.median(
                np.linalg.norm(again.landmarks - face.landmarks_aligned, axis=1))), 2)}


def real_photos(G, directions, args) -> dict:
    """The photos that ship inside installed packages (never copied into the repository): their
    alignment against the FFHQ recipe and the demo template, the whole path into the demo generator
    (W+ and tuned) and into a random FFHQ-shape network at 256 px."""
    import matplotlib.cbook
    import skimage.data

    from engine.faces.photo import find_face, load_photo
    from engine.inversion.framing import template_for
    from engine.inversion.project import Settings
    from engine.inversion.run import invert_photo
    from engine.inversion.tune import TuneSettings
    from engine.synthesis.fingerprint import generator_hash

    photos = {"astronaut (scikit-image)": skimage.data.astronaut(),
              "Grace Hopper (matplotlib)": load_photo(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))}
    template = template_for(G, "demo", generator_hash(G))
    steps = args.photo_steps or args.steps
    ffhq = build_random_generator(ffhq_shape_config(256))
    out = {}
    for name, photo in photos.items():
        reading = find_face(photo)
        row = {"photo_px": list(photo.shape[:2]),
               "alignment_ffhq_1024": alignment_check(photo, reading.landmarks, 1024, None),
               "alignment_demo_template_128": alignment_check(photo, reading.landmarks, 128, template)}
        for label, tune in (("demo w+", None), ("demo w+ tuned", TuneSettings(steps=args.tune_steps))):
            ident, _ = invert_photo(G, photo, name="demo", settings=Settings(steps=steps, wplus_steps=args.wplus_steps),
                                    tune=tune, directions=directions, progress=False)
            rep = ident.meta["report"]
            row[label] = {k: rep.get(k) for k in ("psnr_db", "ssim", "identity_distance", "landmark_error_px")} | {
                "seconds": round(rep["seconds_align"] + rep["seconds_project"] + rep.get("tuning", {}).get("seconds", 0), 1)}
            if tune is not None:
                row[label]["motion"] = rep["tuning"]["directions"]
        t0 = time.perf_counter()
        ident, _ = invert_photo(ffhq, photo, name="ffhq-shape-256", settings=Settings(steps=3, wplus_steps=2,
                                                                                      init_samples=2), progress=False)
        row["ffhq-shape 256 px (random weights, 5 steps)"] = {"seconds": round(time.perf_counter() - t0, 1),
                                                               "crop_px": list(ident.crop.shape[:2])}
        out[name] = row
        print(f"[inversion] {name}: FFHQ offsets {row['alignment_ffhq_1024']['offset_px']} px at 1024, "
              f"demo W+ {row['demo w+']['psnr_db']} dB, tuned {row['demo w+ tuned']['psnr_db']} dB", flush=True)
    return out


def lipsync_of(idents: dict, args) -> dict:
    """``benchmarks.lipsync`` with the first held-out face's inverted identities speaking every
    utterance (an engine of their own each: noise maps and tuned weights are per engine)."""
    import tempfile

    from benchmarks.lipsync import evaluate, read_utterances
    from engine.demo_world.probe_measure import DEMO_PROBES
    from engine.demo_world.probes import load_probes
    from engine.inversion.identity_file import write_identity
    from engine.session import AvatarEngine

    utts = read_utterances(args.lipsync)[: args.lipsync_limit]
    read = load_probes(DEMO_PROBES).predict
    out = {"utterances": len(utts)}
    with tempfile.TemporaryDirectory() as tmp:
        for v, ident in [("seeds", None), *idents.items()]:
            engine = AvatarEngine("demo")
            identity = None if ident is None else str(write_identity(Path(tmp) / f"{v.replace(' ', '_')}.npz", ident))
            r = evaluate(engine, [engine.default_driver], utts, read, identity=identity)[engine.default_driver]
            out[v] = {k: round(r[k], 4) for k in ("corr", "best_corr", "corr_median_utterance")} | {"frames": r["frames"]}
            engine.close()
            print(f"[inversion] lip-sync, {v}: corr {out[v]['corr']:.3f}", flush=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.inversion", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--faces", type=int, default=8)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--wplus-steps", type=int, default=100)
    ap.add_argument("--tune-steps", type=int, default=150)
    ap.add_argument("--lipsync", type=Path, default=None, metavar="DIR",
                    help="held-out talking data (python -m engine.demo_world.talking): lip-sync of the first face's "
                         "inverted identities against seeds")
    ap.add_argument("--lipsync-limit", type=int, default=None, help="at most this many utterances")
    ap.add_argument("--photo-steps", type=int, default=None, help="W steps for the real photos (default --steps)")
    ap.add_argument("--seed", type=int, default=90_210, help="seed of the held-out codes")
    ap.add_argument("--sizes", type=int, nargs="*", default=[256, 512], help="FFHQ-shape sizes to time a step at")
    ap.add_argument("--grid-rows", type=int, default=6)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    report = run(args)
    report["environment"] = environment(torch.device("cpu"))
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps({k: report[k] for k in ("detected", "summary", "seconds_per_step_ffhq_shape")}))
    print(f"wrote {args.out} (grid {args.out.with_suffix('.png')})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
