"""The numpy batch augmentation of crop recipes: the width stretch."""

from __future__ import annotations

import json
from dataclasses import replace

import keras
import numpy as np
import pytest

from ferbatch.classes import NUM_CLASSES
from ferbatch.errors import FerbatchError
from ferbatch.training import (
    Augmentation,
    FaceBatches,
    TrainConfig,
    augmented_crops,
    augmented_views,
    preset,
    teacher_probabilities,
)

ONLY_STRETCH = Augmentation(flip=False, rotation=0, zoom=0, translation=0, erasing=0, stretch=0.25)


def cross(width: int = 8) -> np.ndarray:
    """One 48x48 face: a vertical and a horizontal white bar through the centre, `width` pixels thick."""
    face = np.zeros((1, 48, 48), np.uint8)
    face[0, :, 24 - width // 2 : 24 + width // 2] = 255
    face[0, 24 - width // 2 : 24 + width // 2, :] = 255
    return face


def bar_widths(crops: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The vertical bar's width (along a top row) and the horizontal bar's height (down a left column)."""
    return crops[:, 2, :].sum(axis=1) / 255, crops[:, :, 2].sum(axis=1) / 255


def test_a_stretch_widens_and_narrows_the_face_but_keeps_its_height():
    rng = np.random.default_rng(7)
    crops = np.concatenate([augmented_crops(cross(), 40, ONLY_STRETCH, rng) for _ in range(200)])
    widths, heights = bar_widths(crops)
    assert widths.min() < 8 / 1.2 and widths.max() > 8 * 1.2  # both ways, up to a quarter
    assert widths.min() >= 8 / 1.25 - 0.5 and widths.max() <= 8 * 1.25 + 0.5
    np.testing.assert_allclose(heights, 8, atol=0.01)


def test_without_a_stretch_the_face_keeps_its_width():
    rng = np.random.default_rng(7)
    plain = Augmentation(flip=False, rotation=0, zoom=0, translation=0, erasing=0)
    widths, heights = bar_widths(np.concatenate([augmented_crops(cross(), 40, plain, rng) for _ in range(20)]))
    np.testing.assert_allclose(widths, 8, atol=0.01)
    np.testing.assert_allclose(heights, 8, atol=0.01)


def test_the_stretch_recipe_is_checked_and_round_trips():
    config = preset("crop_cnn_stretch")
    assert config.augmentation.stretch == 0.25 and config.crop and config.teacher_views == "augmented"
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(FerbatchError, match="crop recipe"):
        TrainConfig(augmentation=Augmentation(stretch=0.2))
    with pytest.raises(FerbatchError, match="stretch"):
        TrainConfig(crop=40, augmentation=Augmentation(stretch=1.5))


def test_the_unstretched_view_is_the_same_crop_without_the_stretch():
    faces = np.random.default_rng(2).integers(0, 256, size=(1, 48, 48), dtype=np.uint8)
    moving = Augmentation(flip=True, rotation=0.03, zoom=0.1, translation=0, erasing=0)
    stretched, unstretched = augmented_views(faces, 40, replace(moving, stretch=0.25), np.random.default_rng(5))
    # One face's draws before the stretch are the same as a recipe without it: the same window, turn and mirror.
    np.testing.assert_array_equal(unstretched, augmented_crops(faces, 40, moving, np.random.default_rng(5)))
    assert np.abs(stretched - unstretched).mean() > 1


def test_both_views_are_erased_in_the_same_place_with_the_same_noise():
    faces = np.zeros((20, 48, 48), np.uint8)
    erasing = Augmentation(flip=False, rotation=0, zoom=0, translation=0, erasing=1.0, stretch=0.25)
    stretched, unstretched = augmented_views(faces, 40, erasing, np.random.default_rng(5))
    assert (unstretched > 0).any()
    np.testing.assert_array_equal(stretched, unstretched)  # a black face: only the patch shows


def test_an_unstretched_teacher_scores_the_crops_before_their_stretch(sample_data):
    faces, labels = sample_data.subset("Training")
    config = preset("crop_cnn_stretch_inv")
    assert config.teacher_views == "unstretched"
    teacher = keras.Sequential([keras.Input((48, 48, 1)), keras.layers.Flatten(),
                                keras.layers.Dense(NUM_CLASSES, kernel_initializer="random_normal", use_bias=False),
                                keras.layers.Softmax()])
    batches = {views: FaceBatches(faces, labels, 16, seed=1, crop=config.crop, augmentation=config.augmentation,
                                  teacher=teacher, teacher_weight=1.0, teacher_views=views)
               for views in ("augmented", "unstretched")}
    x, seen_stretched, _ = batches["augmented"][0]
    same_x, seen_unstretched, _ = batches["unstretched"][0]
    np.testing.assert_array_equal(x, same_x)  # the student's batch is the same either way
    _, unstretched = augmented_views(faces[batches["unstretched"]._order[:16]], config.crop, config.augmentation,
                                     np.random.default_rng([1, 0, 0]))
    np.testing.assert_allclose(seen_unstretched, teacher_probabilities(teacher, unstretched[..., None]), atol=1e-6)
    np.testing.assert_allclose(seen_stretched, teacher_probabilities(teacher, x), atol=1e-6)
    assert np.abs(seen_stretched - seen_unstretched).max() > 1e-3


def test_an_unstretched_teacher_needs_a_stretch():
    with pytest.raises(FerbatchError, match=r"needs augmentation\.stretch"):
        TrainConfig(crop=40, teacher="v", teacher_views="unstretched")
    with pytest.raises(FerbatchError, match="crop recipe"):
        TrainConfig(teacher="v", teacher_views="unstretched", augmentation=Augmentation(stretch=0.2))
