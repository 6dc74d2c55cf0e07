"""A user's photo in, an FFHQ-aligned face out: decoding (EXIF rotation honoured, bounded size),
finding the largest face and aligning it (:mod:`engine.faces.align`).

Errors are one-line :class:`PhotoError` (a ``ValueError``): not an image, an image too large to
decode safely, no face. A photo over ``MAX_SIDE`` px is downscaled on decoding, and ``log`` says so.
"""
from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import Callable, Optional, Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from engine.faces.align import AlignedFace, align_face
from engine.faces.measure import FaceMeasure, FaceReading, as_rgb_uint8
from engine.faces.models import import_cv2

__all__ = ["PhotoError", "NoFaceInPhoto", "MAX_SIDE", "MAX_PIXELS", "load_photo", "find_face", "align_photo"]

#: photos with a longer side are downscaled to it on decoding
MAX_SIDE = 8192
#: images declaring more pixels than this are refused before decoding (a decompression bomb;
#: Pillow's own limit, twice its ``MAX_IMAGE_PIXELS``)
MAX_PIXELS = 2 * 89_478_485
#: faces are looked for in a copy with at most this long a side (then read at full resolution)
DETECT_SIDE = 1024

Photo = Union[str, os.PathLike, bytes, np.ndarray]


class PhotoError(ValueError):
    """A photo that cannot be used, with the reason in one line."""


class NoFaceInPhoto(PhotoError):
    """The photo holds no face the detector finds."""


def load_photo(source: Photo, *, max_side: int = MAX_SIDE, log: Optional[Callable[[str], None]] = None) -> np.ndarray:
    """The photo as uint8 RGB [H, W, 3]: a path, the bytes of an image file, or an array.

    Files are decoded with Pillow: EXIF orientation applied, palette/greyscale/alpha/16-bit
    converted to RGB, multi-frame files read at their first frame. Longer sides than ``max_side``
    are downscaled (JPEGs already while decoding), said once through ``log``.
    """
    if isinstance(source, np.ndarray):
        arr = as_rgb_uint8(source)
        return _downscale_array(arr, max_side, log)
    name = "the image data" if isinstance(source, (bytes, bytearray)) else str(source)
    if not isinstance(source, (bytes, bytearray)):
        path = Path(source)
        if not path.is_file():
            raise PhotoError(f"{path}: no such file" if not path.exists() else f"{path}: not a regular file")
        data: Union[io.BytesIO, Path] = path
    else:
        data = io.BytesIO(bytes(source))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)    # up to MAX_PIXELS: downscaled
            with Image.open(data) as im:
                w, h = im.size
                if w * h > MAX_PIXELS:
                    raise PhotoError(f"{name}: {w} x {h} px is too large to decode (limit {MAX_PIXELS // 10**6} Mpx)")
                if max(w, h) > max_side and im.format == "JPEG":
                    im.draft("RGB", (max_side, max_side))        # decode at 1/2, 1/4 or 1/8 scale
                im = ImageOps.exif_transpose(im)
                im = im.convert("RGB") if im.mode != "RGB" else im
                arr = np.asarray(im, dtype=np.uint8).copy()
    except PhotoError:
        raise
    except Image.DecompressionBombError:
        raise PhotoError(f"{name}: too large to decode (more than {MAX_PIXELS // 10**6} Mpx)") from None
    except UnidentifiedImageError as exc:
        raise PhotoError(f"{name}: not an image Pillow can read ({type(exc).__name__})") from None
    except (OSError, SyntaxError, ValueError) as exc:   # truncated or corrupt data
        raise PhotoError(f"{name}: could not decode the image ({exc})") from None
    if min(arr.shape[:2]) < 8:
        raise PhotoError(f"{name}: the image is too small ({arr.shape[1]} x {arr.shape[0]} px)")
    if max(w, h) > max_side and log is not None:
        log(f"{name}: {w} x {h} px is larger than {max_side} px a side: downscaled")
    return _downscale_array(arr, max_side, None)


def _downscale_array(arr: np.ndarray, max_side: int, log) -> np.ndarray:
    h, w = arr.shape[:2]
    if max(h, w) <= max_side:
        return arr
    cv2 = import_cv2()
    s = max_side / max(h, w)
    if log is not None:
        log(f"the image is {w} x {h} px, larger than {max_side} px a side: downscaled")
    return cv2.resize(arr, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)


def find_face(photo: np.ndarray, measure: Optional[FaceMeasure] = None) -> FaceReading:
    """The largest face of ``photo`` (uint8 RGB): found in a copy at most ``DETECT_SIDE`` px a side
    (HOG, one upsample: faces down to ~40 px there), its 68 landmarks read at full resolution.
    Raises :class:`NoFaceInPhoto`."""
    measure = measure or FaceMeasure(detector="hog", upsample=1, embed=False)
    img = as_rgb_uint8(photo)
    h, w = img.shape[:2]
    s = min(1.0, DETECT_SIDE / max(h, w))
    if s < 1.0:
        cv2 = import_cv2()
        small = cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    else:
        small = img
    chosen = measure.choose(measure.detect(small))
    if chosen is None:
        raise NoFaceInPhoto(f"no face found in the {w} x {h} px photo (a frontal face of at least "
                            f"{int(40 / s)} px is needed)")
    box = tuple(v / s for v in chosen[0])
    return measure.read_in_box(img, box, chosen[1], embed=False)


def align_photo(photo: Photo, size: int, *, measure: Optional[FaceMeasure] = None,
                log: Optional[Callable[[str], None]] = None) -> AlignedFace:
    """Decode (if needed), find the largest face and FFHQ-align it to ``size`` px."""
    img = load_photo(photo, log=log)
    reading = find_face(img, measure)
    return align_face(img, reading.landmarks, size)
