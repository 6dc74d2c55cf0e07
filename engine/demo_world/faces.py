"""A procedural 2-D face renderer: identity + motion parameters -> an anti-aliased RGB image.

The demo world of StyleCast. A face is a set of polygons laid out in *head units* (x and y in
[-1, 1] across the head's width and height, y pointing down), lifted onto an ellipsoid so that
head yaw / pitch / roll become a small 3-D rotation followed by an orthographic projection: the
features slide, foreshorten and rotate like on a real head while the outline turns in 2-D.
Everything is drawn with PIL at ``supersample`` x the output size and box-filtered down, so edges
are anti-aliased; the result depends only on the parameters (no randomness inside
:func:`render_face`).

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
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    "Identity", "Motion", "IDENTITY_FIELDS", "MOTION_FIELDS", "IDENTITY_RANGES", "MOTION_RANGES",
    "HAIR_STYLES", "HAIR_STYLE_NAMES", "YAW_DEG", "PITCH_DEG", "ROLL_DEG",
    "sample_identity", "sample_motion", "render_face", "RENDERER_VERSION",
]

RENDERER_VERSION = 1          # bump when render_face's pixels change for the same parameters

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


# -- geometry ----------------------------------------------------------------------------------
_N = 24                                            # points per curve
_S = np.linspace(-1.0, 1.0, _N)                    # curve parameter, left .. right
_T = np.linspace(0.0, 2.0 * np.pi, 48, endpoint=False)
_COS, _SIN = np.cos(_T), np.sin(_T)


def _col(rgb, k: float = 1.0, add=(0.0, 0.0, 0.0)) -> tuple[int, int, int]:
    return tuple(int(min(255, max(0, round(255.0 * (c * k + a))))) for c, a in zip(rgb, add))


def _mix(a, b, t: float):
    return tuple(x + (y - x) * t for x, y in zip(a, b))


class _Head:
    """Head-unit points -> supersampled pixel coordinates for one (identity, motion)."""

    def __init__(self, ident: Identity, motion: Motion, scale: float):
        self.scale = scale
        self.a = 0.215 + 0.06 * ident.face_w             # half-width, image units
        self.b = 0.27 + 0.05 * ident.face_h              # half-height
        self.c = 0.9 * self.a                            # depth
        self.cx, self.cy = 0.5, 0.45
        self.py = 0.75 * self.b                          # rotation pivot: the top of the neck
        yaw = math.radians(YAW_DEG * motion.yaw)
        pitch = math.radians(PITCH_DEG * motion.pitch)
        roll = math.radians(ROLL_DEG * motion.roll)
        cy_, sy_ = math.cos(yaw), math.sin(yaw)
        cp, sp = math.cos(pitch), math.sin(pitch)
        cr, sr = math.cos(roll), math.sin(roll)
        ry = np.array([[cy_, 0, sy_], [0, 1, 0], [-sy_, 0, cy_]])
        rx = np.array([[1, 0, 0], [0, cp, -sp], [0, sp, cp]])
        rz = np.array([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
        self.rot = (rz @ rx @ ry)[:2]                    # only x', y' are needed
        self.roll2 = np.array([[cr, -sr], [sr, cr]])
        k = self.c / self.a
        self.sx = math.sqrt(cy_ * cy_ + (k * sy_) ** 2)  # silhouette width of the turned ellipsoid
        self.sy = math.sqrt(cp * cp + (self.c / self.b * sp) ** 2)
        self.shift_y = -self.c * sp * 0.35               # the outline follows the face a little

    def surf(self, X, Y, dz=0.0) -> np.ndarray:
        """Points on the face surface (head units, optional extra depth in units of c) -> px [N, 2]."""
        X = np.asarray(X, np.float64)
        Y = np.asarray(Y, np.float64)
        z = self.c * (np.sqrt(np.clip(1.0 - X * X - Y * Y, 0.0, None)) + dz)
        p = np.stack([X * self.a, Y * self.b - self.py, np.broadcast_to(z, X.shape)])
        q = self.rot @ p
        return np.stack([(q[0] + self.cx) * self.scale, (q[1] + self.py + self.cy) * self.scale], 1)

    def flat(self, X, Y) -> np.ndarray:
        """Points of the outline / hair volume: turned in 2-D (squeezed, tilted) -> px [N, 2]."""
        X = np.asarray(X, np.float64)
        Y = np.asarray(Y, np.float64)
        p = np.stack([X * self.a * self.sx, (Y * self.b - self.py) * self.sy + self.shift_y])
        q = self.roll2 @ p
        return np.stack([(q[0] + self.cx) * self.scale, (q[1] + self.py + self.cy) * self.scale], 1)


def _outline(ident: Identity, open_: float, inflate: float = 1.0):
    """Face contour in head units (closed, 48 points): ellipse on top, jaw below."""
    lower = np.clip(_SIN, 0.0, None)
    p = 2.0 + 1.6 * ident.jaw
    ax = np.abs(_COS)
    # superellipse radius for the lower half (square jaws), plain ellipse above
    r_lower = 1.0 / np.power(ax ** p + lower ** p, 1.0 / p)
    r = np.where(_SIN > 0, 1.0 + (r_lower - 1.0) * 0.6, 1.0)
    X = _COS * r * (1.0 - 0.28 * (1.0 - ident.jaw) * lower ** 2)
    Y = _SIN * r + 0.10 * open_ * lower ** 3
    return X * inflate, Y * inflate - (inflate - 1.0) * 0.25


def _poly(draw: ImageDraw.ImageDraw, pts: np.ndarray, fill) -> None:
    draw.polygon(pts.ravel().tolist(), fill=fill)


def _line(draw: ImageDraw.ImageDraw, pts: np.ndarray, fill, width: float) -> None:
    draw.line(pts.ravel().tolist(), fill=fill, width=max(1, int(round(width))), joint="curve")


def _clipped(img: Image.Image, clip: np.ndarray, paint: Callable[[ImageDraw.ImageDraw, np.ndarray], None]) -> None:
    """Run ``paint(draw, offset)`` on a copy of the region under polygon ``clip`` and paste back
    only inside the polygon (used for irises inside eyelids, teeth inside the lips)."""
    x0, y0 = np.floor(clip.min(0)).astype(int) - 1
    x1, y1 = np.ceil(clip.max(0)).astype(int) + 2
    x0, y0 = max(x0, 0), max(y0, 0)
    x1, y1 = min(x1, img.width), min(y1, img.height)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return
    off = np.array([x0, y0], np.float64)
    layer = img.crop((x0, y0, x1, y1))
    mask = Image.new("L", layer.size, 0)
    _poly(ImageDraw.Draw(mask), clip - off, 255)
    paint(ImageDraw.Draw(layer), off)
    img.paste(layer, (x0, y0), mask)


# -- hair --------------------------------------------------------------------------------------
def _hairline(style: int, s: np.ndarray):
    """Where the hair meets the forehead, head units, for s in -1..1 (left..right temple)."""
    if style == 0:      # crop
        return s * 0.86, -0.50 + 0.30 * s ** 4
    if style == 1:      # side part, sweeping fringe
        return s * 0.88, -0.42 - 0.14 * s + 0.28 * s ** 4
    if style == 2:      # long, centre part
        return s * 0.86, -0.62 + 0.85 * s ** 2
    if style == 3:      # bob with straight bangs
        return s * 0.9, -0.30 + 0.25 * s ** 6
    if style == 4:      # curly
        return s * 0.86, -0.52 + 0.30 * s ** 4
    return s * 0.9, -0.80 + 0.60 * s ** 2  # receding


def _draw_back_hair(draw, head: _Head, ident: Identity, colour) -> None:
    st = ident.hair_style
    if st == 2:
        X = np.concatenate([_COS[24:] * 1.12, [1.10, 1.22, 0.8, -0.8, -1.22, -1.10]])
        Y = np.concatenate([_SIN[24:] * 1.1 - 0.02, [0.0, 1.55, 1.62, 1.62, 1.55, 0.0]])
        _poly(draw, head.flat(X, Y), colour)
    elif st == 3:
        X = np.concatenate([_COS[24:] * 1.14, [1.14, 1.10, 0.7, -0.7, -1.10, -1.14]])
        Y = np.concatenate([_SIN[24:] * 1.12 - 0.02, [0.0, 0.78, 0.86, 0.86, 0.78, 0.0]])
        _poly(draw, head.flat(X, Y), colour)
    elif st == 4:
        wav = 1.0 + 0.06 * np.cos(_T * 9)
        _poly(draw, head.flat(_COS * 1.36 * wav, _SIN * 1.2 * wav - 0.12), colour)


def _draw_front_hair(draw, head: _Head, ident: Identity, colour, dark) -> None:
    st = ident.hair_style
    hx, hy = _hairline(st, _S)
    inner = head.surf(hx, hy, 0.04)
    if st == 5:        # receding: hair only over the ears and at the back
        for sgn in (-1.0, 1.0):
            t = np.linspace(0.35, 1.35, 10)
            X = np.concatenate([sgn * 1.06 * np.cos(t - 0.9) , sgn * 0.88 * np.cos(t[::-1] - 0.9)])
            Y = np.concatenate([np.sin(t - 0.9) * 0.55 - 0.30, np.sin(t[::-1] - 0.9) * 0.45 - 0.24])
            _poly(draw, head.flat(X, Y), colour)
        return
    vol = {0: 1.04, 1: 1.10, 2: 1.10, 3: 1.13, 4: 1.30}[st]
    # the outer boundary runs over the top of the head from the right temple to the left one
    t = np.linspace(math.atan2(hy[-1], 0.98), -math.pi - math.atan2(hy[0], 0.98), 30)
    wav = 1.0 + (0.05 * np.cos(t * 11) if st == 4 else 0.0)
    outer = head.flat(np.cos(t) * vol * wav, np.sin(t) * vol * wav - (vol - 1.0) * 0.4)
    pts = np.concatenate([inner, outer])
    _poly(draw, pts, colour)
    if st == 1:        # the parting line
        _line(draw, head.surf(np.array([-0.35, -0.3, -0.22]), np.array([-1.0, -0.8, -0.55]), 0.0),
              dark, 0.5 * head.scale / 128)


# -- features ----------------------------------------------------------------------------------
def _draw_eye(img, draw, head: _Head, ident: Identity, motion: Motion, side: float, skin) -> None:
    ex = side * (0.33 + 0.12 * ident.eye_spacing)
    ey = -0.06
    ew = 0.15 + 0.07 * ident.eye_size          # half-width, head units
    eh = 0.55 * ew * head.a / head.b           # half-height (head units are anisotropic)
    s = _S
    bump = (1.0 - s * s)
    tilt = 0.08 * eh * s * side                # outer corners a little higher
    upper_open = -eh * bump ** 0.7 - tilt
    lower = 0.55 * eh * bump ** 0.9 - tilt
    blink = motion.blink
    upper = upper_open + (lower - upper_open) * min(1.0, blink * 1.04)
    X = ex + s * ew
    up = head.surf(X, ey + upper)
    lo = head.surf(X, ey + lower)
    px = head.scale / 128.0                    # one output pixel at 128 px, in canvas pixels
    if blink < 0.97:
        opening = np.concatenate([up, lo[::-1]])
        ri = 0.48 * ew
        gx = ex + motion.gaze_x * 0.45 * ew
        gy = ey + motion.gaze_y * 0.45 * eh - 0.1 * eh
        rih = ri * head.a / head.b
        iris = head.surf(gx + _COS * ri, gy + _SIN * rih, 0.02)
        iris_in = head.surf(gx + _COS * ri * 0.82, gy + _SIN * rih * 0.82, 0.02)
        pupil = head.surf(gx + _COS * ri * 0.42, gy + _SIN * rih * 0.42, 0.02)
        glint = head.surf(gx - 0.3 * ri + _COS[::4] * ri * 0.16, gy - 0.35 * rih + _SIN[::4] * rih * 0.16, 0.03)
        eye_rgb = ident.eye_rgb

        def paint(d, off):
            _poly(d, opening - off, (240, 236, 230))
            _poly(d, iris - off, _col(eye_rgb, 0.6))
            _poly(d, iris_in - off, _col(eye_rgb))
            _poly(d, pupil - off, (12, 10, 10))
            _poly(d, glint - off, (250, 250, 250))
            # shadow of the upper lid
            _line(d, up - off, _col(skin, 0.55), 1.0 * px)
        _clipped(img, opening, paint)
    # lash line, crease, lower lid
    _line(draw, up, (30, 20, 18), 1.1 * px)
    if blink < 0.9:
        crease = head.surf(X * 0.98 + ex * 0.02, ey + upper_open * 1.5 - 0.3 * eh * (1 - blink), 0.0)
        _line(draw, crease[3:-3], _col(skin, 0.78), 0.7 * px)
    _line(draw, lo[4:-4], _col(skin, 0.82), 0.6 * px)


def _draw_brow(draw, head: _Head, ident: Identity, motion: Motion, side: float, colour) -> None:
    ex = side * (0.33 + 0.12 * ident.eye_spacing)
    ew = 0.15 + 0.07 * ident.eye_size
    th = 0.035 + 0.055 * ident.brow_thickness
    s = _S
    X = ex + side * s * ew * 1.25                          # s=-1 inner end, s=+1 outer end
    arch = -0.06 * (1.0 - s * s)
    tilt = 0.07 * ident.brow_tilt * (-s)                  # +tilt raises the inner ends
    base = -0.33 + arch - tilt - 0.02 * ident.eye_size
    width = th * (1.0 - 0.55 * ((s + 1) / 2) ** 2)        # thinner towards the outer end
    top = head.surf(X, base - width)
    bot = head.surf(X, base + width * 0.6)
    _poly(draw, np.concatenate([top, bot[::-1]]), colour)


def _draw_nose(draw, head: _Head, ident: Identity, skin) -> float:
    """Draws the nose; returns the y of its base (head units)."""
    length = 0.26 + 0.16 * ident.nose_len
    w = 0.10 + 0.07 * ident.nose_w
    top, tip = -0.08, -0.08 + length
    px = head.scale / 128.0
    shade = _col(skin, 0.80)
    # bridge shadow on one side
    t = np.linspace(0, 1, 8)
    bridge = head.surf(0.10 + 0.03 * t, top + t * (length * 0.82), 0.05 + 0.25 * t)
    _line(draw, bridge, _col(skin, 0.88), 0.9 * px)
    # the ball of the nose (a slightly lighter blob) and the wings
    ball = head.surf(_COS * w * 0.55, tip - 0.03 + _SIN * w * 0.45, 0.32)
    wing_s = np.linspace(-1, 1, 14)
    base = head.surf(wing_s * w, tip + 0.03 - 0.05 * np.abs(wing_s) ** 1.5 + 0.02 * (1 - wing_s ** 2), 0.22)
    _poly(draw, ball, _col(skin, 1.03))
    _line(draw, base, shade, 1.0 * px)
    for sgn in (-1.0, 1.0):
        nostril = head.surf(sgn * w * 0.45 + _COS[::3] * w * 0.2, tip + 0.02 + _SIN[::3] * w * 0.09, 0.24)
        _poly(draw, nostril, _col(skin, 0.45))
    return tip + 0.05


def _draw_mouth(img, draw, head: _Head, ident: Identity, motion: Motion, y0: float, skin) -> None:
    mw = 0.15 + 0.25 * motion.mouth_width
    my = max(0.53, y0 + 0.14)
    s = _S
    bend = -0.09 * motion.smile * s * s                   # corners up for a smile
    opening = 0.24 * motion.mouth_open
    bump = np.sqrt(1.0 - s * s)
    upper_in = my + bend - opening * 0.35 * bump ** 1.2
    lower_in = my + bend + opening * 0.65 * bump ** 1.2
    lt = 0.035 + 0.04 * ident.lip_thickness
    bow = 0.018 * np.exp(-((np.abs(s) - 0.22) / 0.14) ** 2)  # cupid's bow
    upper_out = upper_in - lt * bump ** 0.6 * (0.9 + 0.3 * motion.mouth_open) - bow
    lower_out = lower_in + 1.3 * lt * bump ** 0.6
    X = s * mw
    lips = np.concatenate([head.surf(X, upper_out, 0.05), head.surf(X[::-1], lower_out[::-1], 0.05)])
    lip_rgb = _mix(skin, (0.72, 0.30, 0.32), 0.45)
    _poly(draw, lips, _col(lip_rgb, 0.95))
    px = head.scale / 128.0
    ui = head.surf(X, upper_in, 0.05)
    if motion.mouth_open > 0.03:
        li = head.surf(X, lower_in, 0.05)
        hole = np.concatenate([ui, li[::-1]])
        teeth = np.concatenate([ui, head.surf(X[::-1], upper_in[::-1] + 0.05, 0.05)])
        tongue = head.surf(_COS * mw * 0.55, my + bend[12] + opening * 0.6 + _SIN * (0.06 + 0.15 * opening), 0.03)

        def paint(d, off):
            _poly(d, hole - off, (60, 18, 22))
            _poly(d, tongue - off, (176, 78, 84))
            _poly(d, teeth - off, (236, 232, 222))
        _clipped(img, hole, paint)
    _line(draw, ui, _col(lip_rgb, 0.45), 0.8 * px)
    # light on the lower lip
    hl = head.surf(X[8:-8] * 0.7, (lower_in[8:-8] + lower_out[8:-8]) / 2 - 0.004, 0.05)
    _line(draw, hl, _col(lip_rgb, 1.12), 0.6 * px)
    if motion.smile > 0.25:                                # cheek folds
        k = (motion.smile - 0.25) / 0.75
        for sgn in (-1.0, 1.0):
            fold = head.surf(sgn * np.array([mw * 0.55 + 0.10, mw + 0.07, mw + 0.05]),
                             np.array([my - 0.22, my - 0.08, my + 0.02]) + bend[0] * np.array([0.2, 0.7, 1.0]), 0.0)
            _line(draw, fold, _col(skin, 1.0 - 0.16 * k), 0.7 * px)


# -- the renderer ------------------------------------------------------------------------------
def render_face(identity: Identity, motion: Motion | None = None, size: int = 128, *,
                supersample: int = 4) -> np.ndarray:
    """Draw one face. Returns uint8 [size, size, 3] RGB. Deterministic: the same arguments give
    the same bytes. ``supersample`` x ``supersample`` samples per output pixel (box filter)."""
    if motion is None:
        motion = Motion.rest()
    if not isinstance(identity, Identity) or not isinstance(motion, Motion):
        raise TypeError("render_face(identity: Identity, motion: Motion, size)")
    size = int(size)
    if size < 16:
        raise ValueError(f"size must be >= 16, got {size}")
    ss = max(1, int(supersample))
    S = size * ss
    ident = identity
    skin = ident.skin
    hair = ident.hair_rgb
    # background: vertical gradient of bg_rgb
    bg = np.asarray(ident.bg_rgb)
    t = np.linspace(0.0, 1.0, S)[:, None]
    grad = np.clip((bg * (1.12 - 0.28 * t)) * 255.0 + 0.5, 0, 255).astype(np.uint8)   # [S, 3]
    img = Image.fromarray(np.ascontiguousarray(grad[:, None, :])).resize((S, S), Image.Resampling.NEAREST)
    draw = ImageDraw.Draw(img)
    head = _Head(ident, motion, float(S))

    hair_col, hair_dark = _col(hair), _col(hair, 0.6)
    # shoulders, back hair, neck
    sh = ident.shirt_rgb
    _poly(draw, np.array([[0.08, 1.02], [0.12, 0.90], [0.28, 0.80], [0.72, 0.80], [0.88, 0.90],
                          [0.92, 1.02]]) * S, _col(sh))
    _draw_back_hair(draw, head, ident, hair_col)
    nw = 0.55 * head.a
    neck_top = head.cy + 0.55 * head.b
    neck = np.array([[0.5 - nw, neck_top], [0.5 + nw, neck_top], [0.5 + nw * 1.02, 0.80],
                     [0.5, 0.86], [0.5 - nw * 1.02, 0.80]]) * S
    _poly(draw, neck, _col(skin, 0.82))
    # ears (3-D: the far one hides behind the face)
    for sgn in (-1.0, 1.0):
        ear3 = head.surf(sgn * (0.97 + 0.1 * (_COS + 1.0)), 0.06 + 0.18 * _SIN, -0.25)
        _poly(draw, ear3, _col(skin, 0.9))
    # face with a shaded rim
    X, Y = _outline(ident, motion.mouth_open)
    _poly(draw, head.flat(X, Y), _col(skin, 0.86))
    light = 0.045
    _poly(draw, head.flat(X * 0.93 - light, Y * 0.95 - 0.02), _col(skin))
    # features
    _draw_front_hair(draw, head, ident, hair_col, hair_dark)
    brow = _mix(hair, (0.12, 0.09, 0.07), 0.35) if ident.hair_style != 5 else _mix(hair, (0.2, 0.15, 0.1), 0.5)
    for side in (-1.0, 1.0):
        _draw_eye(img, draw, head, ident, motion, side, skin)
        _draw_brow(draw, head, ident, motion, side, _col(brow))
    nose_base = _draw_nose(draw, head, ident, skin)
    _draw_mouth(img, draw, head, ident, motion, nose_base, skin)
    if ss > 1:
        img = img.reduce(ss)
    return np.asarray(img, dtype=np.uint8).copy()
