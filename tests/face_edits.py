"""Image edits with known geometry, for testing face measures (and for test generators built on them).

All functions take and return ``uint8`` RGB arrays ``[H, W, 3]`` and never modify their input.
Landmarks are dlib's 68 points in pixels, ``[68, 2]`` as (x, y), 0-based indices (iBUG 300-W
order: jaw 0–16, brows 17–26, nose 27–35, eyes 36–47, outer lips 48–59, inner lips 60–67).

* :func:`piecewise_affine_warp` — move control points, warp the triangles between them.
* :func:`drop_lower_lip` — open the mouth: the lower lip (and part of the chin) moves down ``k`` px.
* :func:`close_eyelids` — the upper lids move toward the lower lids by a fraction of the eye height.
* :func:`rotate`, :func:`mirror` — in-plane rotation (counter-clockwise, like ``PIL.Image.rotate``)
  and a left-right flip.
* :func:`ffhq_align` (from :mod:`engine.faces.align`) — the FFHQ data set's crop from 68
  landmarks, so real photos can stand in for aligned generator output.

These need ``cv2`` (opencv-python-headless) and ``scipy``; the test modules skip without them.
"""
from __future__ import annotations

import cv2
import numpy as np
from PIL import Image
from scipy.spatial import Delaunay

from engine.faces.align import align_landmarks, ffhq_align, ffhq_quad  # noqa: F401  (re-exported)

LOWER_LIP = (55, 56, 57, 58, 59, 65, 66, 67)          # outer lower lip and inner lower lip
CHIN_WEIGHTS = {6: 0.25, 7: 0.5, 8: 0.5, 9: 0.5, 10: 0.25}   # fraction of k the jaw below follows
UPPER_LIDS = {37: 41, 38: 40, 43: 47, 44: 46}         # upper-lid point -> the lower-lid point below it


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected a uint8 RGB image [H, W, 3], got {image.dtype} {image.shape}")
    return image


def border_anchors(width: int, height: int, per_side: int = 4) -> np.ndarray:
    """``per_side`` evenly spaced points on each image border (corners included), [4*per_side, 2] px."""
    t = np.linspace(0.0, 1.0, per_side + 1)[:-1]
    w, h = width - 1.0, height - 1.0
    top = np.stack([t * w, np.zeros_like(t)], 1)
    right = np.stack([np.full_like(t, w), t * h], 1)
    bottom = np.stack([w - t * w, np.full_like(t, h)], 1)
    left = np.stack([np.zeros_like(t), h - t * h], 1)
    return np.concatenate([top, right, bottom, left])


def face_halo(landmarks: np.ndarray, width: int, height: int, scale: float = 1.35, n: int = 16) -> np.ndarray:
    """Fixed points on an ellipse around the face (``scale`` x the landmarks' extent), inside the image.

    Used as anchors so an edit stays local: triangles outside the halo never move.
    """
    lm = np.asarray(landmarks, np.float64)
    centre = (lm.min(0) + lm.max(0)) / 2
    radius = (lm.max(0) - lm.min(0)) / 2 * scale
    a = np.linspace(0, 2 * np.pi, n, endpoint=False)
    ring = centre + np.stack([np.cos(a), np.sin(a)], 1) * radius
    return np.clip(ring, 1.0, [width - 2.0, height - 2.0])


def piecewise_affine_warp(image: np.ndarray, src_points: np.ndarray, dst_points: np.ndarray,
                          anchors: bool = True) -> np.ndarray:
    """Warp ``image`` so that each ``src_points[i]`` moves to ``dst_points[i]`` (pixels, [N, 2] as x, y).

    The Delaunay triangulation of the source points (plus, with ``anchors``, fixed points along the
    image border) defines the mesh; each triangle with a moved vertex is mapped by the affine
    transform of its three vertices, every pixel of it is resampled once (bilinear, one
    ``cv2.remap``). Pixels outside moved triangles are copied unchanged. Displacements should be
    small next to the triangles (no fold-overs); duplicate source points are merged.
    """
    image = _check_image(image)
    h, w = image.shape[:2]
    src = np.asarray(src_points, np.float64).reshape(-1, 2)
    dst = np.asarray(dst_points, np.float64).reshape(-1, 2)
    if src.shape != dst.shape:
        raise ValueError(f"src_points {src.shape} and dst_points {dst.shape} differ")
    if anchors:
        fixed = border_anchors(w, h)
        src, dst = np.concatenate([src, fixed]), np.concatenate([dst, fixed])
    _, keep = np.unique(np.round(src, 3), axis=0, return_index=True)
    keep = np.sort(keep)
    src, dst = src[keep], dst[keep]
    tri = Delaunay(src).simplices                                     # [T, 3]
    moved = np.any(np.abs(src - dst).max(1)[tri] > 1e-9, axis=1)
    out = image.copy()
    if not moved.any():
        return out
    labels = np.zeros((h, w), np.int32)
    inverse = [np.zeros((2, 3))]                                     # label 0: unused
    for t in tri[moved]:
        inverse.append(cv2.getAffineTransform(dst[t].astype(np.float32), src[t].astype(np.float32)))
        cv2.fillConvexPoly(labels, np.round(dst[t]).astype(np.int32), len(inverse) - 1)
    ys, xs = np.nonzero(labels)
    a = np.stack(inverse)[labels[ys, xs]]                            # [P, 2, 3] dst -> src
    map_x = (a[:, 0, 0] * xs + a[:, 0, 1] * ys + a[:, 0, 2]).astype(np.float32)
    map_y = (a[:, 1, 0] * xs + a[:, 1, 1] * ys + a[:, 1, 2]).astype(np.float32)
    sampled = cv2.remap(image, map_x[None], map_y[None], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    out[ys, xs] = sampled[0]
    return out


def _local_warp(image: np.ndarray, landmarks: np.ndarray, moved: np.ndarray) -> np.ndarray:
    h, w = image.shape[:2]
    halo = face_halo(landmarks, w, h)
    src = np.concatenate([landmarks, halo])
    dst = np.concatenate([moved, halo])
    return piecewise_affine_warp(image, src, dst)


def drop_lower_lip(image: np.ndarray, landmarks: np.ndarray, k_px: float) -> np.ndarray:
    """Open the mouth by ``k_px`` pixels: the lower lip moves straight down, the upper lip stays.

    Lower-lip points (outer 55–59, inner 65–67) move by ``k_px``; the chin follows partly
    (points 6–10 by 0.25–0.5 ``k_px``, see ``CHIN_WEIGHTS``); the mouth corners (48, 54, 60, 64) and
    everything else stay, with a fixed ring around the face (:func:`face_halo`) so nothing far from
    the face moves. The inner-lip gap (62–66, 61–67, 63–65) therefore grows by ``k_px``.
    """
    image = _check_image(image)
    lm = np.asarray(landmarks, np.float64)
    moved = lm.copy()
    for i in LOWER_LIP:
        moved[i, 1] += k_px
    for i, f in CHIN_WEIGHTS.items():
        moved[i, 1] += f * k_px
    return _local_warp(image, lm, moved)


def close_eyelids(image: np.ndarray, landmarks: np.ndarray, frac: float) -> np.ndarray:
    """Lower both upper eyelids by ``frac`` of the eye height (0 = unchanged, 1 = lids meet).

    Each upper-lid point (37, 38, 43, 44) moves toward the lower-lid point below it (41, 40, 47,
    46) by ``frac`` of their distance; the eye corners and lower lids stay.
    """
    image = _check_image(image)
    if not 0.0 <= frac <= 1.0:
        raise ValueError(f"frac must be in [0, 1], got {frac}")
    lm = np.asarray(landmarks, np.float64)
    moved = lm.copy()
    for upper, lower in UPPER_LIDS.items():
        moved[upper] = lm[upper] + frac * 0.95 * (lm[lower] - lm[upper])   # 0.95: never a zero-area triangle
    return _local_warp(image, lm, moved)


def rotate(image: np.ndarray, deg: float) -> np.ndarray:
    """Rotate by ``deg`` degrees counter-clockwise about the centre, like ``PIL.Image.rotate(deg)``.

    Same size; the border pixels are repeated into the corners (no black wedges for a detector to
    see). Bicubic.
    """
    image = _check_image(image)
    h, w = image.shape[:2]
    m = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), float(deg), 1.0)  # +deg: counter-clockwise
    return cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)


def mirror(image: np.ndarray) -> np.ndarray:
    """Left-right flip."""
    return np.ascontiguousarray(_check_image(image)[:, ::-1])


def blur(image: np.ndarray, sigma_px: float) -> np.ndarray:
    """Gaussian blur with standard deviation ``sigma_px`` pixels."""
    return cv2.GaussianBlur(_check_image(image), (0, 0), sigma_px)


def to_pil(image: np.ndarray) -> Image.Image:
    """The array as a PIL image (for saving in tests)."""
    return Image.fromarray(_check_image(image))
