"""Head pose from 68 landmarks: ``cv2.solvePnP`` of a generic 3-D face, angles in degrees.

Frames. The camera frame is OpenCV's: x to the image's right, y down, z forward (away from the
camera); pinhole with focal length = image width (px), principal point = image centre, no
distortion. The head frame is the camera frame of a face looking straight into the camera:
X to the image's right (the subject's left), Y down (chin-ward), Z into the head; origin midway
between the eye centres. ``solvePnP`` gives R, t with p_camera = R p_head + t.

The angles describe the head relative to the line of sight (the ray from the camera to the
head's origin, :func:`line_of_sight`), so a face looking into the lens reads (0, 0, 0) even off
centre: R_face = L(t)ᵀ · R, decomposed intrinsically y–x′–z″ as R_face = Ry(−yaw) · Rx(−pitch) ·
Rz(−roll) (turn, then nod, then tilt, each about the head's own axes), with signs chosen so that:

* ``yaw`` > 0: the face turns toward the image's right (the nose points right, the subject
  looks to their left);
* ``pitch`` > 0: the face looks up (chin up);
* ``roll`` > 0: the head tilts counter-clockwise in the image, so rotating the picture by +θ
  counter-clockwise (``PIL.Image.rotate(θ)``) adds ≈ θ to roll (an image rotation about the
  principal point is a camera roll: R_face → Rz(−θ) · R_face, exactly +θ for a face that looks
  into the lens);
* mirroring the image left-right negates yaw and roll and keeps pitch.

The generic face (``FACE_MODEL_MM``) is an average adult in millimetres from anthropometric
tables (Farkas): eye corners (inter-canthal width 32 mm, bi-ocular 90 mm, outer corners 14 mm
deeper), the nose (bridge 27–30, base 31–35; tip 32 mm in front of the inner eye corners) and
the mouth corners (50 mm apart). The chin and lips are left out on purpose: they move when the
mouth opens, and the pose must not. Pitch therefore has a per-person offset of a few degrees
(face proportions differ from the average); differences between frames of one face are what
it measures well.
"""
from __future__ import annotations

import math
from types import ModuleType

import numpy as np

# dlib 68-point index -> (X, Y, Z) in mm in the head frame (X image-right, Y down, Z into the head).
FACE_MODEL_MM: dict[int, tuple[float, float, float]] = {
    27: (0.0, -8.0, -14.0),      # nasion (top of the nose bridge)
    28: (0.0, 7.5, -20.0),
    29: (0.0, 23.0, -26.0),
    30: (0.0, 38.0, -32.0),      # pronasale (nose tip)
    31: (-13.0, 41.0, -14.0),    # nostril wings (subject's right ... left)
    32: (-7.0, 43.5, -17.0),
    33: (0.0, 44.0, -18.0),      # subnasale
    34: (7.0, 43.5, -17.0),
    35: (13.0, 41.0, -14.0),
    36: (-45.0, -2.0, 14.0),     # right eye, outer corner (image left)
    39: (-16.0, 0.0, 0.0),       # right eye, inner corner
    42: (16.0, 0.0, 0.0),        # left eye, inner corner
    45: (45.0, -2.0, 14.0),      # left eye, outer corner (image right)
    48: (-25.0, 66.0, -2.0),     # mouth corners
    54: (25.0, 66.0, -2.0),
}
POSE_POINTS = np.array(sorted(FACE_MODEL_MM), dtype=np.intp)
MODEL_POINTS = np.array([FACE_MODEL_MM[i] for i in POSE_POINTS], dtype=np.float64)   # [15, 3] mm
MODEL_EYE_DISTANCE_MM = 61.0     # between the eye centres (midpoints of the corner pairs)
MAX_ANGLE_DEG = 90.0


def camera_matrix(width: int, height: int) -> np.ndarray:
    """Pinhole intrinsics [3, 3]: focal = ``width`` px, principal point = image centre."""
    return np.array([[width, 0.0, width / 2.0], [0.0, width, height / 2.0], [0.0, 0.0, 1.0]])


def euler_from_matrix(rotation: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees from R = Ry(−yaw) · Rx(−pitch) · Rz(−roll) (see the module doc).

    pitch is in [−90, 90]; yaw and roll in (−180, 180].
    """
    r = np.asarray(rotation, np.float64)
    chi = math.asin(max(-1.0, min(1.0, -r[1, 2])))
    psi = math.atan2(r[0, 2], r[2, 2])
    phi = math.atan2(r[1, 0], r[1, 1])
    return -math.degrees(psi), -math.degrees(chi), -math.degrees(phi)


def matrix_from_euler(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """The rotation [3, 3] with the given (yaw, pitch, roll) in degrees; inverse of :func:`euler_from_matrix`."""
    psi, chi, phi = (-math.radians(a) for a in (yaw, pitch, roll))
    ry = np.array([[math.cos(psi), 0, math.sin(psi)], [0, 1, 0], [-math.sin(psi), 0, math.cos(psi)]])
    rx = np.array([[1, 0, 0], [0, math.cos(chi), -math.sin(chi)], [0, math.sin(chi), math.cos(chi)]])
    rz = np.array([[math.cos(phi), -math.sin(phi), 0], [math.sin(phi), math.cos(phi), 0], [0, 0, 1]])
    return ry @ rx @ rz


def project_model(rotation: np.ndarray, tvec: np.ndarray, width: int, height: int) -> np.ndarray:
    """Image points [15, 2] px of ``MODEL_POINTS`` under pose (R, t mm) and :func:`camera_matrix`."""
    cam = (np.asarray(rotation) @ MODEL_POINTS.T).T + np.asarray(tvec, np.float64).reshape(1, 3)
    k = camera_matrix(width, height)
    uv = (k @ cam.T).T
    return uv[:, :2] / uv[:, 2:3]


def line_of_sight(tvec: np.ndarray) -> np.ndarray:
    """The smallest rotation [3, 3] taking the optical axis (0, 0, 1) onto the ray to ``tvec``.

    R_face = line_of_sight(t)ᵀ · R is the head's rotation relative to the line of sight, so a face
    that looks into the lens reads (0, 0, 0) wherever it is in the picture.
    """
    ray = np.asarray(tvec, np.float64) / np.linalg.norm(tvec)
    axis = np.cross([0.0, 0.0, 1.0], ray)
    s, c = float(np.linalg.norm(axis)), float(ray[2])
    if s < 1e-12:
        return np.eye(3)
    k = axis / s
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + s * kx + (1 - c) * kx @ kx


def initial_guess(landmarks: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """(rvec, tvec) for a frontal face at the landmarks' position and size.

    rvec is the tilt of the eye line (a pure in-plane roll, so large image rotations start near
    the answer), tvec puts the eye midpoint on its pixel at the depth where the model's eye
    distance spans the measured one.
    """
    lm = np.asarray(landmarks, np.float64)
    eye_r, eye_l = lm[[36, 39]].mean(0), lm[[42, 45]].mean(0)
    d = eye_l - eye_r
    dist = max(float(np.hypot(*d)), 1e-6)
    z = width * MODEL_EYE_DISTANCE_MM / dist
    mid = (eye_l + eye_r) / 2
    tvec = np.array([(mid[0] - width / 2.0) * z / width, (mid[1] - height / 2.0) * z / width, z])
    angle = math.atan2(d[1], d[0])          # eye line angle in image coords (y down): rotation about +z
    rvec = np.array([0.0, 0.0, angle])
    return rvec, tvec


def head_pose(cv2: ModuleType, landmarks: np.ndarray, width: int, height: int) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees of a face with 68 ``landmarks`` (px) in a ``width`` x ``height`` image.

    ``solvePnP`` (iterative, Levenberg–Marquardt) starts from :func:`initial_guess`
    (``useExtrinsicGuess=True``), so it stays on the face-toward-camera solution instead of
    flipping to ±170° roll. A result is kept only if it is finite, in front of the camera and all
    three angles lie in (−90, 90); otherwise SQPnP (no guess) is tried, and if that also fails the
    pose is (nan, nan, nan).
    """
    image_points = np.ascontiguousarray(np.asarray(landmarks, np.float64)[POSE_POINTS])
    k = camera_matrix(width, height)
    rvec0, tvec0 = initial_guess(landmarks, width, height)
    attempts = [dict(rvec=rvec0.copy(), tvec=tvec0.copy(), useExtrinsicGuess=True, flags=cv2.SOLVEPNP_ITERATIVE),
                dict(flags=cv2.SOLVEPNP_SQPNP)]
    for kwargs in attempts:
        try:
            ok, rvec, tvec = cv2.solvePnP(MODEL_POINTS, image_points, k, None, **kwargs)
        except cv2.error:
            continue
        # OpenCV 4 hands back the guess's own (3,) arrays, OpenCV 5 (3, 1) ones
        rvec, tvec = np.asarray(rvec, np.float64).reshape(3, 1), np.asarray(tvec, np.float64).reshape(3, 1)
        if not ok or not (np.all(np.isfinite(rvec)) and np.all(np.isfinite(tvec))) or tvec[2, 0] <= 0:
            continue
        angles = euler_from_matrix(line_of_sight(tvec[:, 0]).T @ cv2.Rodrigues(rvec)[0])
        if all(abs(a) < MAX_ANGLE_DEG for a in angles):
            return angles
    return math.nan, math.nan, math.nan
