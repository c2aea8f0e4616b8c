"""FER+ vote distributions and a teacher's probabilities as training targets."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import SAMPLE_CSV, SAMPLE_FERPLUS

from ferbatch.classes import CLASS_NAMES, NUM_CLASSES
from ferbatch.errors import DataError, FerbatchError
from ferbatch.training import (
    FERPLUS_COLUMNS,
    FaceBatches,
    TrainConfig,
    ferplus_vote_targets,
    load_training_data,
    preset,
    teacher_probabilities,
    with_teacher,
)


def votes_row(**counts: int) -> np.ndarray:
    return np.array([[counts.get(name, 0) for name in FERPLUS_COLUMNS]])


def test_votes_become_a_distribution_over_the_seven_classes_without_contempt_unknown_or_not_a_face():
    votes = votes_row(neutral=4, happiness=2, contempt=2, unknown=1, NF=1)
    target = ferplus_vote_targets(votes, np.array([0]))[0]
    assert target[CLASS_NAMES.index("Neutral")] == pytest.approx(4 / 6)
    assert target[CLASS_NAMES.index("Happy")] == pytest.approx(2 / 6)
    assert target.sum() == pytest.approx(1.0)


def test_a_face_with_no_emotion_vote_keeps_its_fer2013_label():
    target = ferplus_vote_targets(votes_row(contempt=5, unknown=5), np.array([CLASS_NAMES.index("Sad")]))[0]
    assert target.tolist() == np.eye(NUM_CLASSES)[CLASS_NAMES.index("Sad")].tolist()


def test_vote_targets_keep_fer2013_labels_and_every_test_face():
    plain = load_training_data(SAMPLE_CSV)
    voted = load_training_data(SAMPLE_CSV, SAMPLE_FERPLUS, targets="ferplus_votes")
    frame = pd.read_csv(SAMPLE_FERPLUS, keep_default_na=False)
    not_a_face = (frame["Image name"].str.strip() == "") & (frame["Usage"] == "Training")
    assert voted.label_source == "ferplus_votes"
    for split in ("PublicTest", "PrivateTest"):
        assert np.array_equal(voted.subset(split)[1], plain.subset(split)[1])
    assert len(voted.subset("Training")[1]) == len(plain.subset("Training")[1]) - int(not_a_face.sum())
    targets = voted.training_targets()
    assert targets.shape == (len(voted.subset("Training")[1]), NUM_CLASSES)
    assert np.allclose(targets.sum(axis=1), 1.0)
    # The first training row's votes, as the file has them.
    first = frame.iloc[int(voted.source_row[0])]
    expected = ferplus_vote_targets(np.array([[int(first[c] or 0) for c in FERPLUS_COLUMNS]]), voted.labels[:1])
    assert np.allclose(targets[0], expected[0])


def test_vote_targets_need_the_ferplus_file():
    with pytest.raises(DataError, match="FER\\+ vote"):
        load_training_data(SAMPLE_CSV, targets="ferplus_votes")


def test_a_teacher_is_mixed_into_the_training_targets_only(sample_data):
    n_train = len(sample_data.subset("Training")[1])
    teacher = np.full((n_train, NUM_CLASSES), 1 / NUM_CLASSES, dtype=np.float32)
    mixed = with_teacher(sample_data, teacher, 0.25)
    one_hot = np.eye(NUM_CLASSES)[sample_data.subset("Training")[1]]
    assert np.allclose(mixed.training_targets(), 0.75 * one_hot + 0.25 / NUM_CLASSES)
    with pytest.raises(DataError, match="teacher scored"):
        with_teacher(sample_data, teacher[:-1], 0.5)


def test_batches_carry_the_soft_targets_of_their_rows(sample_data):
    faces, labels = sample_data.subset("Training")
    targets = np.random.default_rng(0).dirichlet(np.ones(NUM_CLASSES), size=len(labels)).astype(np.float32)
    batches = FaceBatches(faces, labels, 16, seed=1, targets=targets)
    _, y, _ = batches[0]
    rows = batches._order[:16]
    assert np.array_equal(y, targets[rows])
    with pytest.raises(FerbatchError, match="targets must be"):
        FaceBatches(faces, labels, 16, seed=1, targets=targets[:, :3])


def _pixel_teacher(top: int, left: int):
    """A served-model stand-in: 48x48 input; its verdict is one pixel's brightness, Happy if bright."""
    import keras

    inputs = keras.Input((48, 48, 1))
    pixel = keras.layers.Cropping2D(((top, 47 - top), (left, 47 - left)))(inputs)
    bright = keras.layers.Flatten()(pixel) / 255.0
    happy = CLASS_NAMES.index("Happy")
    logits = keras.layers.Concatenate()([bright * 0 if c != happy else bright * 20 - 10 for c in range(NUM_CLASSES)])
    return keras.Model(inputs, keras.layers.Softmax()(logits))


def test_a_batch_teacher_scores_the_very_crops_the_student_sees(sample_data):
    faces, labels = sample_data.subset("Training")
    teacher = _pixel_teacher(4 + 3, 4 + 5)  # crop pixel (3, 5) once padded back to 48
    crops = np.zeros((2, 40, 40, 1), np.float32)
    crops[0, 3, 5] = 255.0
    happy = CLASS_NAMES.index("Happy")
    probabilities = teacher_probabilities(teacher, crops)
    assert probabilities[0].argmax() == happy and probabilities[1, happy] < 0.01

    config = preset("crop_cnn_consistent")
    batches = FaceBatches(faces, labels, 16, seed=1, crop=config.crop, augmentation=config.augmentation,
                          teacher=teacher, teacher_weight=0.75)
    x, y, _ = batches[0]
    one_hot = np.eye(NUM_CLASSES)[labels[batches._order[:16]]]
    assert np.allclose(y, 0.25 * one_hot + 0.75 * teacher_probabilities(teacher, x), atol=1e-6)
    # The teacher's share follows each augmented crop: bright and dark pixels give different targets.
    assert np.ptp(y[:, happy] - 0.25 * one_hot[:, happy]) > 0.1


def test_a_consistent_teacher_replaces_the_cached_targets(tmp_path, sample_data):
    from ferbatch.models import ModelRegistry
    from ferbatch.training import batch_teacher, teacher_targets

    config = preset("crop_cnn_consistent")
    assert config.teacher_views == "augmented"
    registry = ModelRegistry(tmp_path / "models")
    assert teacher_targets(registry, config, sample_data, tmp_path) is sample_data
    assert batch_teacher(registry, config.with_overrides(teacher_views="centre")) is None
    with pytest.raises(FerbatchError, match="teacher_views"):
        TrainConfig(teacher_views="random")
    with pytest.raises(FerbatchError, match="crop recipe"):
        TrainConfig(teacher="v", teacher_views="augmented")


def test_recipe_settings_for_targets_are_checked_and_round_trip():
    config = preset("crop_cnn_distil")
    assert config.targets == "ferplus_votes" and config.teacher and 0 < config.teacher_weight < 1
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(FerbatchError, match="targets"):
        TrainConfig(targets="majority")
    with pytest.raises(FerbatchError, match="teacher_weight"):
        TrainConfig(teacher_weight=1.5)


def test_a_run_trains_against_soft_targets(tmp_path, sample_data):
    """Targets that all say 'Happy' teach a network to say Happy, whatever the labels say."""
    from ferbatch.training import train

    faces, labels = sample_data.subset("Training")
    happy = np.tile(np.eye(NUM_CLASSES, dtype=np.float32)[CLASS_NAMES.index("Happy")], (len(labels), 1))
    config = preset("smoke").with_overrides(epochs=3, batch_size=16, learning_rate=1e-2)
    result = train(config, faces, labels, *sample_data.subset("PublicTest"), tmp_path, train_targets=happy)
    predicted = result.classifier.predict(faces[:32, :, :, None].astype("float32"), verbose=0).argmax(axis=1)
    assert (predicted == CLASS_NAMES.index("Happy")).mean() > 0.9


def test_a_run_learns_from_a_teacher_that_scores_its_batches(tmp_path, sample_data):
    """A teacher that says 'Happy' to every crop, with all of the target: the network learns to say Happy."""
    import keras

    from ferbatch.training import train

    faces, labels = sample_data.subset("Training")
    inputs = keras.Input((48, 48, 1))
    logits = keras.layers.Dense(NUM_CLASSES, kernel_initializer="zeros",
                                bias_initializer=keras.initializers.Constant(
                                    np.eye(NUM_CLASSES)[CLASS_NAMES.index("Happy")] * 10))(
        keras.layers.GlobalAveragePooling2D()(inputs))
    happy_teacher = keras.Model(inputs, keras.layers.Softmax()(logits))
    config = preset("smoke").with_overrides(epochs=3, batch_size=16, learning_rate=1e-2, crop=40,
                                            teacher="happy", teacher_views="augmented", teacher_weight=1.0)
    result = train(config, faces, labels, *sample_data.subset("PublicTest"), tmp_path, teacher=happy_teacher)
    predicted = result.classifier.predict(faces[:32, :, :, None].astype("float32"), verbose=0).argmax(axis=1)
    assert (predicted == CLASS_NAMES.index("Happy")).mean() > 0.9


def test_an_unfinished_distillation_run_carries_its_teacher_probabilities(tmp_path):
    from ferbatch.models import ModelRegistry

    work = tmp_path / "work"
    work.mkdir()
    state = {"run_id": "abc", "epochs_done": 3, "history": {}, "best_epoch": 2, "best_val_accuracy": 0.5,
             "wall_time_s": 1.0, "config": TrainConfig().to_dict()}
    (work / "state.json").write_text(json.dumps(state))
    (work / "checkpoint.keras").write_bytes(b"weights")
    teacher = np.random.default_rng(0).random((5, NUM_CLASSES)).astype(np.float32)
    np.save(work / "teacher-v1-0123.npy", teacher)
    registry = ModelRegistry(tmp_path / "models")
    version = registry.register_unfinished(work, {"architecture": "tiny", "training_config": state["config"]})
    assert "teacher-v1-0123.npy" in registry.unfinished_card(version)["files"]
    restored = tmp_path / "elsewhere"
    registry.restore_unfinished(version, restored)
    assert np.array_equal(np.load(restored / "teacher-v1-0123.npy"), teacher)
