"""The numpy batch augmentation of crop recipes: the width stretch."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ferbatch.errors import FerbatchError
from ferbatch.training import Augmentation, TrainConfig, augmented_crops, preset

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


def test_a_stretch_leaves_the_other_random_draws_of_each_face_alone():
    # The stretch is drawn after the others, so only the width changes: the crop windows stay where they were.
    faces = np.random.default_rng(1).integers(0, 256, size=(6, 48, 48), dtype=np.uint8)
    unstretched = Augmentation(flip=True, rotation=0, zoom=0, translation=0, erasing=0)
    plain = augmented_crops(faces[:1], 40, unstretched, np.random.default_rng(3))
    stretched = augmented_crops(faces[:1], 40, Augmentation(flip=True, rotation=0, zoom=0, translation=0,
                                                            erasing=0, stretch=1e-9), np.random.default_rng(3))
    np.testing.assert_allclose(stretched, plain, atol=0.01)


def test_the_stretch_recipe_is_checked_and_round_trips():
    config = preset("crop_cnn_stretch")
    assert config.augmentation.stretch == 0.25 and config.crop and config.teacher_views == "augmented"
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(FerbatchError, match="crop recipe"):
        TrainConfig(augmentation=Augmentation(stretch=0.2))
    with pytest.raises(FerbatchError, match="stretch"):
        TrainConfig(crop=40, augmentation=Augmentation(stretch=1.5))
