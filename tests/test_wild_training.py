"""Training beside labelled faces in the wild: their weight in the epoch, their own share of the teacher, and
their held-out fifth measured every epoch."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from ferbatch.classes import CLASS_NAMES, NUM_CLASSES, SPLITS
from ferbatch.errors import FerbatchError
from ferbatch.training import FaceBatches, TrainConfig, add_extra_folder, preset, with_teacher

HAPPY, NEUTRAL, SAD = (CLASS_NAMES.index(name) for name in ("Happy", "Neutral", "Sad"))


@pytest.fixture()
def wild_data(tmp_path, sample_data):
    """The sample FER2013 rows plus 40 distinct small Neutral and Happy crops in class folders."""
    rng = np.random.default_rng(3)
    for name in ("Neutral", "Happy"):
        (tmp_path / name).mkdir()
        for i in range(20):
            cv2.imwrite(str(tmp_path / name / f"{i}.png"), rng.integers(0, 256, (64, 64), dtype=np.uint8))
    return add_extra_folder(sample_data, tmp_path)


def test_the_extra_folder_keeps_its_held_out_fifth_for_measuring(wild_data, sample_data):
    faces, labels = wild_data.extra_holdout
    added = len(wild_data.labels) - len(sample_data.labels)
    assert added + len(labels) == 40 and 0 < len(labels) < 20
    assert faces.shape[1:] == (48, 48) and set(labels.tolist()) <= {HAPPY, NEUTRAL}
    extra = wild_data.training_extra()
    assert extra.sum() == added and not extra[: (sample_data.split == 0).sum()].any()


def test_extra_faces_get_their_own_share_of_the_teacher(wild_data):
    n_train = int((wild_data.split == SPLITS.index("Training")).sum())
    teacher = np.tile(np.eye(NUM_CLASSES, dtype=np.float32)[SAD], (n_train, 1))
    targets = with_teacher(wild_data, teacher, 0.75, extra_weight=0.25).training_targets()
    extra = wild_data.training_extra()
    assert np.allclose(targets[extra, SAD], 0.25)
    assert np.allclose(targets[~extra, SAD] - 0.25 * (wild_data.subset("Training")[1][~extra] == SAD), 0.75)
    assert np.allclose(with_teacher(wild_data, teacher, 0.75).training_targets()[extra, SAD], 0.75)


def test_a_batch_teacher_takes_each_face_share(sample_data):
    faces, labels = sample_data.subset("Training")
    import keras

    inputs = keras.Input((48, 48, 1))
    logits = keras.layers.Dense(NUM_CLASSES, kernel_initializer="zeros", bias_initializer=keras.initializers.Constant(
        np.eye(NUM_CLASSES)[SAD] * 30))(keras.layers.GlobalAveragePooling2D()(inputs))
    sad_teacher = keras.Model(inputs, keras.layers.Softmax()(logits))
    shares = np.where(np.arange(len(labels)) % 2 == 0, 1.0, 0.0).astype(np.float32)
    batches = FaceBatches(faces, labels, 16, seed=1, teacher=sad_teacher, teacher_weight=shares)
    _, y, _ = batches[0]
    rows = batches._order[:16]
    one_hot = np.eye(NUM_CLASSES)[labels[rows]]
    expected = np.where(shares[rows, None] == 1.0, np.eye(NUM_CLASSES)[SAD], one_hot)
    assert np.allclose(y, expected, atol=1e-5)


def test_a_run_repeats_extra_faces_and_logs_their_holdout(tmp_path, wild_data, monkeypatch):
    from ferbatch.training import _pipeline

    seen = {}
    real_train = _pipeline.train

    def spy(config, images, labels, *args, **kwargs):
        seen.update(n=len(labels), monitor=kwargs["monitor"])
        return real_train(config, images, labels, *args, **kwargs)

    monkeypatch.setattr(_pipeline, "train", spy)
    config = preset("smoke").with_overrides(epochs=2, batch_size=16, extra_repeat=3)
    result = _pipeline.fit(config, wild_data, tmp_path, resume=False)
    n_train, n_extra = int((wild_data.split == 0).sum()), int(wild_data.training_extra().sum())
    assert seen["n"] == n_train + 2 * n_extra
    assert seen["monitor"] is wild_data.extra_holdout
    for key in ("holdout_accuracy", "holdout_neutral_recall", "holdout_negative_bias"):
        assert len(result.history[key]) == 2
    assert all(0 <= a <= 1 for a in result.history["holdout_accuracy"])
    # No true negatives among Neutral/Happy faces: the bias is the share read negative, never below 0.
    assert all(0 <= b <= 1 for b in result.history["holdout_negative_bias"])
    history = result.history
    scores = [(p + h) / 2 for p, h in zip(history["val_accuracy"], history["holdout_accuracy"], strict=True)]
    assert result.best_epoch == 1 + int(np.argmax(scores))


def test_epochs_are_chosen_on_publictest_and_the_held_out_wild_faces_alike():
    from ferbatch.training._loop import best_selection_score, selection_score

    assert selection_score({"val_accuracy": 0.68}) == 0.68
    # A point of PublicTest is worth a point of the held-out wild fifth.
    assert selection_score({"val_accuracy": 0.67, "holdout_accuracy": 0.80}) > selection_score(
        {"val_accuracy": 0.68, "holdout_accuracy": 0.78})
    # A run saved before the score was stored: its kept epoch is scored again from the history.
    history = {"val_accuracy": [0.6804, 0.6762], "holdout_accuracy": [0.746, 0.77]}
    assert best_selection_score({"best_epoch": 1, "history": history}) == pytest.approx((0.6804 + 0.746) / 2)
    assert best_selection_score({"best_epoch": 2, "history": history}) == pytest.approx((0.6762 + 0.77) / 2)
    assert best_selection_score({"best_epoch": 0, "history": {}}) == float("-inf")


def test_the_wild_recipe_is_checked_and_round_trips():
    config = preset("crop_cnn_wild")
    assert config.extra_repeat > 1 and config.extra_teacher_weight < config.teacher_weight
    assert TrainConfig.from_dict(config.to_dict()) == config
    with pytest.raises(FerbatchError, match="extra_repeat"):
        TrainConfig(extra_repeat=0)
    with pytest.raises(FerbatchError, match="extra_teacher_weight"):
        TrainConfig(extra_teacher_weight=2.0)
