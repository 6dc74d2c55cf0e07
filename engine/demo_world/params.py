"""The demo world's face parameters: :class:`Identity` and :class:`Motion`, their fields and
ranges, and how a face is sampled (the renderer is :mod:`engine.demo_world.faces`).

Parameters (all floats; see ``IDENTITY_RANGES`` / ``MOTION_RANGES``)

Identity: ``face_w``, ``face_h`` (0 narrow/short .. 1 wide/long), ``jaw`` (0 pointed egg ..
1 square), ``skin``/``hair_rgb``/``eye_rgb``/``bg_rgb``/``shirt_rgb`` (RGB in 0..1),
``hair_style`` (int 0..HAIR_STYLES-1: crop, side part, long, bob with bangs, curly, receding),
``brow_thickness`` (0..1), ``brow_tilt`` (-1 inner ends down/angry .. 1 inner ends up/worried),
``nose_len``, ``nose_w``, ``eye_size``, ``eye_spacing``, ``lip_thickness`` (0..1).

Motion: ``mouth_open`` (0 closed .. 1 wide open), ``mouth_width`` (0 pursed .. 1 stretched),
``smile`` (-1 frown .. 1 smile), ``blink`` (0 open .. 1 closed), ``yaw`` (+1 = the face turns
30 degrees towards image right), ``pitch`` (+1 = looks up 20 degrees), ``roll`` (+1 = the head
tilts 20 degrees, top towards image right), ``gaze_x`` (+1 = pupils to image right), ``gaze_y``
(+1 = pupils down).
"""
from __future__ import annotations

import math
from dataclasses import astuple, dataclass, fields

import numpy as np

__all__ = [
    "Identity", "Motion", "IDENTITY_FIELDS", "MOTION_FIELDS", "IDENTITY_RANGES", "MOTION_RANGES",
    "HAIR_STYLES", "HAIR_STYLE_NAMES", "YAW_DEG", "PITCH_DEG", "ROLL_DEG", "sample_identity", "sample_motion",
]

HAIR_STYLE_NAMES = ("crop", "side_part", "long", "bob", "curly", "receding")
HAIR_STYLES = len(HAIR_STYLE_NAMES)
YAW_DEG, PITCH_DEG, ROLL_DEG = 30.0, 20.0, 20.0   # the angle at +-1

RGB = tuple[float, float, float]

# Flat vector layout: colours expand to three fields each.
IDENTITY_FIELDS = (
    "face_w", "face_h", "jaw", "skin_r", "skin_g", "skin_b", "hair_style",
    "hair_r", "hair_g", "hair_b", "eye_r", "eye_g", "eye_b", "brow_thickness", "brow_tilt",
    "nose_len", "nose_w", "eye_size", "eye_spacing", "lip_thickness",
    "bg_r", "bg_g", "bg_b", "shirt_r", "shirt_g", "shirt_b",
)
MOTION_FIELDS = ("mouth_open", "mouth_width", "smile", "blink", "yaw", "pitch", "roll",
                 "gaze_x", "gaze_y")

IDENTITY_RANGES: dict[str, tuple[float, float]] = {
    name: ((-1.0, 1.0) if name == "brow_tilt" else (0.0, float(HAIR_STYLES - 1)) if name == "hair_style"
           else (0.0, 1.0))
    for name in IDENTITY_FIELDS
}
MOTION_RANGES: dict[str, tuple[float, float]] = {
    name: ((0.0, 1.0) if name in ("mouth_open", "mouth_width", "blink") else (-1.0, 1.0))
    for name in MOTION_FIELDS
}


def _check_range(owner: str, name: str, value: float, lo: float, hi: float) -> None:
    if not (math.isfinite(value) and lo <= value <= hi):
        raise ValueError(f"{owner}.{name} = {value!r} is outside {lo:g} .. {hi:g}")


@dataclass(frozen=True)
class Identity:
    """Who the face is. Shape fields in 0..1 (``brow_tilt`` -1..1), colours RGB in 0..1."""
    face_w: float = 0.5
    face_h: float = 0.5
    jaw: float = 0.5
    skin: RGB = (0.87, 0.70, 0.58)
    hair_style: int = 1
    hair_rgb: RGB = (0.25, 0.15, 0.08)
    eye_rgb: RGB = (0.35, 0.22, 0.12)
    brow_thickness: float = 0.5
    brow_tilt: float = 0.0
    nose_len: float = 0.5
    nose_w: float = 0.5
    eye_size: float = 0.5
    eye_spacing: float = 0.5
    lip_thickness: float = 0.5
    bg_rgb: RGB = (0.55, 0.65, 0.75)
    shirt_rgb: RGB = (0.20, 0.30, 0.50)

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "hair_style":
                if int(value) != value or not 0 <= value < HAIR_STYLES:
                    raise ValueError(f"Identity.hair_style = {value!r} is not an int in 0 .. {HAIR_STYLES - 1}")
                object.__setattr__(self, "hair_style", int(value))
            elif isinstance(value, tuple):
                if len(value) != 3:
                    raise ValueError(f"Identity.{f.name} must be 3 floats (RGB), got {value!r}")
                object.__setattr__(self, f.name, tuple(float(v) for v in value))
                for v in value:
                    _check_range("Identity", f.name, float(v), 0.0, 1.0)
            else:
                object.__setattr__(self, f.name, float(value))
                lo, hi = IDENTITY_RANGES[f.name]
                _check_range("Identity", f.name, float(value), lo, hi)

    def to_vector(self) -> np.ndarray:
        """float32 [len(IDENTITY_FIELDS)] in the order of ``IDENTITY_FIELDS``."""
        out: list[float] = []
        for v in astuple(self):
            out.extend(v if isinstance(v, tuple) else (v,))
        return np.asarray(out, np.float32)

    @classmethod
    def from_vector(cls, vec) -> "Identity":
        """Inverse of :meth:`to_vector`; values are clipped to their ranges, hair_style rounded."""
        v = np.asarray(vec, np.float64).reshape(-1)
        if v.size != len(IDENTITY_FIELDS):
            raise ValueError(f"identity vector has {v.size} values, expected {len(IDENTITY_FIELDS)}")
        lo = np.array([IDENTITY_RANGES[n][0] for n in IDENTITY_FIELDS])
        hi = np.array([IDENTITY_RANGES[n][1] for n in IDENTITY_FIELDS])
        if not np.all(np.isfinite(v)):
            raise ValueError("identity vector has non-finite values")
        v = np.clip(v, lo, hi)
        it = iter(v.tolist())
        kwargs = {}
        for f in fields(cls):
            if f.name == "hair_style":
                kwargs[f.name] = int(round(next(it)))
            elif isinstance(f.default, tuple):
                kwargs[f.name] = (next(it), next(it), next(it))
            else:
                kwargs[f.name] = next(it)
        return cls(**kwargs)


@dataclass(frozen=True)
class Motion:
    """What the face does in one frame (ranges in ``MOTION_RANGES``)."""
    mouth_open: float = 0.0
    mouth_width: float = 0.5
    smile: float = 0.0
    blink: float = 0.0
    yaw: float = 0.0
    pitch: float = 0.0
    roll: float = 0.0
    gaze_x: float = 0.0
    gaze_y: float = 0.0

    def __post_init__(self) -> None:
        for name in MOTION_FIELDS:
            value = float(getattr(self, name))
            object.__setattr__(self, name, value)
            _check_range("Motion", name, value, *MOTION_RANGES[name])

    @classmethod
    def rest(cls) -> "Motion":
        """Neutral: mouth closed, no smile, eyes open and straight ahead, head upright."""
        return cls()

    def to_vector(self) -> np.ndarray:
        return np.asarray(astuple(self), np.float32)

    @classmethod
    def from_vector(cls, vec) -> "Motion":
        v = np.asarray(vec, np.float64).reshape(-1)
        if v.size != len(MOTION_FIELDS):
            raise ValueError(f"motion vector has {v.size} values, expected {len(MOTION_FIELDS)}")
        if not np.all(np.isfinite(v)):
            raise ValueError("motion vector has non-finite values")
        lo = np.array([MOTION_RANGES[n][0] for n in MOTION_FIELDS])
        hi = np.array([MOTION_RANGES[n][1] for n in MOTION_FIELDS])
        return cls(*np.clip(v, lo, hi).tolist())


# -- sampling ----------------------------------------------------------------------------------
_SKIN_TONES = np.array([(0.98, 0.85, 0.76), (0.94, 0.76, 0.63), (0.84, 0.62, 0.47),
                        (0.68, 0.47, 0.33), (0.49, 0.32, 0.22), (0.33, 0.21, 0.14)])
_HAIR_COLOURS = np.array([(0.07, 0.06, 0.05), (0.22, 0.13, 0.07), (0.42, 0.27, 0.14),
                          (0.82, 0.66, 0.40), (0.62, 0.24, 0.10), (0.68, 0.67, 0.66),
                          (0.30, 0.35, 0.75), (0.85, 0.40, 0.60)])
_HAIR_P = np.array([0.24, 0.24, 0.18, 0.13, 0.08, 0.07, 0.03, 0.03])
_EYE_COLOURS = np.array([(0.33, 0.20, 0.10), (0.16, 0.10, 0.06), (0.28, 0.48, 0.78),
                         (0.30, 0.55, 0.35), (0.55, 0.45, 0.20), (0.50, 0.56, 0.62)])


def _rgb(x) -> RGB:
    x = np.clip(x, 0.0, 1.0)
    return (float(x[0]), float(x[1]), float(x[2]))


def sample_identity(rng: np.random.Generator) -> Identity:
    """A random identity: skin tones along a light-dark line, natural hair/eye colours (a few
    dyed), uniform shapes. Deterministic given the generator's state."""
    u = rng.random(12)
    t = u[0] * (len(_SKIN_TONES) - 1)
    i = min(int(t), len(_SKIN_TONES) - 2)
    skin = _SKIN_TONES[i] + (t - i) * (_SKIN_TONES[i + 1] - _SKIN_TONES[i]) + rng.uniform(-0.03, 0.03, 3)
    hair = _HAIR_COLOURS[rng.choice(len(_HAIR_COLOURS), p=_HAIR_P)] + rng.uniform(-0.05, 0.05, 3)
    eye = _EYE_COLOURS[rng.integers(len(_EYE_COLOURS))] + rng.uniform(-0.04, 0.04, 3)
    return Identity(
        face_w=u[1], face_h=u[2], jaw=u[3], skin=_rgb(skin), hair_style=int(rng.integers(HAIR_STYLES)),
        hair_rgb=_rgb(hair), eye_rgb=_rgb(eye), brow_thickness=u[4], brow_tilt=2.0 * u[5] - 1.0,
        nose_len=u[6], nose_w=u[7], eye_size=u[8], eye_spacing=u[9], lip_thickness=u[10],
        bg_rgb=_rgb(rng.uniform(0.15, 0.95, 3)), shirt_rgb=_rgb(rng.uniform(0.05, 0.95, 3)))


def sample_motion(rng: np.random.Generator) -> Motion:
    """A random frame: the mouth closed 30 % of the time, eyes open 40 % / closed 15 % / between,
    head angles and gaze ~ N(0, 0.45) clipped to +-1."""
    u = rng.random(4)
    mouth_open = 0.0 if u[0] < 0.3 else float(rng.random())
    blink = 0.0 if u[1] < 0.4 else 1.0 if u[1] < 0.55 else float(rng.random())
    head = np.clip(rng.normal(0.0, 0.45, 5), -1.0, 1.0)
    return Motion(mouth_open=mouth_open, mouth_width=float(rng.random()), smile=float(rng.uniform(-1, 1)),
                  blink=blink, yaw=head[0], pitch=head[1], roll=head[2], gaze_x=head[3], gaze_y=head[4])


