"""The real YuNet detector on the shipped sample photos, and the face crop geometry."""

from __future__ import annotations

import numpy as np
import pytest
from imagefactory import PHOTO_FACES, PHOTOS, exif_rotated_jpeg

from ferbatch.config import ScoreSettings
from ferbatch.scoring import DetectorSettings, Face, YuNetDetector, crop_face, decode, default_detector_path, eye_angle


@pytest.fixture(scope="module")
def yunet():
    return YuNetDetector(default_detector_path(), DetectorSettings.from_settings(ScoreSettings()))


@pytest.mark.parametrize(("name", "count"), sorted(PHOTO_FACES.items()))
def test_yunet_finds_the_listed_faces_in_each_sample_photo(yunet, name, count):
    faces = yunet.detect(decode((PHOTOS / name).read_bytes()).pixels)
    assert len(faces) == count
    assert all(0.8 <= f.score <= 1 and f.landmarks and len(f.landmarks) == 5 for f in faces)


def test_an_exif_rotated_copy_gives_the_same_faces(yunet):
    upright = yunet.detect(decode((PHOTOS / "fr_two_people.jpg").read_bytes()).pixels)
    rotated = yunet.detect(decode(exif_rotated_jpeg(PHOTOS / "fr_two_people.jpg")).pixels)
    assert len(rotated) == len(upright) == 2
    for a, b in zip(upright, rotated, strict=True):
        assert abs(a.x - b.x) < 10 and abs(a.y - b.y) < 10


def test_boxes_are_in_original_coordinates_whatever_the_detector_size(yunet):
    rgb = decode((PHOTOS / "fr_obama_and_biden.jpg").read_bytes()).pixels
    small = YuNetDetector(default_detector_path(), DetectorSettings.from_settings(ScoreSettings(detector_size=800)))
    for a, b in zip(yunet.detect(rgb), small.detect(rgb), strict=True):
        assert abs(a.x - b.x) < 12 and abs(a.w - b.w) < 15


def test_eye_angle_is_zero_for_level_eyes_and_ignores_the_landmark_order():
    level = Face(0, 0, 10, 10, 1.0, ((10, 20), (30, 20), (0, 0), (0, 0), (0, 0)))
    assert eye_angle(level) == 0
    tilted = Face(0, 0, 10, 10, 1.0, ((30, 30), (10, 10), (0, 0), (0, 0), (0, 0)))
    assert eye_angle(tilted) == pytest.approx(45)


def test_crop_is_48x48_grey_taken_from_the_face_box():
    grey = np.zeros((400, 400), np.uint8)
    grey[100:300, 100:300] = 200  # the "face"
    crop = crop_face(grey, Face(100, 100, 200, 200, 1.0))
    assert crop.shape == (48, 48) and crop.dtype == np.uint8
    assert crop[4:-4, 4:-4].min() > 190  # no background inside the box


def test_crop_levels_tilted_eyes():
    # Two bright "eyes" on a line tilted by 30 degrees; after levelling, they sit in the same crop row.
    grey = np.zeros((300, 300), np.uint8)
    centre, half = np.array([150.0, 150.0]), 40
    direction = np.array([np.cos(np.radians(30)), np.sin(np.radians(30))])
    eyes = [centre - half * direction, centre + half * direction]
    for x, y in eyes:
        grey[int(y) - 3 : int(y) + 4, int(x) - 3 : int(x) + 4] = 255
    face = Face(90, 90, 120, 120, 1.0, (tuple(eyes[0]), tuple(eyes[1]), (150, 170), (130, 190), (170, 190)))
    crop = crop_face(grey, face)
    rows = [np.unravel_index(crop[:, : 24].argmax(), crop[:, :24].shape)[0],
            np.unravel_index(crop[:, 24:].argmax(), crop[:, 24:].shape)[0]]
    assert abs(rows[0] - rows[1]) <= 1


def test_faces_found_in_a_reduced_decode_are_reported_in_full_size_coordinates(yunet):
    data = (PHOTOS / "fr_obama_and_biden.jpg").read_bytes()
    full = yunet.detect(decode(data).pixels)
    reduced_image = decode(data, min_long_side=960)
    reduced = yunet.detect(reduced_image.pixels, reduced_image.scale)
    assert reduced_image.scale == 0.5 and len(reduced) == len(full) == 3
    for a, b in zip(full, reduced, strict=True):
        assert max(abs(a.x - b.x), abs(a.y - b.y), abs(a.w - b.w)) < 0.06 * a.w
        assert b.landmarks[0][0] == pytest.approx(a.landmarks[0][0], abs=0.06 * a.w)


def test_scaled_face_scales_box_and_landmarks():
    face = Face(10, 20, 30, 40, 0.9, ((1, 2), (3, 4)))
    half = face.scaled(0.5)
    assert (half.x, half.y, half.w, half.h, half.score, half.landmarks) == (5, 10, 15, 20, 0.9, ((0.5, 1), (1.5, 2)))
