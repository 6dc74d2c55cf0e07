"""A procedural 2-D face renderer: identity + motion parameters -> an anti-aliased RGB image.

The demo world of StyleCast. A face is a set of polygons laid out in *head units* (x and y in
[-1, 1] across the head's width and height, y pointing down), lifted onto an ellipsoid so that
head yaw / pitch / roll become a small 3-D rotation followed by an orthographic projection: the
features slide, foreshorten and rotate like on a real head while the outline turns in 2-D.
Everything is drawn with PIL at ``supersample`` x the output size and box-filtered down, so edges
are anti-aliased; the result depends only on the parameters (no randomness inside
:func:`render_face`).

The parameters (identity and motion fields, their ranges, sampling) are in
:mod:`engine.demo_world.params`.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np
from PIL import Image, ImageDraw

from .params import PITCH_DEG, ROLL_DEG, YAW_DEG, Identity, Motion

__all__ = ["render_face", "RENDERER_VERSION"]

RENDERER_VERSION = 1          # bump when render_face's pixels change for the same parameters


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
