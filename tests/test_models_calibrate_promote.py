"""`ferbatch models calibrate` (a PublicTest-calibrated copy of a registered model) and `models promote`."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import SAMPLE_CSV

from ferbatch.cli import cli


@pytest.fixture()
def registry(tmp_path, models_dir):
    from ferbatch.models import ModelRegistry

    shutil.copytree(models_dir, tmp_path / "models")
    return ModelRegistry(tmp_path / "models")


def invoke(*args: str):
    return CliRunner(env={"COLUMNS": "80"}).invoke(cli, list(args))


def test_calibrate_registers_a_biased_copy_and_leaves_the_source_and_current_alone(registry, sample_data):
    from ferbatch.scoring import KerasClassifier
    from ferbatch.training import biased_predictions

    source = registry.current_version()
    before = registry.card(source)
    result = invoke("models", "calibrate", source, "--data", str(SAMPLE_CSV), "--models-dir", str(registry.root))
    assert result.exit_code == 0, result.output
    copy = next(v for v in registry.versions() if v != source)
    assert f"registered {copy}" in result.output and registry.current_version() == source
    assert registry.card(source) == before

    card = registry.card(copy)
    record = card["calibration"]
    assert record["calibrated_from"] == source and record["chosen_on"] == "PublicTest"
    assert card["training_config"] == {**before["training_config"], "calibration": "macro_f1"}
    assert card["data"] == before["data"] and "real_photos" not in card
    bias = np.array(list(record["logit_bias"].values()))
    # The copy's verdicts are the source's with the recorded biases, and the card's figures are the copy's own.
    faces, labels = sample_data.subset("PublicTest")
    plain = KerasClassifier(registry.load_model(source), version=source).predict(faces)
    biased = KerasClassifier(registry.load_model(copy), version=copy).predict(faces)
    assert np.array_equal(biased.argmax(axis=1), biased_predictions(plain, bias))
    accuracy = float((biased.argmax(axis=1) == labels).mean())
    assert card["metrics"]["PublicTest"]["plain"]["accuracy"] == pytest.approx(accuracy)
    assert accuracy >= float((plain.argmax(axis=1) == labels).mean())  # the fit never lowers accuracy


def test_the_keep_neutral_objective_leaves_neutral_unbiased_and_is_recorded(registry):
    source = registry.current_version()
    result = invoke("models", "calibrate", source, "--data", str(SAMPLE_CSV), "--objective", "macro_f1_keep_neutral",
                    "--models-dir", str(registry.root))
    assert result.exit_code == 0, result.output
    card = registry.card(next(v for v in registry.versions() if v != source))
    assert card["calibration"]["objective"] == "macro_f1_keep_neutral"
    assert card["calibration"]["logit_bias"]["Neutral"] == 0
    assert card["training_config"]["calibration"] == "macro_f1_keep_neutral"


def test_a_calibrated_model_is_not_calibrated_twice(registry):
    source = registry.current_version()
    assert invoke("models", "calibrate", source, "--data", str(SAMPLE_CSV),
                  "--models-dir", str(registry.root)).exit_code == 0
    copy = next(v for v in registry.versions() if v != source)
    result = invoke("models", "calibrate", copy, "--data", str(SAMPLE_CSV), "--models-dir", str(registry.root))
    assert result.exit_code == 1 and "calibrated already" in result.output
    assert len(result.output.strip().splitlines()) == 1 and "Traceback" not in result.output


def test_promote_keeps_the_publictest_gate_unless_forced(registry):
    source = registry.current_version()
    assert invoke("models", "calibrate", source, "--data", str(SAMPLE_CSV),
                  "--models-dir", str(registry.root)).exit_code == 0
    copy = next(v for v in registry.versions() if v != source)
    # The gate compares a calibrated model by its PublicTest accuracy before the biases: make that worse.
    calibration = registry.card(copy)["calibration"]
    registry.record_on_card(copy, "calibration", {**calibration, "PublicTest_before": {"accuracy": 0.0}})

    refused = invoke("models", "promote", copy, "--models-dir", str(registry.root))
    assert refused.exit_code == 1 and "not promoted" in refused.output and registry.current_version() == source
    forced = invoke("models", "promote", copy, "--force", "--models-dir", str(registry.root))
    assert forced.exit_code == 0, forced.output
    assert registry.current_version() == copy and f"was {source}" in forced.output


def test_promote_names_an_unknown_version_in_one_line(registry):
    result = invoke("models", "promote", "no-such-model", "--models-dir", str(registry.root))
    assert result.exit_code != 0 and "no-such-model" in result.output and "Traceback" not in result.output
