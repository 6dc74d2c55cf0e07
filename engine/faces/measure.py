"""The face measure: one RGB image in, one :class:`FaceReading` (landmarks, mouth, eyes, pose, identity) out.

Pipeline per image: a face detector (dlib's HOG, or its CNN "MMOD" detector) → the largest face
→ dlib's 68-point shape predictor inside its box → ratios of landmark distances (mouth, eyes),
the head pose (:mod:`engine.faces.pose`) and, optionally, dlib's 128-D ResNet identity
embedding. "No face" is a value (``found=False``, NaN numbers), never an exception.

Aligned mode is for generator output whose faces sit at a known place (FFHQ crops, the demo):
when the detector misses, the 68-point predictor is run inside a fixed box instead
(``source="aligned"``). dlib's predictor is trained on real photographs; the soft cartoon faces of
StyleCast's demo generator are found by HOG in fewer than half of the images (27 of seeds 0–63),
so use ``aligned="demo"`` (or ``detector="none"``) for them, and read their numbers as approximate.

Landmark indices are dlib's 0-based iBUG 300-W order (jaw 0–16, brows 17–26, nose 27–35, eyes
36–47, outer lips 48–59, inner lips 60–67). "Left" and "right" are the subject's own: the left
eye is points 42–47, on the image's right.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence, Union

import numpy as np

from engine.faces.models import FaceModels, load_models
from engine.faces.pose import head_pose

EAR_OPEN = 0.30          # eye aspect ratio of an ordinary open eye (Soukupová & Čech 2016: ~0.25–0.35)
SAME_PERSON = 0.6        # dlib's ResNet: embeddings closer than this are the same person (LFW 99.38 %)
TIE_AREA = 0.10          # boxes within 10 % of the largest area are "as large"; the best score wins
# The box dlib's HOG detector puts on an FFHQ-aligned crop, as fractions (left, top, right, bottom)
# of the crop's side: the mean over FFHQ-recipe crops (engine.faces.align) of the astronaut and
# Grace Hopper photos at 160-512 px, HOG upsample 0 and 1; single boxes scatter by 0.03-0.04 of the
# side (one standard deviation; HOG's boxes come in discrete scales). tests/engine/faces/test_faces_measure.py checks it.
FFHQ_BOX = (0.21, 0.33, 0.79, 0.91)
# The same for StyleCast's demo generator (128 px): the mean HOG box over the 27 of seeds 0-63
# (truncation 0.7) that HOG finds; boxes scatter by 0.02-0.03 of the side (one standard deviation).
DEMO_BOX = (0.26, 0.32, 0.71, 0.77)
ALIGNED_BOXES = {"auto": FFHQ_BOX, "ffhq": FFHQ_BOX, "demo": DEMO_BOX}
KEYS = ("mouth_open", "jaw", "blink", "eye_open_left", "eye_open_right",
        "head_yaw", "head_pitch", "head_roll", "found")
ROLES = {"mouth_open": "mouth_open", "jaw": "jaw", "blink": "blink",
         "head_yaw": "head_yaw", "head_pitch": "head_pitch", "head_roll": "head_roll"}

Box = tuple[float, float, float, float]
Aligned = Union[bool, str, Box]


@dataclass
class FaceReading:
    """What the measure read from one image. Distances are in pixels, angles in degrees.

    * ``found``: a face was read; ``source``: ``"detector"``, ``"aligned"`` (the fixed box of
      aligned mode) or ``"none"``.
    * ``box``: (left, top, right, bottom) px of the face; ``score``: the detector's confidence
      (HOG: SVM margin, > 0 means detected; MMOD: its confidence); NaN for aligned or no face.
    * ``landmarks``: [68, 2] float64 (x, y) px.
    * ``mouth_open``: the inner-lip gap (mean of |62−66|, |61−67|, |63−65|) divided by the
      inter-ocular distance (between the eye centres, the means of 36–41 and 42–47). About 0 for
      a closed mouth, 0.3–0.6 wide open.
    * ``mouth_width``: |48−54| (mouth corners) / inter-ocular distance; ~0.8 at rest, larger in a
      smile (the ``jaw`` key of :meth:`FaceMeasure.__call__`).
    * ``eye_open_left``, ``eye_open_right``: eye aspect ratio (Soukupová & Čech 2016),
      (|p2−p6| + |p3−p5|) / (2 |p1−p4|) over the eye's six points; ~0.3 open, < 0.1 closed.
    * ``blink``: 1 − mean(EAR) / ``EAR_OPEN``; ~0 for open eyes, rising toward 1 as they close
      (not clipped: wide-open eyes give a small negative value).
    * ``head_yaw``, ``head_pitch``, ``head_roll``: degrees in (−90, 90) (signs in
      :mod:`engine.faces.pose`: yaw > 0 turns to the image's right, pitch > 0 looks up, roll > 0
      tilts counter-clockwise); NaN when the pose could not be solved.
    * ``embedding``: [128] float32 identity descriptor, or None (not asked for, or no face).
    """

    found: bool
    source: str
    box: Box | None = None
    score: float = math.nan
    landmarks: np.ndarray | None = None
    mouth_open: float = math.nan
    mouth_width: float = math.nan
    eye_open_left: float = math.nan
    eye_open_right: float = math.nan
    blink: float = math.nan
    head_yaw: float = math.nan
    head_pitch: float = math.nan
    head_roll: float = math.nan
    embedding: np.ndarray | None = field(default=None, repr=False)

    @classmethod
    def none(cls) -> "FaceReading":
        """The reading of an image without a face."""
        return cls(found=False, source="none")

    def values(self) -> dict[str, float]:
        """The numbers under the keys of :meth:`FaceMeasure.__call__` (``found`` as 0.0 / 1.0)."""
        return {"mouth_open": self.mouth_open, "jaw": self.mouth_width, "blink": self.blink,
                "eye_open_left": self.eye_open_left, "eye_open_right": self.eye_open_right,
                "head_yaw": self.head_yaw, "head_pitch": self.head_pitch, "head_roll": self.head_roll,
                "found": 1.0 if self.found else 0.0}


def eye_aspect_ratio(eye: np.ndarray) -> float:
    """EAR of six eye points [6, 2] in dlib order (p1 outer/inner corner, p2 p3 upper lid, p4, p5 p6 lower)."""
    p = np.asarray(eye, np.float64)
    width = np.linalg.norm(p[0] - p[3])
    return float((np.linalg.norm(p[1] - p[5]) + np.linalg.norm(p[2] - p[4])) / (2.0 * width)) if width > 0 else math.nan


def landmark_ratios(landmarks: np.ndarray) -> dict[str, float]:
    """mouth_open, mouth_width, eye_open_left, eye_open_right and blink of 68 landmarks [68, 2] px."""
    lm = np.asarray(landmarks, np.float64)
    inter_ocular = float(np.linalg.norm(lm[42:48].mean(0) - lm[36:42].mean(0)))
    if not inter_ocular > 0:
        return {k: math.nan for k in ("mouth_open", "mouth_width", "eye_open_left", "eye_open_right", "blink")}
    gap = np.mean([np.linalg.norm(lm[a] - lm[b]) for a, b in ((62, 66), (61, 67), (63, 65))])
    ear_right, ear_left = eye_aspect_ratio(lm[36:42]), eye_aspect_ratio(lm[42:48])
    return {"mouth_open": float(gap / inter_ocular),
            "mouth_width": float(np.linalg.norm(lm[48] - lm[54]) / inter_ocular),
            "eye_open_left": ear_left, "eye_open_right": ear_right,
            "blink": float(1.0 - (ear_left + ear_right) / 2.0 / EAR_OPEN)}


def as_rgb_uint8(image: Any) -> np.ndarray:
    """``image`` as a C-contiguous uint8 [H, W, 3] RGB array.

    Accepts uint8 [H, W, 3]; grayscale [H, W] or [H, W, 1] (repeated to three channels); RGBA
    [H, W, 4] (alpha dropped); float arrays with values in [0, 1] (× 255, rounded). Anything else
    (other dtypes, float outside [0, 1], NaN, other shapes, fewer than 8 px a side) is a ValueError.
    """
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[2] in (1, 3, 4):
        a = a[:, :, :3] if a.shape[2] != 1 else np.repeat(a, 3, axis=2)
    elif a.ndim == 2:
        a = np.repeat(a[:, :, None], 3, axis=2)
    else:
        raise ValueError(f"expected an image [H, W, 3] (RGB), [H, W, 4] or [H, W]; got shape {a.shape}")
    if min(a.shape[:2]) < 8:
        raise ValueError(f"image is too small ({a.shape[1]} x {a.shape[0]} px)")
    if a.dtype == np.uint8:
        return np.ascontiguousarray(a)
    if np.issubdtype(a.dtype, np.floating):
        if not np.all(np.isfinite(a)) or a.min() < 0.0 or a.max() > 1.0:
            raise ValueError("a float image must hold values in [0, 1] (convert [-1, 1] generator output "
                             "with (x + 1) / 2, or pass uint8)")
        return np.ascontiguousarray(np.round(a * 255.0).astype(np.uint8))
    raise ValueError(f"expected a uint8 or float image, got dtype {a.dtype}")


def _parse_aligned(aligned: Aligned) -> Box | None:
    if aligned is False or aligned is None:
        return None
    if isinstance(aligned, str):
        if aligned not in ALIGNED_BOXES:
            raise ValueError(f"aligned must be False, 'auto' (= 'ffhq'), 'demo' or (l, t, r, b) fractions; "
                             f"got {aligned!r}")
        return ALIGNED_BOXES[aligned]
    if aligned is True:
        raise ValueError("aligned=True is ambiguous: use 'auto' (the FFHQ box) or (l, t, r, b) fractions")
    box = tuple(float(v) for v in aligned)
    if len(box) != 4 or not (0 <= box[0] < box[2] <= 1 and 0 <= box[1] < box[3] <= 1):
        raise ValueError(f"aligned box must be (left, top, right, bottom) fractions in [0, 1]; got {aligned!r}")
    return box  # type: ignore[return-value]


class FaceMeasure:
    """Reads faces from RGB images with dlib (see the module docstring).

    Args:
        detector: ``"hog"`` (dlib's frontal HOG + linear SVM: fast, near-frontal faces ≳ 40 px
            with ``upsample=1``), ``"mmod"`` (dlib's CNN: slower, finds harder faces; its boxes are
            looser than the HOG boxes the 68-point predictor was trained on) or ``"none"``
            (no detector: every image is read in the aligned box; needs ``aligned``).
        upsample: how many times the detector doubles the image first (finds faces half as
            large per step, costs ~4× per step).
        aligned: ``False``; ``"auto"`` = ``"ffhq"`` (``FFHQ_BOX``, the HOG box on FFHQ-aligned
            crops); ``"demo"`` (``DEMO_BOX``, the demo generator's faces); or a box (left, top,
            right, bottom) as fractions of the image width/height. When the detector
            misses, the landmarks are read inside this box (``source="aligned"``). It assumes a
            face is there: on an image without one it still returns a (meaningless) reading.
        embed: compute the identity embedding in :meth:`read` (~0.2 s per face on one CPU core).
    """

    roles = ROLES

    def __init__(self, detector: str = "hog", upsample: int = 1, aligned: Aligned = False,
                 embed: bool = True) -> None:
        if detector not in ("hog", "mmod", "none"):
            raise ValueError(f"detector must be 'hog', 'mmod' or 'none'; got {detector!r}")
        if int(upsample) != upsample or upsample < 0:
            raise ValueError(f"upsample must be a non-negative integer; got {upsample!r}")
        self.detector = detector
        self.upsample = int(upsample)
        self.aligned_box = _parse_aligned(aligned)
        if detector == "none" and self.aligned_box is None:
            raise ValueError("detector='none' reads faces only in the aligned box: pass aligned='auto' or a box")
        self.embed_faces = bool(embed)
        self.models: FaceModels = load_models()
        self._mmod = self.models.mmod_detector() if detector == "mmod" else None
        self._recognizer = self.models.recognizer() if embed else None

    # -- detection ---------------------------------------------------------------------------

    def detect(self, image: np.ndarray) -> list[tuple[Box, float]]:
        """All faces the detector finds: [((l, t, r, b) px, score)], unordered. uint8 RGB in."""
        img = as_rgb_uint8(image)
        if self.detector == "hog":
            rects, scores, _ = self.models.hog.run(img, self.upsample, 0.0)
            return [((float(r.left()), float(r.top()), float(r.right()), float(r.bottom())), float(s))
                    for r, s in zip(rects, scores)]
        if self.detector == "mmod":
            return [((float(d.rect.left()), float(d.rect.top()), float(d.rect.right()), float(d.rect.bottom())),
                     float(d.confidence)) for d in self._mmod(img, self.upsample)]
        return []

    @staticmethod
    def choose(faces: Sequence[tuple[Box, float]]) -> tuple[Box, float] | None:
        """The largest face; among those within ``TIE_AREA`` of the largest area, the best score."""
        if not faces:
            return None
        areas = [max(b[2] - b[0], 0.0) * max(b[3] - b[1], 0.0) for b, _ in faces]
        big = max(areas)
        return max((f for f, a in zip(faces, areas) if a >= (1.0 - TIE_AREA) * big), key=lambda f: f[1])

    # -- reading -----------------------------------------------------------------------------

    def read(self, image: np.ndarray, embed: bool | None = None) -> FaceReading:
        """Read the face of one image (uint8 RGB [H, W, 3]; see :func:`as_rgb_uint8` for others).

        ``embed`` overrides the constructor's choice for this call.
        """
        img = as_rgb_uint8(image)
        h, w = img.shape[:2]
        chosen = self.choose(self.detect(img))
        source = "detector"
        if chosen is None:
            if self.aligned_box is None:
                return FaceReading.none()
            fl, ft, fr, fb = self.aligned_box
            chosen, source = ((fl * w, ft * h, fr * w, fb * h), math.nan), "aligned"
        return self.read_in_box(img, *chosen, source=source, embed=embed)

    def read_in_box(self, image: np.ndarray, box: Box, score: float = math.nan, *, source: str = "detector",
                    embed: bool | None = None) -> FaceReading:
        """Read the face inside ``box`` (l, t, r, b) px of ``image`` (it may reach past the image):
        a face found elsewhere, e.g. by a detector run on a smaller copy."""
        img = as_rgb_uint8(image)
        h, w = img.shape[:2]
        dlib = self.models.dlib
        rect = dlib.rectangle(int(round(box[0])), int(round(box[1])), int(round(box[2])), int(round(box[3])))
        shape = self.models.landmarks68(img, rect)
        landmarks = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
        yaw, pitch, roll = head_pose(self.models.cv2, landmarks, w, h)
        reading = FaceReading(found=True, source=source, box=box, score=score, landmarks=landmarks,
                              head_yaw=yaw, head_pitch=pitch, head_roll=roll, **landmark_ratios(landmarks))
        if self.embed_faces if embed is None else embed:
            reading.embedding = self._descriptor(img, rect)
        return reading

    def _descriptor(self, img: np.ndarray, rect: Any) -> np.ndarray:
        if self._recognizer is None:
            self._recognizer = self.models.recognizer()
        shape5 = self.models.landmarks5(img, rect)
        return np.asarray(self._recognizer.compute_face_descriptor(img, shape5), dtype=np.float32)

    def read_batch(self, images: Sequence[np.ndarray] | np.ndarray, embed: bool | None = None) -> list[FaceReading]:
        """:meth:`read` of each image (a list of images of any sizes, or an array [B, H, W, 3])."""
        return [self.read(im, embed=embed) for im in _as_list(images)]

    def __call__(self, images: Sequence[np.ndarray] | np.ndarray) -> dict[str, np.ndarray]:
        """Numbers for a batch: ``{key: float64 [B]}`` for ``KEYS`` (``found`` 0/1; NaN where no face).

        ``jaw`` is the mouth width ratio. ``roles`` maps these keys to motion roles. No embedding
        is computed here (see :meth:`embed`).
        """
        readings = self.read_batch(images, embed=False)
        return {k: np.array([r.values()[k] for r in readings], dtype=np.float64) for k in KEYS}

    def embed(self, images: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        """Identity embeddings [B, 128] float32; a row of NaN where no face was read."""
        out = np.full((len(_as_list(images)), 128), np.nan, dtype=np.float32)
        for i, r in enumerate(self.read_batch(images, embed=True)):
            if r.embedding is not None:
                out[i] = r.embedding
        return out


def _as_list(images: Sequence[np.ndarray] | np.ndarray) -> list[np.ndarray]:
    if isinstance(images, np.ndarray):
        if images.ndim != 4:
            raise ValueError(f"expected a batch [B, H, W, 3]; got shape {images.shape} (use read() for one image)")
        return list(images)
    return list(images)


def identity_distance(a: Any, b: Any) -> float | np.ndarray:
    """Euclidean distance between identity embeddings (same person if < ``SAME_PERSON``).

    ``a`` and ``b`` are embeddings [128] or [B, 128] (broadcast) or :class:`FaceReading`; a
    float for two single embeddings, else an array [B]. NaN where a face (embedding) is missing.
    """
    ea, eb = _embedding(a), _embedding(b)
    d = np.linalg.norm(ea.astype(np.float64) - eb.astype(np.float64), axis=-1)
    return float(d) if np.ndim(d) == 0 else d


def _embedding(x: Any) -> np.ndarray:
    if isinstance(x, FaceReading):
        return x.embedding if x.embedding is not None else np.full(128, np.nan, np.float32)
    e = np.asarray(x, dtype=np.float64)
    if e.shape[-1:] != (128,):
        raise ValueError(f"an identity embedding has 128 values; got shape {e.shape}")
    return e
