"""Demo world quality: does a demo generator turn its head, move its eyes, and draw sharply?

Every figure compares the generator with the renderer it was trained on, on the same held-out
codes (identities at rest, z from ``--seed``), so 1.0 means "as the renderer":

* ``gain``: for each motion field with a learned direction, the probe's change when the face is
  moved by one unit (x = 1: one standard deviation of the field over random faces) along the
  direction, divided by the probe's change on the renderer's face moved by the same amount
  (``mouth_open`` and ``blink`` rest at the end of their range and move 0 → 1; the others −1 → 1).
  Gaze is read by the eye probe (``--eye-probes``: a probe trained on the eye region only), the
  rest by the shipped probes. ``leakage``: how far each *other* field moved per unit, in that
  field's standard deviations (generator and renderer side by side); ``identity``: the RMS
  change of the probes' identity fields (fractions of their ranges; 0.1 counts as another face).
* ``sharpness``: the image energy above half the Nyquist frequency (0.25 cycles per pixel) of the
  generator's faces over the renderer's faces of the same codes.
* ``detected``: the share of faces dlib's detectors find (``hog``: the HOG detector, one
  upsample; ``mmod``: dlib's CNN detector), generator and renderer; ``landmark_mouth``: on the
  faces the CNN detector finds, whether dlib's mouth reading (inner-lip gap over the inter-ocular
  distance) grows with the ``mouth_open`` direction (x = 0, 1, 2).
* ``landmark_pose``: head yaw / pitch / roll per unit read by dlib's landmarks (the CNN detector,
  solvePnP) on the generator's and the renderer's moved faces, where both are found.
* ``fps_batch1``: frames per second of the synthesis at batch 1 on this machine (one thread).

    python -m benchmarks.demo_quality --generator demo --generator runs/demo2/demo_generator.safetensors

Writes benchmarks/results/demo_quality.json and .png (renderer row, then one row per generator).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import environment

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results" / "demo_quality.json"
DEFAULT_EYE_PROBES = REPO_ROOT / "engine" / "assets" / "demo_eye_probes.safetensors"
HF_CUTOFF = 0.25          # cycles per pixel: half the Nyquist frequency
#: the motion fields with a role, in the order reported
FIELDS = ("mouth_open", "mouth_width", "blink", "yaw", "pitch", "roll", "gaze_x", "gaze_y")
EYE_FIELDS = ("gaze_x", "gaze_y")


def hf_energy(images: np.ndarray, cutoff: float = HF_CUTOFF) -> np.ndarray:
    """[N] mean spectral power of the grey images above ``cutoff`` cycles per pixel (uint8 in),
    under a 2-D Hann window (the image's edges would otherwise wrap into a step at every frequency)."""
    grey = np.asarray(images, np.float64).mean(axis=-1) / 255.0
    grey = grey - grey.mean(axis=(1, 2), keepdims=True)
    h, w = grey.shape[1:]
    spec = np.abs(np.fft.rfft2(grey * np.outer(np.hanning(h), np.hanning(w)))) ** 2
    fy = np.fft.fftfreq(h)[:, None]
    fx = np.fft.rfftfreq(w)[None, :]
    high = np.sqrt(fx ** 2 + fy ** 2) > cutoff
    return (spec * high).sum(axis=(1, 2)) / (h * w)


def held_out_codes(n: int, seed: int) -> np.ndarray:
    """[n, Z_DIM] codes of the demo world with every motion field at rest."""
    from engine.demo_world.latent import MOTION_Z, Z_DIM, at_rest
    return at_rest(np.random.default_rng(seed).standard_normal((n, Z_DIM)), MOTION_Z)


def span(field: str) -> tuple[float, float]:
    """The move (x_lo, x_hi) measured for a field: 0 → 1 from the end of its range, else −1 → 1."""
    from engine.demo_world.latent import rest_motion, MOTION_Z
    from engine.demo_world.params import MOTION_RANGES
    rest = rest_motion()[MOTION_Z.index(field)]
    return (0.0, 1.0) if rest <= MOTION_RANGES[field][0] + 1e-9 else (-1.0, 1.0)


def render_moved(z: np.ndarray, moves: dict[str, float]) -> np.ndarray:
    """The renderer's faces of codes ``z`` with motion fields moved by x units (clipped to range)."""
    from engine.demo_world.faces import render_face
    from engine.demo_world.latent import MOTION_SCALE, params_from_z
    from engine.demo_world.params import MOTION_RANGES
    out = []
    for code in z:
        ident, motion = params_from_z(code)
        changes = {f: float(np.clip(getattr(motion, f) + x * MOTION_SCALE[f], *MOTION_RANGES[f]))
                   for f, x in moves.items()}
        out.append(render_face(ident, dataclasses.replace(motion, **changes), 128, supersample=4))
    return np.stack(out)


class Subject:
    """A demo generator and its learned directions (field → W vector for one unit of x)."""

    def __init__(self, spec: str):
        from engine.avatar import DEMO_DIRECTIONS
        from engine.demo_world.name_directions import ROLE_OF
        from engine.latent.direction_set import DirectionSet
        from engine.synthesis.checkpoints import load_generator
        self.name = spec
        self.G = load_generator(spec).to(torch.float32)
        dirs = DEMO_DIRECTIONS if spec == "demo" else Path(spec).with_name("demo_directions.json")
        ds = DirectionSet.load(dirs, w_dim=self.G.w_dim)
        self.dirs = {f: torch.from_numpy(ds[ROLE_OF[f]].vector * ds[ROLE_OF[f]].stdev).to(torch.float32)
                     for f in FIELDS if ROLE_OF[f] in ds}

    @torch.no_grad()
    def render(self, z: np.ndarray, moves: dict[str, float]) -> np.ndarray:
        from engine.frames import images_to_uint8
        w = self.G.mapping.forward_w(torch.from_numpy(z).to(torch.float32))
        for f, x in moves.items():
            w = w + x * self.dirs[f]
        out = []
        for i in range(0, len(w), 16):
            ws = w[i:i + 16].unsqueeze(1).repeat(1, self.G.num_ws, 1)
            out.append(images_to_uint8(self.G.synthesis(ws, noise_mode="const")))
        return np.concatenate(out)

    def fps_batch1(self, frames: int = 100) -> float:
        ws = self.G.mapping.w_avg.reshape(1, 1, -1).repeat(1, self.G.num_ws, 1)
        with torch.no_grad():
            for _ in range(5):
                self.G.synthesis(ws, noise_mode="const")
            t0 = time.perf_counter()
            for _ in range(frames):
                self.G.synthesis(ws, noise_mode="const")
        return frames / (time.perf_counter() - t0)


class Readers:
    """The shipped probes (every field but gaze, and the identity fields) and the eye probe."""

    def __init__(self, eye_probes: Path | None):
        from engine.demo_world.probe_measure import DEMO_PROBES, ProbeMeasure
        from engine.demo_world.probes import load_probes
        self.main = load_probes(DEMO_PROBES)
        self.identity = ProbeMeasure(self.main)
        self.eyes = load_probes(eye_probes) if eye_probes is not None and Path(eye_probes).is_file() else None

    def read(self, images: np.ndarray) -> dict[str, np.ndarray]:
        vals = {f: v.astype(np.float64) for f, v in self.main.predict(images).items() if f in FIELDS}
        for f in EYE_FIELDS:
            vals.pop(f, None)
        if self.eyes is not None:
            vals.update({f: v.astype(np.float64) for f, v in self.eyes.predict(images).items() if f in EYE_FIELDS})
        return vals


def gains(subject: Subject, readers: Readers, z: np.ndarray, reference: dict) -> dict:
    """Per field: gain against the renderer, leakage into the other fields, identity change."""
    from engine.demo_world.latent import MOTION_SCALE
    out = {}
    for field in FIELDS:
        if field not in subject.dirs:
            out[field] = {"gain": 0.0, "note": "no learned direction"}
            continue
        if field not in reference["reads"]:
            out[field] = {"gain": None, "note": "no probe reads this field"}
            continue
        lo, hi = span(field)
        a, b = subject.render(z, {field: lo}), subject.render(z, {field: hi})
        ra, rb = readers.read(a), readers.read(b)
        dg = {f: (rb[f] - ra[f]) / (hi - lo) for f in ra}
        dr = reference["moves"][field]
        ident = np.sqrt(((readers.identity.embed(b) - readers.identity.embed(a)) ** 2).sum(axis=1))
        out[field] = {
            "gain": round(float(dg[field].mean() / dr["delta"][field]), 3),
            "probe_delta_per_unit": round(float(dg[field].mean()), 4),
            "renderer_probe_delta_per_unit": round(float(dr["delta"][field]), 4),
            "leakage_sd_per_unit": {f: round(float(np.abs(dg[f].mean()) / MOTION_SCALE[f]), 3)
                                    for f in dg if f != field},
            "renderer_leakage_sd_per_unit": {f: round(float(abs(dr["delta"][f]) / MOTION_SCALE[f]), 3)
                                             for f in dr["delta"] if f != field},
            "identity_rms": round(float(ident.mean()), 4),
            "renderer_identity_rms": round(float(dr["identity_rms"]), 4),
        }
    return out


def renderer_reference(readers: Readers, z: np.ndarray) -> dict:
    """The renderer's probe deltas per unit of each field, and its identity change."""
    moves, reads = {}, set()
    for field in FIELDS:
        lo, hi = span(field)
        a, b = render_moved(z, {field: lo}), render_moved(z, {field: hi})
        ra, rb = readers.read(a), readers.read(b)
        reads |= set(ra)
        if field not in ra:
            continue
        ident = np.sqrt(((readers.identity.embed(b) - readers.identity.embed(a)) ** 2).sum(axis=1))
        moves[field] = {"delta": {f: float((rb[f] - ra[f]).mean() / (hi - lo)) for f in ra},
                        "identity_rms": float(ident.mean())}
    return {"moves": moves, "reads": reads}


def detection(images: np.ndarray, measure) -> np.ndarray:
    return np.array([r.found and r.source == "detector" for r in measure.read_batch(images, embed=False)])


def landmark_mouth(subject: Subject, z: np.ndarray, measure) -> dict:
    """dlib's mouth reading at x = 0, 1, 2 on ``mouth_open`` for faces found at rest."""
    if "mouth_open" not in subject.dirs or not len(z):
        return {"faces": 0}
    steps = (0.0, 1.0, 2.0)
    reads = np.stack([[r.values()["mouth_open"] if r.found else np.nan
                       for r in measure.read_batch(subject.render(z, {"mouth_open": x}), embed=False)]
                      for x in steps], axis=1)
    ok = np.isfinite(reads).all(axis=1)
    if not ok.any():
        return {"faces": 0}
    r = reads[ok]
    centred = r - r.mean(axis=1, keepdims=True)
    xs = np.broadcast_to(np.array(steps) - np.mean(steps), r.shape)
    corr = float(np.corrcoef(xs.ravel(), centred.ravel())[0, 1]) if centred.std() > 0 else float("nan")
    return {"faces": int(ok.sum()), "grows_share": round(float((r[:, 2] > r[:, 0]).mean()), 3),
            "corr_with_x": round(corr, 3), "mean_reading": [round(float(v), 4) for v in r.mean(axis=0)]}


def landmark_pose(subject, z: np.ndarray, measure) -> dict:
    """Head yaw / pitch / roll gains read by dlib's landmarks (solvePnP, degrees): the generator's
    change per unit against the renderer's, on the faces found in all four images."""
    out = {}
    for field, key in (("yaw", "head_yaw"), ("pitch", "head_pitch"), ("roll", "head_roll")):
        if field not in subject.dirs:
            continue
        reads = []
        for src in (lambda m: subject.render(z, m), lambda m: render_moved(z, m)):
            pair = [measure.read_batch(src({field: x}), embed=False) for x in (-1.0, 1.0)]
            reads.append(np.array([[r.values()[key] if r.found else np.nan for r in side] for side in pair]))
        d_g, d_r = (r[1] - r[0] for r in reads)
        ok = np.isfinite(d_g) & np.isfinite(d_r)
        out[field] = {"faces": int(ok.sum())}
        if ok.sum() >= 2:
            out[field].update(gain=round(float(d_g[ok].mean() / d_r[ok].mean()), 3),
                              degrees_per_unit=round(float(d_g[ok].mean() / 2), 2),
                              renderer_degrees_per_unit=round(float(d_r[ok].mean() / 2), 2))
    return out


def run(args) -> dict:
    from engine.faces.measure import FaceMeasure
    from engine.generator_training.outputs import image_grid, save_png
    torch.set_num_threads(1)
    z = held_out_codes(args.faces, args.seed)
    readers = Readers(args.eye_probes)
    measures = {d: FaceMeasure(detector=d, upsample=1, aligned=False, embed=False) for d in ("hog", "mmod")}
    rest = render_moved(z, {})
    ref = renderer_reference(readers, z)
    hf_ref = hf_energy(rest)
    found_share = lambda imgs: {d: round(float(detection(imgs, m).mean()), 3) for d, m in measures.items()}  # noqa: E731
    report = {"faces": args.faces, "seed": args.seed, "eye_probes": str(args.eye_probes) if readers.eyes else None,
              "renderer": {"detected": found_share(rest)}, "generators": {}}
    rows = [rest[:args.grid]]
    for spec in args.generator:
        s = Subject(spec)
        imgs = s.render(z, {})
        hf = hf_energy(imgs)
        r = {"directions": sorted(s.dirs),
             "sharpness": round(float(hf.sum() / hf_ref.sum()), 3),
             "sharpness_median_per_face": round(float(np.median(hf / hf_ref)), 3),
             "detected": found_share(imgs),
             "landmark_mouth": landmark_mouth(s, z[detection(imgs, measures["mmod"])], measures["mmod"]),
             "gains": gains(s, readers, z, ref),
             "landmark_pose": landmark_pose(s, z, measures["mmod"]),
             "fps_batch1": round(s.fps_batch1(), 1)}
        report["generators"][spec] = r
        rows.append(imgs[:args.grid])
        if "yaw" in s.dirs:
            rows.append(s.render(z[:args.grid], {"yaw": 1.5}))
        print(f"[demo_quality] {spec}: sharpness {r['sharpness']}, detected {r['detected']} (renderer "
              f"{report['renderer']['detected']}), gains "
              + ", ".join(f"{f} {g['gain']}" for f, g in r["gains"].items()), flush=True)
    save_png(image_grid(np.concatenate(rows), args.grid), args.out.with_suffix(".png"))
    return report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.demo_quality", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--generator", action="append", default=None,
                    help="a demo generator (a path with demo_directions.json beside it, or 'demo'); repeat to compare")
    ap.add_argument("--faces", type=int, default=64, help="held-out identities (default 64)")
    ap.add_argument("--seed", type=int, default=31_337, help="seed of the held-out codes")
    ap.add_argument("--eye-probes", type=Path, default=DEFAULT_EYE_PROBES, help="the probe that reads gaze")
    ap.add_argument("--grid", type=int, default=8, help="faces per row of the picture")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    args.generator = args.generator or ["demo"]
    if args.faces < 2:
        ap.error("--faces must be at least 2")
    args.grid = min(args.grid, args.faces)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    report = run(args)
    report["seconds"] = round(time.perf_counter() - t0, 1)
    report["environment"] = environment(torch.device("cpu"))
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {args.out} (picture {args.out.with_suffix('.png')})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
