"""The retrain pipeline's plain steps, without Prefect."""

from __future__ import annotations

import json

import numpy as np
from conftest import SAMPLE_CSV

from ferbatch import training
from ferbatch.classes import CLASS_NAMES
from ferbatch.models import ModelRegistry
from ferbatch.training import classification_metrics, preset


def test_calibrate_does_nothing_for_a_recipe_without_calibration(models_dir, sample_data):
    model = ModelRegistry(models_dir).load_model()
    assert training.calibrate(preset("smoke"), model, sample_data) == (model, None)


def test_calibrate_folds_publictest_biases_into_the_model_and_reports_them(models_dir, sample_data):
    from ferbatch.scoring import KerasClassifier

    model = ModelRegistry(models_dir).load_model()
    faces, labels = sample_data.subset("PublicTest")
    before = KerasClassifier(model, "before").predict(faces)
    calibrated, record = training.calibrate(preset("smoke").with_overrides(calibration="macro_f1"), model,
                                            sample_data)
    bias = np.array(list(record["logit_bias"].values()))
    after = KerasClassifier(calibrated, "after").predict(faces)
    # The step is pure: the model it was given is unchanged, so a retry cannot add the biases twice.
    np.testing.assert_array_equal(KerasClassifier(model, "again").predict(faces), before)
    expected = np.exp(np.log(before) + bias)
    np.testing.assert_allclose(after, expected / expected.sum(axis=1, keepdims=True), rtol=1e-3, atol=1e-5)
    assert record["chosen_on"] == "PublicTest"
    assert record["PublicTest_after"]["accuracy"] >= record["PublicTest_before"]["accuracy"]
    measured = classification_metrics(labels, after.argmax(axis=1))
    assert record["PublicTest_after"]["macro_f1"] == round(measured["macro_f1"], 4)


def test_a_card_written_before_a_setting_existed_does_not_trigger_a_retrain(models_dir):
    registry = ModelRegistry(models_dir)
    card_file = registry.root / registry.current_version() / "card.json"
    original = card_file.read_text()
    card = json.loads(original)
    card["data"]["sources"] = training.source_digests(SAMPLE_CSV)
    del card["training_config"]["calibration"]  # as on cards made before calibration existed
    try:
        card_file.write_text(json.dumps(card))
        config = preset("smoke").with_overrides(epochs=1)
        assert not training.retrain_decision(registry, config, SAMPLE_CSV).retrain
        assert training.retrain_decision(registry, config.with_overrides(calibration="macro_f1"), SAMPLE_CSV).retrain
    finally:
        card_file.write_text(original)


def test_the_metrics_table_names_the_calibration_biases_that_were_applied():
    metrics = {"accuracy": 0.6, "macro_f1": 0.5, "per_class": {c: {"recall": 0.5} for c in CLASS_NAMES}}
    card = {"version": "v1", "architecture": "fer_cnn", "parameters": 10, "epochs_run": 3, "best_epoch": 2,
            "wall_time_s": 1.0, "label_source": "fer2013", "metrics": {"PrivateTest": {"plain": metrics}},
            "calibration": {"objective": "macro_f1", "logit_bias": {"Angry": 0.0, "Disgust": 0.8, "Happy": -0.5}}}
    text = training.metrics_markdown(card)
    assert "calibration (macro_f1, on PublicTest): Disgust +0.80, Happy -0.50" in text
    assert "Angry +0.00" not in text
