from __future__ import annotations

import json

import numpy as np
import pytest

from ferbatch.errors import FerbatchError
from ferbatch.models import create_model
from ferbatch.training import PRESETS, FaceBatches, TrainConfig, balanced_class_weights, preset, train

SMOKE = preset("smoke").with_overrides(epochs=1)


def test_batches_drop_the_remainder_and_yield_float_faces_and_one_hot_labels():
    images = np.zeros((70, 48, 48), np.uint8)
    labels = np.arange(70, dtype=np.uint8) % 7
    batches = FaceBatches(images, labels, batch_size=32, seed=0)
    assert len(batches) == 2
    x, y, w = batches[1]
    assert x.shape == (32, 48, 48, 1) and x.dtype == np.float32
    assert y.shape == (32, 7) and (y.sum(axis=1) == 1).all()
    assert (w == 1).all()


def test_shuffle_order_depends_only_on_seed_and_epoch():
    labels = np.arange(64, dtype=np.uint8) % 7
    images = np.arange(64, dtype=np.uint8)[:, None, None].repeat(48, 1).repeat(48, 2)
    first = FaceBatches(images, labels, 16, seed=3)
    first.start_epoch(1)
    resumed = FaceBatches(images, labels, 16, seed=3, first_epoch=1)
    np.testing.assert_array_equal(first[0][0], resumed[0][0])
    assert not np.array_equal(FaceBatches(images, labels, 16, seed=3)[0][0], resumed[0][0])


def test_balanced_class_weights_favour_rare_classes():
    weights = balanced_class_weights(np.array([0] * 8 + [1] * 2 + [3] * 4, dtype=np.uint8))
    assert weights[1] > weights[3] > weights[0]
    assert weights[2] == 0.0


def test_fewer_faces_than_one_batch_is_a_clear_error():
    with pytest.raises(FerbatchError, match="fewer than one batch"):
        FaceBatches(np.zeros((3, 48, 48), np.uint8), np.zeros(3, np.uint8), 32, 0)


def test_bad_precision_is_refused():
    with pytest.raises(FerbatchError, match="precision must be one of"):
        TrainConfig(precision="float8")


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_round_trips_and_builds_a_model_that_fits_the_30_mb_budget(name):
    config = preset(name)
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    model = create_model(config.architecture, dtype_policy=config.precision)
    # The registered copy is float32: 4 bytes a weight, plus a few kB of .keras metadata.
    assert model.count_params() * 4 < 29_000_000


def _train(sample_data, workdir, config=SMOKE, resume=False):
    return train(config, *sample_data.subset("Training"), *sample_data.subset("PublicTest"), workdir, resume)


def test_training_checkpoints_every_epoch_and_returns_the_best_float32_model(sample_data, tmp_path):
    result = _train(sample_data, tmp_path, SMOKE.with_overrides(epochs=2, early_stopping_patience=5))
    assert result.epochs_run == 2
    assert len(result.history["val_accuracy"]) == len(result.history["epoch_s"]) == 2
    assert result.best_epoch == 1 + int(np.argmax(result.history["val_accuracy"]))
    assert result.best_public_accuracy == max(result.history["val_accuracy"])
    assert {p.name for p in tmp_path.iterdir()} >= {"checkpoint.keras", "state.json", "best.weights.npz"}
    assert json.loads((tmp_path / "state.json").read_text())["epochs_done"] == 2
    assert result.classifier.get_layer("logits").compute_dtype == "float32"
    assert result.wall_time_s > 0


def test_resume_continues_from_the_last_checkpoint(sample_data, tmp_path):
    first = _train(sample_data, tmp_path, SMOKE.with_overrides(epochs=1))
    assert first.epochs_run == 1 and not first.resumed
    second = _train(sample_data, tmp_path, SMOKE.with_overrides(epochs=2), resume=True)
    assert second.resumed
    assert second.epochs_run == 2
    assert second.history["val_accuracy"][0] == first.history["val_accuracy"][0]
    assert len(second.history["loss"]) == 2


def test_resume_with_another_recipe_is_refused(sample_data, tmp_path):
    _train(sample_data, tmp_path)
    with pytest.raises(FerbatchError, match="different training config"):
        _train(sample_data, tmp_path, SMOKE.with_overrides(learning_rate=0.1), resume=True)


def test_a_finished_run_resumes_with_another_calibration_without_training_again(sample_data, tmp_path):
    first = _train(sample_data, tmp_path)
    again = _train(sample_data, tmp_path, SMOKE.with_overrides(calibration="macro_f1"), resume=True)
    assert again.resumed and again.epochs_run == first.epochs_run == 1
    assert again.history == first.history
    np.testing.assert_array_equal(again.classifier.get_weights()[-1], first.classifier.get_weights()[-1])


def test_a_cosine_recipe_trains_for_a_single_epoch(sample_data, tmp_path):
    result = _train(sample_data, tmp_path, SMOKE.with_overrides(lr_schedule="cosine", epochs=1))
    assert result.epochs_run == 1 and np.isfinite(result.history["loss"]).all()
    assert result.history["lr"] == [0.0]  # the decay spans exactly the one epoch


def test_mixed_bfloat16_trains(sample_data, tmp_path):
    result = _train(sample_data, tmp_path, SMOKE.with_overrides(precision="mixed_bfloat16", class_weights=True))
    assert result.epochs_run == 1
    assert np.isfinite(result.history["loss"]).all()
