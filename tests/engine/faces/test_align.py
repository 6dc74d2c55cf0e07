"""FFHQ alignment of real photos (scikit-image's astronaut, matplotlib's Grace Hopper, loaded from
the installed packages): the crop does not depend on the photo's scale, rotation or EXIF
orientation, pastes back, pads past the photo's edge with a blur; bad photos are one-line errors."""
from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("dlib", reason="needs the faces extra (dlib-bin)")
skdata = pytest.importorskip("skimage.data", reason="needs scikit-image (the dev extra) for its astronaut photo")

import face_edits as fe  # noqa: E402
from engine.faces.align import align_face, ffhq_quad  # noqa: E402
from engine.faces.photo import (MAX_SIDE, NoFaceInPhoto, PhotoError, align_photo, find_face,  # noqa: E402
                                load_photo)

SIZE = 256


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return np.ascontiguousarray(skdata.astronaut())


@pytest.fixture(scope="module")
def hopper() -> np.ndarray:
    import matplotlib.cbook

    with Image.open(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as im:
        return np.asarray(im.convert("RGB")).copy()


def _jpeg(image: np.ndarray, orientation: int | None = None) -> bytes:
    buf = io.BytesIO()
    im = Image.fromarray(image)
    if orientation is None:
        im.save(buf, "JPEG", quality=95)
    else:
        exif = Image.Exif()
        exif[0x0112] = orientation
        im.save(buf, "JPEG", quality=95, exif=exif.tobytes())
    return buf.getvalue()


def _png_header(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IEND", b""))


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255.0 ** 2 / max(mse, 1e-12)))


def test_the_crop_follows_the_recipe(astronaut):
    face = align_photo(astronaut, SIZE)
    assert face.image.shape == (SIZE, SIZE, 3) and face.image.dtype == np.uint8
    lm = face.landmarks_aligned
    eye_l, eye_r = lm[36:42].mean(0), lm[42:48].mean(0)
    mouth = (lm[48] + lm[54]) / 2
    eye_avg, e2e, e2m = (eye_l + eye_r) / 2, np.linalg.norm(eye_r - eye_l), np.linalg.norm(mouth - (eye_l + eye_r) / 2)
    # the square's half-side is max(2 |e2e|, 1.8 |e2m|), its centre 0.1 e2m below the eye midpoint
    assert SIZE / 2 == pytest.approx(max(2 * e2e, 1.8 * e2m), rel=1e-6)
    centre = eye_avg + 0.1 * (mouth - eye_avg)
    assert np.allclose(centre, [SIZE / 2, SIZE / 2], atol=1e-6)
    assert abs(eye_l[1] - eye_r[1]) < 0.25 * e2e          # eye-mouth frame: nearly level eyes
    # the matrix maps the photo's landmarks onto the crop's, and the quad's corners onto its corners
    m = face.matrix
    corners = face.quad @ m[:, :2].T + m[:, 2]
    assert np.allclose(corners, [[0, 0], [0, SIZE], [SIZE, SIZE], [SIZE, 0]], atol=1e-3)
    assert np.allclose(face.inverse @ np.append(lm[30], 1.0), face.landmarks[30], atol=1e-3)
    # landmarks read again on the crop land where the transform put them (pixels)
    again = find_face(face.image).landmarks
    assert np.median(np.linalg.norm(again - lm, axis=1)) < 3.0


def _key_points(face) -> np.ndarray:
    """Eye midpoint and mouth centre in the crop: what the recipe puts in place."""
    lm = face.landmarks_aligned
    return np.stack([(lm[36:42].mean(0) + lm[42:48].mean(0)) / 2, (lm[48] + lm[54]) / 2])


@pytest.mark.parametrize("change", ["3x larger", "rotated 25 deg", "mirrored"])
def test_the_crop_does_not_depend_on_scale_rotation_or_mirror(hopper, change):
    """The face's landmarks, found again on the changed photo, land where they did in the crop:
    within 2 % of its side (dlib's own jitter between the two photos; a rotation, scale or flip
    that alignment failed to undo moves them by tens of pixels)."""
    base = align_photo(hopper, SIZE)
    if change == "3x larger":
        photo = np.asarray(Image.fromarray(hopper).resize((hopper.shape[1] * 3, hopper.shape[0] * 3), Image.BICUBIC))
    elif change == "rotated 25 deg":
        photo = fe.rotate(hopper, 25.0)
    else:
        photo = fe.mirror(hopper)
    other = align_photo(photo, SIZE)
    a, b = _key_points(base), _key_points(other)
    if change == "mirrored":
        b[:, 0] = SIZE - b[:, 0]
    assert np.abs(a - b).max() < 0.02 * SIZE, (change, a, b)
    if change != "mirrored":
        assert np.median(np.linalg.norm(base.landmarks_aligned - other.landmarks_aligned, axis=1)) < 0.02 * SIZE


@pytest.mark.parametrize("orientation, undo", [(3, 2), (6, 1), (8, 3)])
def test_exif_orientation_is_honoured(hopper, orientation, undo):
    """A camera's upright photo stored rotated with an EXIF Orientation tag decodes upright."""
    stored = np.ascontiguousarray(np.rot90(hopper, k=undo))      # what the sensor wrote
    decoded = load_photo(_jpeg(stored, orientation))
    assert decoded.shape == hopper.shape
    assert np.abs(decoded.astype(int) - hopper.astype(int)).mean() < 3.0     # JPEG q95, no rotation left
    assert np.abs(_key_points(align_photo(hopper, SIZE)) - _key_points(align_photo(decoded, SIZE))).max() < 2.0


def test_paste_back_restores_the_photo(astronaut):
    face = align_photo(astronaut, SIZE)
    pasted = face.paste(face.image, astronaut)
    box = face.quad.mean(0).astype(int)
    r = int(0.25 * np.linalg.norm(face.quad[3] - face.quad[0]))
    region = (slice(box[1] - r, box[1] + r), slice(box[0] - r, box[0] + r))
    assert _psnr(pasted[region], astronaut[region]) > 28.0
    # a changed crop changes the photo only near the face
    grey = np.full_like(face.image, 128)
    changed = np.abs(face.paste(grey, astronaut).astype(int) - astronaut).sum(2) > 0
    (x0, y0), (x1, y1) = np.floor(face.quad.min(0)).astype(int), np.ceil(face.quad.max(0)).astype(int)
    outside = np.ones_like(changed)
    outside[max(y0 - 2, 0):y1 + 2, max(x0 - 2, 0):x1 + 2] = False
    assert changed[region].mean() > 0.9 and not changed[outside].any()
    with pytest.raises(ValueError, match="came from"):
        face.paste(face.image, astronaut[:100])


def test_a_face_at_the_edge_is_padded_with_a_blur(hopper):
    """The photo cut right through the face's side: the part of the square beyond the photo is
    mirrored and blurred (smooth, but not one repeated edge pixel per row)."""
    reading = find_face(hopper)
    quad = ffhq_quad(reading.landmarks)
    cut = int(quad[:, 0].min() + 0.35 * (quad[:, 0].max() - quad[:, 0].min()))
    photo = np.ascontiguousarray(hopper[:, cut:])
    lm = reading.landmarks - [cut, 0]
    face = align_face(photo, lm, SIZE)
    outside = face.image[SIZE // 3: 2 * SIZE // 3, : SIZE // 8].astype(np.float64)
    inside = face.image[SIZE // 3: 2 * SIZE // 3, SIZE // 2: SIZE // 2 + SIZE // 8].astype(np.float64)
    assert np.abs(np.diff(outside, axis=1)).mean() < 0.5 * np.abs(np.diff(inside, axis=1)).mean()
    assert outside.std(axis=1).mean() > 0.5                      # not a constant row per line


def test_the_largest_of_several_faces_is_aligned(astronaut, hopper):
    small = np.asarray(Image.fromarray(hopper).resize((hopper.shape[1] // 3, hopper.shape[0] // 3)))
    canvas = np.zeros((900, 1400, 3), np.uint8)
    canvas[:astronaut.shape[0], :astronaut.shape[1]] = astronaut
    canvas[500:500 + small.shape[0], 1000:1000 + small.shape[1]] = small
    face = find_face(canvas)
    assert face.box[2] < astronaut.shape[1]                      # the astronaut's face, not Hopper's


def test_bad_photos_are_one_line_errors(tmp_path, astronaut):
    with pytest.raises(PhotoError, match="not an image"):
        load_photo(b"hello, I am not a picture")
    with pytest.raises(PhotoError, match="could not decode|not an image"):
        load_photo(_jpeg(astronaut)[:2000])
    with pytest.raises(PhotoError, match="no such file"):
        load_photo(tmp_path / "missing.jpg")
    with pytest.raises(PhotoError, match="not a regular file"):
        load_photo(tmp_path)
    with pytest.raises(NoFaceInPhoto, match="no face found"):
        align_photo(np.full((400, 300, 3), 120, np.uint8), SIZE)
    with pytest.raises(PhotoError, match="too large to decode"):
        load_photo(_png_header(50_000, 50_000))           # 57 bytes that declare 2.5 Gpx


def test_a_huge_photo_is_downscaled_and_said(astronaut):
    big = np.asarray(Image.fromarray(astronaut).resize((MAX_SIDE + 808, MAX_SIDE + 808), Image.BILINEAR))
    said: list[str] = []
    photo = load_photo(_jpeg(big), log=said.append)
    assert max(photo.shape[:2]) <= MAX_SIDE and len(said) == 1 and "downscaled" in said[0]
    assert align_photo(photo, SIZE).image.shape == (SIZE, SIZE, 3)
