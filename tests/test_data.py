from __future__ import annotations

import numpy as np
import pytest
from conftest import SAMPLE_CSV, SAMPLE_FERPLUS, pixels, write_csv

from ferbatch.classes import SPLITS
from ferbatch.errors import DataError
from ferbatch.training import (
    FERPLUS_COLUMNS,
    add_extra_folder,
    apply_ferplus_labels,
    ferplus_majority,
    load_fer2013,
    load_training_data,
)

GOOD = ("3", pixels(), "Training")


def test_sample_loads_as_uint8_with_every_class_in_every_split(sample_data):
    assert sample_data.images.shape == (350, 48, 48)
    assert sample_data.images.dtype == np.uint8
    counts = sample_data.class_counts()
    assert counts["Training"] == [30] * 7
    assert counts["PublicTest"] == counts["PrivateTest"] == [10] * 7
    assert sample_data.rejected == {}
    assert len(sample_data.sources[SAMPLE_CSV.name]) == 64


def test_pixel_values_are_parsed_in_row_major_order(tmp_path):
    values = " ".join(str(i % 256) for i in range(2304))
    data = load_fer2013(write_csv(tmp_path / "f.csv", [("0", values, "Training")]))
    assert data.images[0, 0, :5].tolist() == [0, 1, 2, 3, 4]
    assert data.images[0, 1, 0] == 48


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        (("7", pixels(), "Training"), "emotion_not_0_to_6"),
        (("-1", pixels(), "Training"), "emotion_not_0_to_6"),
        (("happy", pixels(), "Training"), "emotion_not_0_to_6"),
        (("", pixels(), "Training"), "emotion_not_0_to_6"),
        (("3", pixels(), "Validation"), "usage_not_a_split"),
        (("3", pixels(n=2303), "Training"), "pixels_not_2304_integers"),
        (("3", pixels(n=2305), "Training"), "pixels_not_2304_integers"),
        (("3", pixels()[:-3] + "1.5", "Training"), "pixels_not_2304_integers"),
        (("3", pixels()[:-3] + "abc", "Training"), "pixels_not_2304_integers"),
        (("3", "", "Training"), "pixels_not_2304_integers"),
        (("3", pixels(256), "Training"), "pixels_outside_0_255"),
        (("3", pixels()[:-3] + "-1", "Training"), "pixels_outside_0_255"),
    ],
)
def test_each_kind_of_invalid_row_is_dropped_and_counted(tmp_path, row, reason):
    data = load_fer2013(write_csv(tmp_path / "f.csv", [GOOD, row, GOOD]))
    assert len(data.labels) == 2
    assert data.rejected == {reason: 1}
    assert data.summary()["rejected"] == {reason: 1}


def test_gzip_and_plain_files_give_the_same_data(tmp_path):
    rows = [GOOD, ("5", pixels(7), "PublicTest")]
    plain = load_fer2013(write_csv(tmp_path / "f.csv", rows))
    packed = load_fer2013(write_csv(tmp_path / "f.csv.gz", rows))
    assert np.array_equal(plain.images, packed.images)
    assert np.array_equal(plain.labels, packed.labels)
    assert plain.split.tolist() == [0, 1]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"", "the file is empty"),
        (b"emotion,pixels,Usage\n", "header but no rows"),
        (b"label,image\n1,2\n", "missing column(s) emotion, pixels, Usage"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe binary", "not"),
    ],
)
def test_unusable_files_raise_one_clear_error_naming_the_file(tmp_path, content, message):
    path = tmp_path / "bad.csv"
    path.write_bytes(content)
    with pytest.raises(DataError) as error:
        load_fer2013(path)
    assert str(path) in str(error.value)
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_a_file_with_no_valid_rows_says_why(tmp_path):
    path = write_csv(tmp_path / "f.csv", [("9", pixels(), "Training"), ("3", "1 2", "Training")])
    with pytest.raises(DataError, match=r"no valid rows among 2 \(emotion_not_0_to_6=1, pixels_not_2304"):
        load_fer2013(path)


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_fer2013(tmp_path / "nope.csv")


def test_training_needs_public_test_rows(tmp_path):
    with pytest.raises(DataError, match="no valid PublicTest rows"):
        load_training_data(write_csv(tmp_path / "f.csv", [GOOD]))


def test_ferplus_majority_maps_to_fer_order_and_drops_unusable_rows():
    votes = np.zeros((5, len(FERPLUS_COLUMNS)), dtype=int)
    votes[0, FERPLUS_COLUMNS.index("happiness")] = 8  # -> Happy (3)
    votes[1, FERPLUS_COLUMNS.index("anger")] = 6  # -> Angry (0)
    votes[2, FERPLUS_COLUMNS.index("contempt")] = 6
    votes[3, FERPLUS_COLUMNS.index("unknown")] = 6
    votes[4, FERPLUS_COLUMNS.index("neutral")] = 6
    labels, reason = ferplus_majority(votes, np.array([True, True, True, True, False]))
    assert labels[:2].tolist() == [3, 0]
    assert reason.tolist() == [
        "", "", "ferplus_majority_contempt", "ferplus_majority_unknown", "ferplus_not_a_face",
    ]


def test_ferplus_labels_replace_fer_labels_row_by_row(sample_data):
    relabelled = apply_ferplus_labels(sample_data, SAMPLE_FERPLUS)
    assert relabelled.label_source == "ferplus"
    dropped = sum(relabelled.rejected.values())
    assert len(relabelled.labels) == len(sample_data.labels) - dropped
    assert (relabelled.labels != sample_data.labels[np.isin(sample_data.source_row, relabelled.source_row)]).any()
    assert SAMPLE_FERPLUS.name in relabelled.sources


def test_ferplus_file_of_another_length_is_refused(sample_data, tmp_path):
    short = tmp_path / "short.csv"
    short.write_text("\n".join(SAMPLE_FERPLUS.read_text().splitlines()[:10]) + "\n")
    with pytest.raises(DataError, match="same row order"):
        apply_ferplus_labels(sample_data, short)


def test_extra_folder_appends_faces_to_training(tmp_path, sample_data):
    import cv2

    for name in ("Happy", "sad"):
        (tmp_path / name).mkdir()
        cv2.imwrite(str(tmp_path / name / "a.png"), np.full((96, 80), 200, np.uint8))
    (tmp_path / "Happy" / "broken.jpg").write_bytes(b"not an image")
    data = add_extra_folder(sample_data, tmp_path)
    assert len(data.labels) == len(sample_data.labels) + 2
    assert data.labels[-2:].tolist() == [3, 4]
    assert data.split[-2:].tolist() == [SPLITS.index("Training")] * 2
    assert data.images[-1].shape == (48, 48)
    assert data.rejected == {"extra_folder_unreadable_image": 1}


def test_extra_folder_with_an_unknown_class_folder_is_refused(tmp_path, sample_data):
    (tmp_path / "Joyful").mkdir()
    with pytest.raises(DataError, match="Joyful"):
        add_extra_folder(sample_data, tmp_path)


@pytest.mark.parametrize("split", ["PublicTest", "PrivateTest"])
def test_a_splits_faces_line_up_with_their_fer_plus_majority(split):
    """benchmarks/experiments/split_disagreement.py compares models face by face against both label sets."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks" / "experiments"))
    try:
        from split_disagreement import split_faces
    finally:
        sys.path.pop(0)
    original = load_fer2013(SAMPLE_CSV)
    relabelled = apply_ferplus_labels(original, SAMPLE_FERPLUS)
    images, labels, crowd = split_faces(SAMPLE_CSV, SAMPLE_FERPLUS, split)
    rows = original.split == SPLITS.index(split)
    assert np.array_equal(images, original.images[rows]) and np.array_equal(labels, original.labels[rows])
    majority = dict(zip(relabelled.source_row.tolist(), relabelled.labels.tolist(), strict=True))
    expected = [majority.get(row, -1) for row in original.source_row[rows].tolist()]
    assert crowd.tolist() == expected and (crowd >= 0).any()
