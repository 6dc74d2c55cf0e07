"""FFHQ-style face alignment: the crop the FFHQ data set (and generators trained on it) use.

The recipe of Karras et al. 2019 (``recreate_aligned_images`` of the FFHQ data set), from dlib's
68 landmarks: eye centres (means of 36–41 and 42–47) and the mouth centre (mean of 48 and 54);
the crop is a square of half-side max(2 |eye_to_eye|, 1.8 |eye_to_mouth|), rotated into the
eye–mouth frame and centred 0.1 |eye_to_mouth| below the eye midpoint. FFHQ's blurred, padded
border is not reproduced: pixels outside the photo repeat its edge.
"""
from __future__ import annotations

import numpy as np

from engine.faces.models import import_cv2


def ffhq_quad(landmarks: np.ndarray) -> np.ndarray:
    """The crop's corners [4, 2] px (top-left, bottom-left, bottom-right, top-right) in the photo."""
    lm = np.asarray(landmarks, np.float64)
    eye_l, eye_r = lm[36:42].mean(0), lm[42:48].mean(0)
    eye_avg, eye_to_eye = (eye_l + eye_r) / 2, eye_r - eye_l
    eye_to_mouth = (lm[48] + lm[54]) / 2 - eye_avg
    x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]
    x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8) / np.hypot(*x)
    y = np.flipud(x) * [-1, 1]
    c = eye_avg + eye_to_mouth * 0.1
    return np.stack([c - x - y, c - x + y, c + x + y, c + x - y])


def _affine(landmarks: np.ndarray, size: int) -> np.ndarray:
    cv2 = import_cv2()
    quad = ffhq_quad(landmarks)
    dst = np.array([[0, 0], [0, size], [size, size]], np.float32)
    return cv2.getAffineTransform(quad[:3].astype(np.float32), dst)


def ffhq_align(image: np.ndarray, landmarks: np.ndarray, size: int = 256) -> np.ndarray:
    """The aligned ``size`` x ``size`` uint8 RGB crop of ``image`` ([H, W, 3]) with 68 ``landmarks`` (px)."""
    cv2 = import_cv2()
    quad = ffhq_quad(landmarks)
    work = max(size, int(np.ceil(np.hypot(*(quad[3] - quad[0])))))       # sample at >= the photo's scale
    crop = cv2.warpAffine(np.ascontiguousarray(image), _affine(landmarks, work), (work, work),
                          flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    return crop if work == size else cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)


def align_landmarks(landmarks: np.ndarray, size: int = 256) -> np.ndarray:
    """Where :func:`ffhq_align` puts the ``landmarks``: [68, 2] px in the ``size`` crop."""
    m = _affine(landmarks, size)
    return np.asarray(landmarks, np.float64) @ m[:, :2].T + m[:, 2]
