"""A labelled folder: class folders of crops or photos, "_" folders ignored, a fixed holdout by content hash."""

from __future__ import annotations

import hashlib
import shutil

import cv2
import numpy as np
import pytest
from imagefactory import PHOTOS

from ferbatch.errors import DataError
from ferbatch.training import folder_digest, load_labelled_folder
from ferbatch.training._labelled import is_holdout


def _crop(path, value: int) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    face = np.random.default_rng(value).integers(0, 256, (96, 96), dtype=np.uint8)
    cv2.imwrite(str(path), face)
    return path.read_bytes()


def test_every_fifth_face_by_content_hash_is_held_out_and_underscore_folders_are_ignored(tmp_path):
    contents = {f"Happy/{i}.png": _crop(tmp_path / "Happy" / f"{i}.png", i) for i in range(20)}
    contents |= {f"Sad/{i}.png": _crop(tmp_path / "Sad" / f"{i}.png", 100 + i) for i in range(20)}
    _crop(tmp_path / "_unsorted" / "x.png", 999)
    _crop(tmp_path / "_skip" / "y.png", 998)
    (tmp_path / "faces.csv").write_text("crop,image_id\n")
    faces = load_labelled_folder(tmp_path)
    expected = {name for name, data in contents.items() if is_holdout(hashlib.sha256(data).hexdigest())}
    assert set(np.array(faces.files)[faces.holdout]) == expected
    assert 0 < len(expected) < 40 and len(faces.labels) == 40
    assert faces.training()[0].shape[1:] == (48, 48)

    before = folder_digest(tmp_path)
    _crop(tmp_path / "_unsorted" / "z.png", 997)  # a new export changes nothing labelled
    (tmp_path / "faces.csv").write_text("crop,image_id\nz.png,abc\n")
    assert folder_digest(tmp_path) == before
    shutil.move(tmp_path / "_unsorted" / "z.png", tmp_path / "Sad" / "z.png")  # a person labels one
    assert folder_digest(tmp_path) != before


def test_a_whole_photo_in_a_class_folder_gives_its_largest_detected_face(tmp_path):
    (tmp_path / "Happy").mkdir()
    shutil.copy(PHOTOS / "fr_obama_and_biden.jpg", tmp_path / "Happy" / "photo.jpg")
    (tmp_path / "Sad").mkdir()
    cv2.imwrite(str(tmp_path / "Sad" / "landscape.png"), np.full((300, 400), 90, np.uint8))  # no face
    faces = load_labelled_folder(tmp_path)
    assert len(faces.labels) == 1 and faces.rejected == {"extra_folder_no_face_found": 1}
    whole = cv2.resize(cv2.imread(str(tmp_path / "Happy" / "photo.jpg"), cv2.IMREAD_GRAYSCALE), (48, 48),
                       interpolation=cv2.INTER_AREA)
    # a face crop, not the photo shrunk whole
    assert np.abs(faces.images[0].astype(int) - whole).mean() > 20


def test_an_unknown_class_folder_is_refused_with_its_name(tmp_path):
    (tmp_path / "Joyful").mkdir()
    with pytest.raises(DataError, match="Joyful"):
        load_labelled_folder(tmp_path)


def test_a_labelling_folder_with_nothing_sorted_yet_is_no_training_data_yet(tmp_path):
    from ferbatch.training import with_labelled_faces

    _crop(tmp_path / "_unsorted" / "a.png", 1)
    (tmp_path / "Happy").mkdir()
    assert with_labelled_faces(tmp_path) is None
    shutil.move(tmp_path / "_unsorted" / "a.png", tmp_path / "Happy" / "a.png")
    assert with_labelled_faces(tmp_path) == tmp_path
    assert with_labelled_faces(tmp_path / "missing") == tmp_path / "missing"  # still an error later, by name
