"""FFHQ-style face alignment: the crop the FFHQ data set (and generators trained on it) use.

The recipe of Karras et al. 2019 (the FFHQ data set's alignment script), from dlib's 68
landmarks: eye centres (means of 36–41 and 42–47) and the mouth centre (mean of 48 and 54); the
crop is a square of half-side max(2 |eye_to_eye|, 1.8 |eye_to_mouth|), rotated into the
eye–mouth frame and centred 0.1 |eye_to_mouth| below the eye midpoint. Then, as the data set was
made: a photo far larger than the output is first shrunk (anti-aliased) by a whole factor; the
crop is cut with a 10 % border; where the square reaches past the photo, the photo is mirrored
outward and that padding fades into a blur and then into the photo's median colour (so the
generator sees the soft borders it was trained on, not smeared edge pixels); the square is
resampled and reduced to the output size with area averaging.

:func:`align_face` returns the crop with its geometry (:class:`AlignedFace`: the photo → crop
affine map, the quad, both sets of landmarks), so a result can be pasted back into the photo
(:meth:`AlignedFace.paste`).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.faces.models import import_cv2

__all__ = ["AlignedFace", "align_face", "ffhq_align", "ffhq_quad", "align_landmarks"]


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


def _square(quad: np.ndarray, size: int) -> np.ndarray:
    """The [2, 3] affine map taking ``quad``'s corners to a ``size`` square's."""
    cv2 = import_cv2()
    dst = np.array([[0, 0], [0, size], [size, size]], np.float32)
    return cv2.getAffineTransform(np.asarray(quad[:3], np.float32), dst).astype(np.float64)


def _invert_affine(m: np.ndarray) -> np.ndarray:
    """The inverse of a [2, 3] affine map."""
    return np.linalg.inv(np.vstack([m, [0.0, 0.0, 1.0]]))[:2]


@dataclass
class AlignedFace:
    """An aligned crop and where it came from.

    * ``image``: [size, size, 3] uint8 RGB.
    * ``matrix``: [2, 3] affine map, photo px → crop px (``crop = matrix @ [x, y, 1]``).
    * ``quad``: [4, 2] the crop's corners in the photo (top-left, bottom-left, bottom-right, top-right).
    * ``landmarks``: [68, 2] in the photo; ``landmarks_aligned``: the same in the crop.
    * ``photo_shape``: (height, width) of the photo.
    """

    image: np.ndarray
    matrix: np.ndarray
    quad: np.ndarray
    landmarks: np.ndarray
    landmarks_aligned: np.ndarray
    photo_shape: tuple[int, int]

    @property
    def size(self) -> int:
        return int(self.image.shape[0])

    @property
    def inverse(self) -> np.ndarray:
        """[2, 3] affine map, crop px → photo px."""
        return _invert_affine(self.matrix)

    def transform_dict(self) -> dict:
        """The geometry as plain lists (for a ``.npz`` / JSON report)."""
        return {"matrix": self.matrix.tolist(), "quad": self.quad.tolist(), "size": self.size,
                "photo_shape": list(self.photo_shape)}

    def paste(self, face: np.ndarray, photo: np.ndarray, feather: float = 0.06) -> np.ndarray:
        """``photo`` with ``face`` (an image of the crop, any size: resized to it) put back where
        the crop came from, its edge faded over ``feather`` of the crop's side."""
        cv2 = import_cv2()
        photo = np.asarray(photo)
        if photo.shape[:2] != tuple(self.photo_shape):
            raise ValueError(f"photo is {photo.shape[1]} x {photo.shape[0]} px; this crop came from "
                             f"{self.photo_shape[1]} x {self.photo_shape[0]}")
        n = self.size
        face = np.asarray(face, np.uint8)
        if face.shape[:2] != (n, n):
            face = cv2.resize(face, (n, n), interpolation=cv2.INTER_AREA if face.shape[0] > n else cv2.INTER_CUBIC)
        h, w = self.photo_shape
        edge = max(1, int(round(feather * n)))
        mask = np.zeros((n, n), np.float32)
        mask[edge:n - edge, edge:n - edge] = 1.0
        mask = cv2.GaussianBlur(mask, (0, 0), edge / 2.0)
        back = cv2.warpAffine(face, self.inverse, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
        alpha = cv2.warpAffine(mask, self.inverse, (w, h), flags=cv2.INTER_LINEAR, borderValue=0.0)[..., None]
        out = photo.astype(np.float32) * (1.0 - alpha) + back.astype(np.float32) * alpha
        return np.clip(np.round(out), 0, 255).astype(np.uint8)


def _pad_with_blur(img: np.ndarray, pad: tuple[int, int, int, int], qsize: float) -> np.ndarray:
    """Mirror ``img`` outward by ``pad`` (left, top, right, bottom) px; the padding fades from the
    mirrored photo at the photo's edge into a blur of it and then the median colour outward."""
    cv2 = import_cv2()
    left, top, right, bottom = pad
    out = cv2.copyMakeBorder(img, top, bottom, left, right, cv2.BORDER_REFLECT_101).astype(np.float32)
    h, w = out.shape[:2]
    y, x = np.ogrid[:h, :w]
    ramp = lambda d, p: (1.0 - d / p) if p > 0 else np.full_like(d, -np.inf, dtype=np.float32)  # noqa: E731
    mask = np.maximum(np.maximum(ramp(x.astype(np.float32), left), ramp((w - 1 - x).astype(np.float32), right)),
                      np.maximum(ramp(y.astype(np.float32), top), ramp((h - 1 - y).astype(np.float32), bottom)))
    mask = mask[..., None]                          # 1 at the outer edge, 0 at the photo's, < 0 inside
    sigma = max(qsize * 0.02, 0.5)
    blurred = cv2.GaussianBlur(out, (0, 0), sigma)
    out += (blurred - out) * np.clip(mask * 3.0 + 1.0, 0.0, 1.0)
    out += (np.median(out.reshape(-1, out.shape[2]), axis=0) - out) * np.clip(mask, 0.0, 1.0)
    return np.clip(np.round(out), 0, 255).astype(np.uint8)


def _framed_quad(quad: np.ndarray, template: np.ndarray) -> np.ndarray:
    """The photo square that puts ``quad`` where ``template`` (fractions [4, 2]) says the output
    has its FFHQ quad: the output's corners taken back into the photo."""
    cv2 = import_cv2()
    to_out = cv2.getAffineTransform(np.asarray(quad[:3], np.float32), np.asarray(template[:3], np.float32))
    back = _invert_affine(to_out.astype(np.float64))
    corners = np.array([[0, 0], [0, 1], [1, 1], [1, 0]], np.float64)
    return corners @ back[:, :2].T + back[:, 2]


def align_face(image: np.ndarray, landmarks: np.ndarray, size: int = 256,
               template: np.ndarray | None = None) -> AlignedFace:
    """The FFHQ-recipe crop of ``image`` ([H, W, 3] uint8 RGB) around 68 ``landmarks`` (photo
    px), ``size`` x ``size``, with its geometry (see the module docstring). ``template``: where
    the FFHQ quad should land in the output, as fractions [4, 2] of its side (a generator that
    frames faces its own way, :mod:`engine.inversion.framing`); default the whole output."""
    cv2 = import_cv2()
    photo = np.ascontiguousarray(image)
    if photo.ndim != 3 or photo.shape[2] != 3 or photo.dtype != np.uint8:
        raise ValueError(f"expected a uint8 RGB image [H, W, 3], got {photo.dtype} {photo.shape}")
    size = int(size)
    lm = np.asarray(landmarks, np.float64)
    quad_photo = ffhq_quad(lm)
    if template is not None:
        quad_photo = _framed_quad(quad_photo, np.asarray(template, np.float64))
    quad = quad_photo.copy()
    qsize = float(np.hypot(*(quad[3] - quad[0])))
    img = photo
    # shrink a photo much larger than the output (anti-aliased, a whole factor)
    shrink = int(np.floor(qsize / size * 0.5))
    if shrink > 1:
        h, w = img.shape[:2]
        img = cv2.resize(img, (max(1, int(round(w / shrink))), max(1, int(round(h / shrink)))),
                         interpolation=cv2.INTER_AREA)
        quad, qsize = quad / shrink, qsize / shrink
    # cut the square with a border
    border = max(int(round(qsize * 0.1)), 3)
    lo, hi = np.floor(quad.min(0)).astype(int), np.ceil(quad.max(0)).astype(int)
    h, w = img.shape[:2]
    x0, y0 = max(lo[0] - border, 0), max(lo[1] - border, 0)
    x1, y1 = min(hi[0] + border, w), min(hi[1] + border, h)
    if x1 - x0 < 2 or y1 - y0 < 2:
        raise ValueError("the face's crop lies outside the photo")
    img = img[y0:y1, x0:x1]
    quad = quad - [x0, y0]
    # mirror and blur where the square reaches past the photo
    need = (max(border - lo[0], 0), max(border - lo[1], 0), max(hi[0] + border - w, 0), max(hi[1] + border - h, 0))
    if max(need) > border - 4:
        grow = int(round(qsize * 0.3))
        pad = tuple(max(p, grow) if p > 0 else 0 for p in need)
        img = _pad_with_blur(img, pad, qsize)        # type: ignore[arg-type]
        quad = quad + [pad[0], pad[1]]
    # resample the square at (at least) the photo's scale, then area-average down to the output
    work = max(size, int(np.ceil(qsize)))
    crop = cv2.warpAffine(np.ascontiguousarray(img), _square(quad, work), (work, work),
                          flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT_101)
    if work != size:
        crop = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)
    matrix = _square(quad_photo, size)
    return AlignedFace(image=crop, matrix=matrix, quad=quad_photo, landmarks=lm,
                       landmarks_aligned=lm @ matrix[:, :2].T + matrix[:, 2], photo_shape=photo.shape[:2])


def ffhq_align(image: np.ndarray, landmarks: np.ndarray, size: int = 256) -> np.ndarray:
    """The aligned ``size`` x ``size`` uint8 RGB crop of ``image`` ([H, W, 3]) with 68 ``landmarks`` (px)."""
    return align_face(image, landmarks, size).image


def align_landmarks(landmarks: np.ndarray, size: int = 256) -> np.ndarray:
    """Where :func:`ffhq_align` puts the ``landmarks``: [68, 2] px in the ``size`` crop."""
    m = _square(ffhq_quad(landmarks), size)
    return np.asarray(landmarks, np.float64) @ m[:, :2].T + m[:, 2]
