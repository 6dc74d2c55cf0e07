"""The demo world's latent code: a Gaussian vector z that *is* a face's parameters.

``params_from_z(z)`` turns z ~ N(0, I) of width :data:`Z_DIM` into an (Identity, Motion) pair
distributed like :func:`~engine.demo_world.params.sample_identity` /
:func:`~engine.demo_world.params.sample_motion` draw them: each coordinate goes through the
standard normal CDF to a uniform u in (0, 1), and the uniforms are used where the samplers use
random draws (skin tone along the light–dark line, categorical hair / eye colours, small colour
jitters, shapes, hair style); head angles and gaze are 0.45·z clipped to ±1. Two motion fields are
continuous here where the samplers use point masses in the same proportions: the mouth is closed
for u < 0.2 and opens linearly above, the eyes are open for u < 0.4, closed above 0.85 and in
between linearly.

This is what lets ``python -m engine.train_demo --objective recon`` train the StyleGAN2 generator
as a decoder: for a random z the target image is ``render_face(*params_from_z(z))``, and
``G(z)`` for a seed's z is a random face of the world. The motion coordinates of z are named
(:data:`Z_FIELDS`), so a talking track becomes a z trajectory (and through the mapping network a
w trajectory) exactly: :func:`z_for_mouth` inverts the mouth map.
"""
from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from .faces import render_face
from .params import (
    _EYE_COLOURS,
    _HAIR_COLOURS,
    _HAIR_P,
    _SKIN_TONES,
    HAIR_STYLES,
    Identity,
    Motion,
    _rgb,
)

__all__ = ["REST", "rest_pairs", "at_rest", "motion_params", "rest_motion", "motion_x", "MOTION_SCALE", "Z_FIELDS", "Z_DIM", "IDENTITY_Z", "MOTION_Z", "LATENT_VERSION", "params_from_z", "render_z",
           "mouth_from_z", "z_for_mouth", "normal_cdf", "normal_ppf"]

LATENT_VERSION = 1            # bump when params_from_z changes

IDENTITY_Z = (
    "skin_tone", "skin_jr", "skin_jg", "skin_jb",
    "hair_colour", "hair_jr", "hair_jg", "hair_jb",
    "eye_colour", "eye_jr", "eye_jg", "eye_jb",
    "face_w", "face_h", "jaw", "brow_thickness", "brow_tilt", "nose_len", "nose_w", "eye_size",
    "eye_spacing", "lip_thickness", "hair_style",
    "bg_r", "bg_g", "bg_b", "shirt_r", "shirt_g", "shirt_b",
)
MOTION_Z = ("mouth_open", "mouth_width", "smile", "blink", "yaw", "pitch", "roll", "gaze_x", "gaze_y")
Z_FIELDS = IDENTITY_Z + MOTION_Z
Z_DIM = len(Z_FIELDS)
_I = {name: i for i, name in enumerate(Z_FIELDS)}

MOUTH_CLOSED_U = 0.2          # u below this: mouth closed
BLINK_OPEN_U, BLINK_CLOSED_U = 0.4, 0.85
HEAD_SCALE = 0.45

_HAIR_CDF = np.cumsum(_HAIR_P) / np.sum(_HAIR_P)


def normal_cdf(z):
    """Φ(z), elementwise (numpy)."""
    z = np.asarray(z, np.float64)
    return 0.5 * (1.0 + np.vectorize(math.erf, otypes=[np.float64])(z / math.sqrt(2.0)))


def normal_ppf(u):
    """Φ⁻¹(u) for u in (0, 1), elementwise (numpy; bisection on :func:`normal_cdf`, error < 1e-12)."""
    u = np.clip(np.asarray(u, np.float64), 1e-12, 1 - 1e-12)
    lo, hi = np.full_like(u, -8.0), np.full_like(u, 8.0)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        below = normal_cdf(mid) < u
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
    return 0.5 * (lo + hi)


def _check(z) -> np.ndarray:
    z = np.asarray(z, np.float64)
    if z.shape != (Z_DIM,):
        raise ValueError(f"a demo-world z has {Z_DIM} values, got shape {tuple(z.shape)}")
    if not np.all(np.isfinite(z)):
        raise ValueError("a demo-world z must be finite")
    return z


def mouth_from_z(z_mouth):
    """Mouth opening (0..1) of the ``mouth_open`` coordinate of z."""
    u = normal_cdf(z_mouth)
    return np.clip((u - MOUTH_CLOSED_U) / (1.0 - MOUTH_CLOSED_U), 0.0, 1.0)


def z_for_mouth(opening, closed_z: float | None = None):
    """The ``mouth_open`` coordinate that gives ``opening`` (0..1); a closed mouth maps to
    ``closed_z`` (default: the boundary Φ⁻¹(0.2) − 0.5, well inside the closed range)."""
    m = np.clip(np.asarray(opening, np.float64), 0.0, 1.0)
    z = normal_ppf(MOUTH_CLOSED_U + (1.0 - MOUTH_CLOSED_U) * np.maximum(m, 1e-6))
    boundary = float(normal_ppf(MOUTH_CLOSED_U))
    closed = boundary - 0.5 if closed_z is None else float(closed_z)
    return np.where(m <= 0.0, closed, z)


def params_from_z(z: Sequence[float]) -> tuple[Identity, Motion]:
    """The face (identity, motion) that the demo-world code ``z`` [Z_DIM] stands for."""
    z = _check(z)
    u = normal_cdf(z)
    g = lambda name: float(u[_I[name]])                     # noqa: E731
    t = g("skin_tone") * (len(_SKIN_TONES) - 1)
    i = min(int(t), len(_SKIN_TONES) - 2)
    jitter = lambda prefix, amp: amp * (2.0 * np.array([g(prefix + c) for c in "rgb"]) - 1.0)  # noqa: E731
    skin = _SKIN_TONES[i] + (t - i) * (_SKIN_TONES[i + 1] - _SKIN_TONES[i]) + jitter("skin_j", 0.03)
    hair_k = min(int(np.searchsorted(_HAIR_CDF, g("hair_colour"), side="right")), len(_HAIR_COLOURS) - 1)
    hair = _HAIR_COLOURS[hair_k] + jitter("hair_j", 0.05)
    eye_k = min(int(g("eye_colour") * len(_EYE_COLOURS)), len(_EYE_COLOURS) - 1)
    eye = _EYE_COLOURS[eye_k] + jitter("eye_j", 0.04)
    ident = Identity(
        face_w=g("face_w"), face_h=g("face_h"), jaw=g("jaw"), skin=_rgb(skin),
        hair_style=min(int(g("hair_style") * HAIR_STYLES), HAIR_STYLES - 1),
        hair_rgb=_rgb(hair), eye_rgb=_rgb(eye), brow_thickness=g("brow_thickness"),
        brow_tilt=2.0 * g("brow_tilt") - 1.0, nose_len=g("nose_len"), nose_w=g("nose_w"),
        eye_size=g("eye_size"), eye_spacing=g("eye_spacing"), lip_thickness=g("lip_thickness"),
        bg_rgb=_rgb([0.15 + 0.8 * g(f"bg_{c}") for c in "rgb"]),
        shirt_rgb=_rgb([0.05 + 0.9 * g(f"shirt_{c}") for c in "rgb"]))
    head = lambda name: float(np.clip(HEAD_SCALE * z[_I[name]], -1.0, 1.0))  # noqa: E731
    blink_u = g("blink")
    motion = Motion(
        mouth_open=float(mouth_from_z(z[_I["mouth_open"]])), mouth_width=g("mouth_width"),
        smile=2.0 * g("smile") - 1.0,
        blink=float(np.clip((blink_u - BLINK_OPEN_U) / (BLINK_CLOSED_U - BLINK_OPEN_U), 0.0, 1.0)),
        yaw=head("yaw"), pitch=head("pitch"), roll=head("roll"), gaze_x=head("gaze_x"), gaze_y=head("gaze_y"))
    return ident, motion


def render_z(z: np.ndarray, size: int = 128, supersample: int = 4) -> np.ndarray:
    """Renders of codes ``z`` [Z_DIM] or [N, Z_DIM]: uint8 [size, size, 3] or [N, size, size, 3]."""
    z = np.asarray(z)
    if z.ndim == 1:
        return render_face(*params_from_z(z), size, supersample=supersample)
    if z.ndim != 2:
        raise ValueError(f"z must be [Z_DIM] or [N, Z_DIM], got shape {tuple(z.shape)}")
    return np.stack([render_face(*params_from_z(row), size, supersample=supersample) for row in z])


#: the motion coordinates of a face at rest: mouth closed, neutral width and smile, eyes open,
#: head straight, gaze ahead (``GeneratorConfig.z_rest`` of the recon-trained demo generator)
REST = {
    "mouth_open": float(z_for_mouth(0.0)),
    "mouth_width": 0.0, "smile": 0.0,
    "blink": float(normal_ppf(BLINK_OPEN_U / 2)),
    "yaw": 0.0, "pitch": 0.0, "roll": 0.0, "gaze_x": 0.0, "gaze_y": 0.0,
}


def rest_pairs() -> list:
    """``[[index, value], ...]`` of :data:`REST` for ``GeneratorConfig.z_rest``."""
    return [[_I[name], value] for name, value in REST.items()]


def at_rest(z, names):
    """A copy of codes ``z`` [N, Z_DIM] (numpy or torch) with the motion fields ``names`` at rest."""
    z = z.clone() if hasattr(z, "clone") else np.array(z, copy=True)
    for name in names:
        z[:, _I[name]] = REST[name]
    return z


def motion_params(z) -> np.ndarray:
    """The motion fields of codes ``z`` [..., Z_DIM] in the renderer's units, [..., 9] float64 in
    :data:`MOTION_Z` order (mouth opening 0..1, blink 0..1, head angles ±1, ...)."""
    z = np.asarray(z, np.float64)
    flat = z.reshape(-1, Z_DIM)
    out = np.array([params_from_z(row)[1].to_vector() for row in flat], np.float64)
    return out.reshape(*z.shape[:-1], len(MOTION_Z))


def rest_motion() -> np.ndarray:
    """[9] motion fields of a face at rest (:data:`REST`)."""
    z = np.zeros(Z_DIM)
    for i, v in rest_pairs():
        z[i] = v
    return motion_params(z)


def _motion_scale() -> dict:
    """Standard deviation of each motion field over random codes (a fixed sample of 20,000)."""
    z = np.random.default_rng(20240).standard_normal((20000, len(MOTION_Z)))
    u = normal_cdf(z)
    cols = {
        "mouth_open": mouth_from_z(z[:, 0]), "mouth_width": u[:, 1], "smile": 2 * u[:, 2] - 1,
        "blink": np.clip((u[:, 3] - BLINK_OPEN_U) / (BLINK_CLOSED_U - BLINK_OPEN_U), 0, 1),
    }
    for j, name in enumerate(MOTION_Z[4:], start=4):
        cols[name] = np.clip(HEAD_SCALE * z[:, j], -1, 1)
    return {name: float(np.std(cols[name])) for name in MOTION_Z}


#: per motion field, its standard deviation over random faces: one x unit of the demo generator's
#: direction of that field (x = (value − rest) / scale, as PCA units are standard deviations)
MOTION_SCALE = _motion_scale()


def motion_x(values, fields: Sequence[str] = MOTION_Z) -> np.ndarray:
    """Motion values [..., len(fields)] (renderer units) → x on the demo generator's directions:
    (value − rest) / :data:`MOTION_SCALE`, float64."""
    idx = [MOTION_Z.index(f) for f in fields]
    return (np.asarray(values, np.float64) - rest_motion()[idx]) / np.array([MOTION_SCALE[f] for f in fields])
