"""The face measure: landmarks, mouth and eye openness, head pose and identity from RGB images.

Needs the ``faces`` extra (``pip install 'stylecast[faces]'``: dlib-bin, face-recognition-models,
opencv-python-headless); importing this package works without it, and :class:`FaceMeasure`
raises :class:`FaceModelsMissing` (an ``ImportError``) naming the extra.

    from engine.faces import FaceMeasure, identity_distance
    fm = FaceMeasure(aligned="auto")
    r = fm.read(rgb_uint8)                   # FaceReading: found, landmarks, mouth_open, head_yaw, ...
    values = fm(batch_uint8)                 # {"mouth_open": [B], "jaw": [B], ..., "found": [B]}
"""
from engine.faces.align import align_landmarks, ffhq_align, ffhq_quad
from engine.faces.measure import (
                                  DEMO_BOX,
                                  EAR_OPEN,
                                  FFHQ_BOX,
                                  KEYS,
                                  ROLES,
                                  SAME_PERSON,
                                  FaceMeasure,
                                  FaceReading,
                                  as_rgb_uint8,
                                  eye_aspect_ratio,
                                  identity_distance,
                                  landmark_ratios,
)
from engine.faces.models import FaceModelsMissing, load_models, model_path, models_dir
from engine.faces.pose import euler_from_matrix, head_pose, matrix_from_euler

__all__ = [
    "DEMO_BOX", "EAR_OPEN", "FFHQ_BOX", "KEYS", "ROLES", "SAME_PERSON",
    "FaceMeasure", "FaceModelsMissing", "FaceReading",
    "align_landmarks", "as_rgb_uint8", "euler_from_matrix", "eye_aspect_ratio", "ffhq_align", "ffhq_quad",
    "head_pose", "identity_distance", "landmark_ratios", "load_models", "matrix_from_euler", "model_path",
    "models_dir",
]
