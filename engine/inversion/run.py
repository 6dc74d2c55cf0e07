"""Photo → identity: align, project, measure, package (what ``engine.invert`` and the server run)."""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Callable, Optional

import numpy as np
import torch

from engine.frames import images_to_uint8
from engine.inversion.identity_file import IdentityFile
from engine.inversion.project import Settings, project
from engine.inversion.tune import TuneSettings

__all__ = ["InversionError", "invert_photo", "reconstruction_report"]


class InversionError(ValueError):
    """The photo could not be inverted (one line)."""


def _to_uint8(img: torch.Tensor) -> np.ndarray:
    """The first image of a batch as uint8 HWC (:func:`engine.frames.images_to_uint8`)."""
    return images_to_uint8(img)[0]


def reconstruction_report(target: np.ndarray, recon: np.ndarray, aligned: str = "auto") -> dict:
    """PSNR (dB), SSIM and the identity distance (dlib embedding; < 0.6 the same person) of a
    reconstruction against its target (both uint8 [R, R, 3])."""
    from pytorch_msssim import ssim

    a = torch.from_numpy(np.array(target)).permute(2, 0, 1)[None].float() / 255
    b = torch.from_numpy(np.array(recon)).permute(2, 0, 1)[None].float() / 255
    mse = float((a - b).square().mean())
    out = {"psnr_db": round(10 * math.log10(1.0 / max(mse, 1e-12)), 2),
           "ssim": round(float(ssim(a, b, data_range=1.0, win_size=7 if min(target.shape[:2]) >= 7 else 3)), 4)}
    try:
        from engine.faces import FaceMeasure, identity_distance

        fm = FaceMeasure(aligned=aligned, embed=True)
        ra, rb = fm.read(target), fm.read(recon)
        if ra.embedding is not None and rb.embedding is not None:
            out["identity_distance"] = round(float(identity_distance(ra.embedding, rb.embedding)), 4)
            out["identity_read"] = f"{ra.source}/{rb.source}"
            if ra.landmarks is not None and rb.landmarks is not None:
                out["landmark_error_px"] = round(float(np.median(np.linalg.norm(ra.landmarks - rb.landmarks, axis=1))), 2)
    except ImportError:
        out["identity_distance"] = None       # the faces extra is not installed
    return out


#: lips apart by more than this (inner-lip gap / eye distance; closed ≈ 0, speech 0.1–0.5) or the
#: head turned more than this many degrees: the identity will not rest the way a talking face should
MOUTH_OPEN_WARN, TURN_WARN_DEG = 0.08, 20.0


def photo_warnings(face: dict) -> list[str]:
    """What in the photo's face will show in the avatar (one line each)."""
    out = []
    gap = face.get("mouth_open", math.nan)
    if math.isfinite(gap) and gap > MOUTH_OPEN_WARN:
        out.append(f"the lips are apart in the photo (gap {gap:.2f} of the eye distance): the avatar's mouth will "
                   "rest open and follow speech less well; a photo with closed lips talks best")
    turns = {k: face.get(k, math.nan) for k in ("head_yaw", "head_pitch")}
    turned = [f"{k.split('_')[1]} {v:+.0f}°" for k, v in turns.items() if math.isfinite(v) and abs(v) > TURN_WARN_DEG]
    if turned:
        out.append(f"the head is turned ({', '.join(turned)}): a frontal photo inverts and moves best")
    return out


def invert_photo(G, photo: np.ndarray, *, name: str, settings: Optional[Settings] = None, aligned: bool = False,
                 tune: Optional[TuneSettings] = None, directions=None, checkpoint: Optional[str] = None, D=None,
                 progress: bool = True, video: bool = False, log: Optional[Callable[[str], None]] = None,
                 callback: Optional[Callable[[str, int, int, dict], None]] = None,
                 ) -> tuple[IdentityFile, list[np.ndarray]]:
    """Invert a decoded photo (uint8 RGB) into ``G``. ``aligned``: the photo is already a crop
    for this generator. ``tune``: then tune the synthesis weights around the result (PTI),
    keeping ``directions`` (a DirectionSet) working. ``checkpoint``: the hash to record (default
    ``G``'s; an engine whose noise maps an identity replaced passes its checkpoint's). Returns the
    identity (ready for :func:`write_identity`) and, with ``video``, the frames (target |
    reconstruction) of the optimisation. ``D``: the checkpoint's discriminator (its features join
    the projection's losses)."""
    from engine.faces.align import align_face
    from engine.faces.photo import find_face
    from engine.inversion.framing import template_for
    from engine.synthesis.fingerprint import generator_hash

    settings = settings or Settings()
    if tune is not None and directions is None:
        raise ValueError("tuning needs the motion directions it must keep working")
    res = int(G.img_resolution)
    checkpoint = checkpoint or generator_hash(G)
    t0 = time.perf_counter()
    transform, expression = None, None
    if aligned:
        if abs(photo.shape[0] - photo.shape[1]) > 1:
            raise InversionError(f"--aligned needs a square crop, got {photo.shape[1]} x {photo.shape[0]} px")
        from engine.faces.models import import_cv2

        cv2 = import_cv2()
        crop = photo if photo.shape[0] == res else cv2.resize(
            photo, (res, res), interpolation=cv2.INTER_AREA if photo.shape[0] > res else cv2.INTER_CUBIC)
    else:
        reading = find_face(photo)
        expression = {k: round(float(v), 3) for k, v in reading.values().items()
                      if k in ("mouth_open", "head_yaw", "head_pitch", "head_roll")}
        template = template_for(G, name, checkpoint)
        face = align_face(photo, reading.landmarks, res, template)
        crop, transform = face.image, {**face.transform_dict(), "template": None if template is None else template.tolist()}
    warnings = [] if aligned else photo_warnings(expression)
    t_align = time.perf_counter() - t0
    frames: list[np.ndarray] = []
    total = settings.steps + (settings.wplus_steps if settings.space == "w+" else 0) + (tune.steps if tune else 0)

    def on_step(stage, step, steps, losses, img):
        if video:
            frames.append(np.concatenate([crop, _to_uint8(img)], axis=1))
        if callback is not None:
            callback(stage, step + (total - tune.steps if stage == "tune" else 0), total, losses)

    result = project(G, crop, settings, D=D, progress=progress, callback=on_step)
    t_project = time.perf_counter() - t0 - t_align
    recon = _to_uint8(result.image)
    aligned_mode = "demo" if name == "demo" else "auto"
    report = {"final": {k: round(v, 5) for k, v in result.final.items()}, "seconds_align": round(t_align, 2),
              "seconds_project": round(t_project, 2), "steps": settings.steps, "wplus_steps": settings.wplus_steps,
              **reconstruction_report(crop, recon, aligned=aligned_mode),
              "photo_face": expression, "warnings": warnings}
    noise = {} if not settings.optimize_noise else {k: v.cpu().numpy() for k, v in result.noise.items()}
    tuned_state, tuned_meta = None, None
    if tune is not None:
        tuned_state, tuned_meta, recon = _tune(G, crop, result, noise, tune, directions, report, progress, on_step)
        report.update(reconstruction_report(crop, recon, aligned=aligned_mode))
    if log is not None:
        for w in warnings:
            log(w)
        log(f"inverted in {time.perf_counter() - t0:.1f} s: PSNR {report['psnr_db']} dB, SSIM {report['ssim']}, "
            f"identity distance {report.get('identity_distance')}" + (" (tuned)" if tune is not None else ""))
    meta = {"generator_hash": checkpoint, "generator": name, "num_ws": int(G.num_ws), "w_dim": int(G.w_dim),
            "space": settings.space, "transform": transform, "report": report, "tuned": tuned_meta,
            "settings": dataclasses.asdict(settings) | ({"tune": dataclasses.asdict(tune)} if tune else {})}
    ident = IdentityFile(ws=result.ws.cpu().numpy().astype(np.float32), w=result.w.cpu().numpy().astype(np.float32),
                         noise=noise, meta=meta, crop=crop, reconstruction=recon,
                         tuned=None if tuned_state is None else {k: v.numpy() for k, v in tuned_state.items()})
    return ident, frames


def _tune(G, crop, result, noise, settings: TuneSettings, directions, report: dict, progress, on_step):
    """PTI around the projection's ws: (tuned state, the ``tuned`` meta, the tuned reconstruction);
    the untuned figures move to ``report["untuned"]`` and the motion check to ``report["tuning"]``."""
    import copy

    from engine.inversion.project import apply_noise, as_target
    from engine.inversion.tune import motion_report, tune
    from engine.synthesis.fingerprint import generator_hash

    t0 = time.perf_counter()
    G0 = copy.deepcopy(G).float().eval().requires_grad_(False)
    if noise:
        apply_noise(G0, {k: torch.from_numpy(v) for k, v in noise.items()})
    tuned = tune(G0, as_target(crop, int(G.img_resolution), G0.mapping.w_avg.device), result.ws, directions,
                 settings, progress=progress, callback=on_step)
    Gt = tuned.generator
    report["untuned"] = {k: report[k] for k in ("psnr_db", "ssim", "identity_distance", "landmark_error_px") if k in report}
    report["tuning"] = {"seconds": round(time.perf_counter() - t0, 2), "steps": settings.steps,
                        "final": {k: round(v, 5) for k, v in tuned.final.items() if k not in ("stage", "step")},
                        **motion_report(G0, Gt, result.ws, directions, units=settings.motion_units)}
    return tuned.state, {"generator_hash": generator_hash(Gt)}, _to_uint8(tuned.image)
