"""dlib's face models, found inside installed pip packages (nothing is downloaded at run time).

The ``faces`` extra installs ``dlib-bin`` (dlib's Python module as a wheel), ``opencv-python-headless``
(``cv2.solvePnP`` for the head pose) and ``face-recognition-models``, whose ``models/`` folder holds
dlib's trained files:

* ``shape_predictor_68_face_landmarks.dat`` — 68 landmarks (iBUG 300-W layout);
* ``shape_predictor_5_face_landmarks.dat`` — 5 landmarks (eye corners, nose base), for face chips;
* ``dlib_face_recognition_resnet_model_v1.dat`` — the 128-D identity embedding;
* ``mmod_human_face_detector.dat`` — the CNN (MMOD) face detector.

``face_recognition_models/__init__.py`` imports ``pkg_resources`` (gone from setuptools >= 81), so
it is never imported here: the folder is located with ``importlib.util.find_spec``.
"""
from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

INSTALL_HINT = "pip install 'stylecast[faces]'"
MODEL_FILES = {
    "landmarks68": "shape_predictor_68_face_landmarks.dat",
    "landmarks5": "shape_predictor_5_face_landmarks.dat",
    "recognition": "dlib_face_recognition_resnet_model_v1.dat",
    "mmod": "mmod_human_face_detector.dat",
}


class FaceModelsMissing(ImportError):
    """The ``faces`` extra (dlib, cv2, face-recognition-models) is not installed; the message is one line."""


def import_dlib() -> ModuleType:
    """``dlib``, or :class:`FaceModelsMissing` naming the extra."""
    try:
        import dlib
    except ImportError as e:
        raise FaceModelsMissing(f"the face measure needs dlib ({e}); install it with {INSTALL_HINT}") from None
    return dlib


def import_cv2() -> ModuleType:
    """``cv2``, or :class:`FaceModelsMissing` naming the extra."""
    try:
        import cv2
    except ImportError as e:
        raise FaceModelsMissing(f"the face measure needs OpenCV ({e}); install it with {INSTALL_HINT}") from None
    return cv2


def models_dir() -> Path:
    """The ``models/`` folder of the installed ``face_recognition_models`` package (not imported)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None:
        raise FaceModelsMissing(f"the face measure needs the face-recognition-models package; "
                                f"install it with {INSTALL_HINT}")
    roots = list(spec.submodule_search_locations or [])
    if not roots and spec.origin:
        roots = [str(Path(spec.origin).parent)]
    for root in roots:
        folder = Path(root) / "models"
        if folder.is_dir():
            return folder
    raise FaceModelsMissing(f"face_recognition_models has no models/ folder (looked in {roots}); "
                            f"reinstall it with {INSTALL_HINT}")


def model_path(name: str) -> Path:
    """Path of one model file: ``name`` is a key of ``MODEL_FILES`` (``"landmarks68"``, ...)."""
    if name not in MODEL_FILES:
        raise ValueError(f"unknown face model {name!r}; known: {', '.join(MODEL_FILES)}")
    path = models_dir() / MODEL_FILES[name]
    if not path.is_file():
        raise FaceModelsMissing(f"face model file {path} is missing; reinstall it with {INSTALL_HINT}")
    return path


@dataclass(frozen=True)
class FaceModels:
    """The loaded dlib objects, shared by every :class:`~engine.faces.measure.FaceMeasure`.

    ``mmod`` and ``recognition`` are loaded on first use (:meth:`mmod_detector`,
    :meth:`recognizer`); the rest at once.
    """

    dlib: ModuleType
    cv2: ModuleType
    hog: Any               # dlib.fhog_object_detector (frontal_face_detector)
    landmarks68: Any       # dlib.shape_predictor
    landmarks5: Any        # dlib.shape_predictor

    def mmod_detector(self) -> Any:
        """dlib.cnn_face_detection_model_v1 (loaded once per process)."""
        return _load_mmod()

    def recognizer(self) -> Any:
        """dlib.face_recognition_model_v1 (loaded once per process)."""
        return _load_recognizer()


@functools.lru_cache(maxsize=1)
def load_models() -> FaceModels:
    """Import dlib and cv2 and load the HOG detector and both shape predictors (once per process).

    Raises :class:`FaceModelsMissing` (an ``ImportError``) with a one-line message naming
    ``pip install 'stylecast[faces]'`` when any part of the extra is absent.
    """
    dlib, cv2 = import_dlib(), import_cv2()
    return FaceModels(dlib=dlib, cv2=cv2, hog=dlib.get_frontal_face_detector(),
                      landmarks68=dlib.shape_predictor(str(model_path("landmarks68"))),
                      landmarks5=dlib.shape_predictor(str(model_path("landmarks5"))))


@functools.lru_cache(maxsize=1)
def _load_mmod() -> Any:
    return import_dlib().cnn_face_detection_model_v1(str(model_path("mmod")))


@functools.lru_cache(maxsize=1)
def _load_recognizer() -> Any:
    return import_dlib().face_recognition_model_v1(str(model_path("recognition")))
