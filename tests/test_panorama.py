"""Issue 12, case 8: the 20-pixel minimum face holds on very elongated images (real YuNet, tiled)."""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest
from imagefactory import PHOTOS, encode
from PIL import Image

from ferbatch.scoring import (
    DetectorSettings,
    PipelineSettings,
    ScoreSettings,
    YuNetDetector,
    decode,
    default_detector_path,
    prepare,
    scan,
)

PIPELINE = PipelineSettings.from_settings(ScoreSettings())


@pytest.fixture(scope="module")
def yunet():
    return YuNetDetector(default_detector_path(), DetectorSettings.from_settings(ScoreSettings()))


@pytest.fixture(scope="module")
def face_patch(yunet) -> np.ndarray:
    """A 100x100 patch from a sample photo, centred on its face, scaled so the face box is 100 px tall."""
    rgb = decode((PHOTOS / "fr_obama.jpg").read_bytes()).pixels
    (face,) = yunet.detect(rgb)
    k = 100 / face.h
    small = cv2.resize(rgb, None, fx=k, fy=k, interpolation=cv2.INTER_AREA)
    top, left = round((face.y + face.h / 2) * k - 50), round((face.x + face.w / 2) * k - 50)
    return np.ascontiguousarray(small[top : top + 100, left : left + 100])


def _panorama(patch: np.ndarray, lefts: list[int], length: int = 10_000) -> np.ndarray:
    pano = np.full((patch.shape[0], length, 3), 128, np.uint8)
    for left in lefts:
        pano[:, left : left + patch.shape[1]] = patch
    return pano


def test_a_100_px_face_in_a_10000x100_panorama_is_found_where_it_is(yunet, face_patch):
    pano = _panorama(face_patch, [5000])
    whole_only = replace(DetectorSettings.from_settings(ScoreSettings()), tile_aspect=float("inf"))
    untiled = YuNetDetector(default_detector_path(), whole_only)
    assert untiled.detect(pano) == []  # shrunk whole to 960 px, the face is under 10 px: what happened before
    (face,) = yunet.detect(pano)
    assert face.x >= 5000 and face.x + face.w <= 5100 and face.h > 60
    assert all(5000 <= x <= 5100 and 0 <= y <= 100 for x, y in face.landmarks)


def test_faces_on_tile_edges_and_image_ends_are_each_found_exactly_once(yunet, face_patch):
    # 10000 x 100: tiles of 960 px every 860 px; 890 straddles the first tile's right edge.
    lefts = [0, 890, 1700, 4300, 9900]
    faces = yunet.detect(_panorama(face_patch, lefts))
    assert len(faces) == len(lefts)
    centres = sorted(f.x + f.w / 2 for f in faces)
    assert all(abs(c - (left + 50)) < 25 for c, left in zip(centres, lefts, strict=True))


def test_a_vertical_strip_is_tiled_along_its_long_side(yunet, face_patch):
    strip = np.full((10_000, 100, 3), 128, np.uint8)  # 100 wide, 10000 tall, two upright faces
    strip[3000:3100] = face_patch
    strip[7000:7100] = face_patch
    faces = yunet.detect(strip)
    assert len(faces) == 2
    assert 3000 <= faces[0].y + faces[0].h / 2 <= 3100 and 7000 <= faces[1].y + faces[1].h / 2 <= 7100


def test_a_20_px_face_in_a_panorama_meets_the_minimum_face(yunet, face_patch):
    # Scaled to a 40 px box (20 px would be at YuNet's own limit at any size): far under 10 px if shrunk whole.
    small = cv2.resize(face_patch, (40, 40), interpolation=cv2.INTER_AREA)
    (face,) = yunet.detect(_panorama(small, [6000], length=8000))
    assert face.w >= 20 and 6000 <= face.x + face.w / 2 <= 6040


def test_a_panorama_jpeg_is_not_reduced_away_and_its_face_is_scored(tmp_path, yunet, face_patch):
    (tmp_path / "pano.jpg").write_bytes(encode(Image.fromarray(_panorama(face_patch, [5000])), "JPEG", quality=95))
    prepared = prepare(next(scan([tmp_path])), yunet, PIPELINE)  # decode_long_side 960, as in a run
    assert prepared.error is None and (prepared.width, prepared.height) == (10_000, 100)
    assert len(prepared.faces) == 1 and 5000 <= prepared.faces[0].x <= 5100
    assert prepared.crops.shape == (1, 48, 48)


def test_ordinary_photos_are_not_tiled(yunet, monkeypatch):
    rgb = decode((PHOTOS / "fr_obama_and_biden.jpg").read_bytes()).pixels  # 2000 x 1428
    monkeypatch.setattr(YuNetDetector, "_tiled_rows", lambda self, rgb: pytest.fail("tiled a 1.4:1 photo"))
    assert len(yunet.detect(rgb)) == 3


# Large photos: searched in tiles when the whole-image pass cannot reach --min-face ------------------------------

@pytest.fixture(scope="module")
def crowd_faces(yunet) -> list[np.ndarray]:
    """Every face of the sample photos, with context around it, scaled so its box is 60 px tall."""
    patches = []
    for name in ("fr_obama.jpg", "fr_biden.jpg", "fr_two_people.jpg", "fr_obama_and_biden.jpg",
                 "skimage_astronaut.png"):
        rgb = decode((PHOTOS / name).read_bytes()).pixels
        for face in yunet.detect(rgb):
            side = max(face.w, face.h) * 1.6
            top, left = int(max(0, face.y + face.h / 2 - side / 2)), int(max(0, face.x + face.w / 2 - side / 2))
            k = 60 / face.h
            patches.append(cv2.resize(rgb[top : top + int(side), left : left + int(side)], None, fx=k, fy=k,
                                      interpolation=cv2.INTER_AREA))
    return patches


def test_60_px_faces_in_a_6000x4000_crowd_photo_are_found_at_the_default_detector_size(tmp_path, crowd_faces):
    crowd = np.full((4000, 6000, 3), 128, np.uint8)
    centres = []
    for i, (top, left) in enumerate((t, s) for t in range(50, 3850, 310) for s in range(50, 5850, 330)):
        patch = crowd_faces[i % len(crowd_faces)]
        crowd[top : top + patch.shape[0], left : left + patch.shape[1]] = patch
        centres.append((left + patch.shape[1] / 2, top + patch.shape[0] / 2))
    (tmp_path / "crowd.jpg").write_bytes(encode(Image.fromarray(crowd), "JPEG", quality=90))
    (file,) = scan([tmp_path])
    settings = DetectorSettings.from_settings(ScoreSettings())
    untiled = YuNetDetector(default_detector_path(), replace(settings, tile_above_pixels=10**12))
    assert len(prepare(file, untiled, PIPELINE).faces) < len(centres) // 10  # shrunk whole, they are 10 px
    prepared = prepare(file, YuNetDetector(default_detector_path(), settings), PIPELINE)
    assert prepared.error is None and len(prepared.faces) >= 0.95 * len(centres) > 200
    found = [(f.x + f.w / 2, f.y + f.h / 2) for f in prepared.faces]
    assert all(min(abs(x - cx) + abs(y - cy) for cx, cy in centres) < 30 for x, y in found)  # each where pasted
    assert all(45 <= f.h <= 80 for f in prepared.faces)
    assert prepared.crops.shape == (len(prepared.faces), 48, 48)


@pytest.mark.parametrize(
    ("size", "min_face", "scale"),
    [((1920, 1080), 20, None), ((4032, 3024), 20, None), ((4000, 4000), 20, None),  # up to 16 MP: one pass
     ((6000, 4000), 20, 1.0), ((6000, 4000), 60, 1 / 3), ((6000, 4000), 125, None), ((8000, 6000), 40, 0.5)],
)
def test_only_photos_whose_shrink_would_lose_min_face_are_tiled(size, min_face, scale):
    settings = DetectorSettings.from_settings(ScoreSettings(min_face=min_face))
    assert YuNetDetector(default_detector_path(), settings).search_scale(*size) == scale


def test_a_12_mp_photo_keeps_the_one_whole_image_pass(yunet, monkeypatch):
    calls = []
    real_rows = YuNetDetector._rows
    monkeypatch.setattr(YuNetDetector, "_rows", lambda self, rgb: calls.append(rgb.shape) or real_rows(self, rgb))
    yunet.detect(np.full((3024, 4032, 3), 128, np.uint8))
    assert calls == [(3024, 4032, 3)]
