"""Checks against the full FER2013 file; they skip cleanly where ../shared is absent."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import FULL_FER2013

pytestmark = [
    pytest.mark.full_data,
    pytest.mark.skipif(not FULL_FER2013.is_file(), reason=f"needs {FULL_FER2013}"),
]


def test_full_file_loads_with_the_documented_split_and_class_counts():
    from ferbatch.training import load_fer2013

    data = load_fer2013(FULL_FER2013)
    assert data.images.shape == (35887, 48, 48)
    assert data.rejected == {}
    counts = data.class_counts()
    assert counts["Training"] == [3995, 436, 4097, 7215, 4830, 3171, 4965]
    assert counts["PublicTest"] == [467, 56, 496, 895, 653, 415, 607]
    assert counts["PrivateTest"] == [491, 55, 528, 879, 594, 416, 626]


def test_ferplus_labels_align_with_the_full_file():
    from ferbatch.training import apply_ferplus_labels, load_fer2013

    data = apply_ferplus_labels(load_fer2013(FULL_FER2013), FULL_FER2013.parent / "ferplus_fer2013new.csv")
    assert data.label_source == "ferplus"
    assert 35000 < len(data.labels) < 35887
    assert data.rejected["ferplus_not_a_face"] > 0


@pytest.mark.slow
def test_one_epoch_on_the_full_file_registers_a_promoted_model_with_private_test_metrics(tmp_path, run_ferbatch):
    from ferbatch.models import ModelRegistry

    result = run_ferbatch("train", "--data", FULL_FER2013, "--epochs", "1", "--models-dir", tmp_path)
    assert result.returncode == 0, result.stderr
    card = ModelRegistry(tmp_path).card()
    assert card["epochs_run"] == 1
    assert card["metrics"]["PrivateTest"]["plain"]["n"] == 3589
    assert card["data"]["rows_used"] == 35887


def test_an_independent_evaluation_of_the_shipped_model_agrees_with_its_card():
    """Only pandas, numpy and keras: load model.keras, feed raw 0..255 PrivateTest faces, take the argmax."""
    import json

    import keras
    import numpy as np
    import pandas as pd

    models = Path(__file__).resolve().parents[1] / "models"
    version = json.loads((models / "current.json").read_text())["version"]
    card = json.loads((models / version / "card.json").read_text())
    frame = pd.read_csv(FULL_FER2013)
    private = frame[frame.Usage == "PrivateTest"]
    faces = np.stack([np.array(p.split(), dtype=np.float32) for p in private.pixels]).reshape(-1, 48, 48, 1)
    model = keras.saving.load_model(models / version / "model.keras", compile=False)
    predicted = model.predict(faces, batch_size=256, verbose=0).argmax(axis=1)
    accuracy = float((predicted == private.emotion.to_numpy()).mean())
    assert abs(accuracy - card["metrics"]["PrivateTest"]["plain"]["accuracy"]) <= 0.005
    assert accuracy >= 0.68  # FER2013 is a floor for the shipped model, real photos decide


DEV_SETS = FULL_FER2013.parent


@pytest.mark.skipif(not (DEV_SETS / "dev_wild" / "labels.csv").is_file(), reason="needs the labelled dev sets")
@pytest.mark.xfail(strict=True, reason="the shipped ensemble reads photos in the wild +0.20 negative (sent3 0.710); "
                                       "no registered network meets every bar yet (docs/model.md)")
def test_the_shipped_model_meets_the_real_photo_bars_through_the_scoring_path():
    """Re-measured here as `ferbatch score` scores a folder, with the default settings: what a dashboard reads."""
    from ferbatch.config import ScoreSettings
    from ferbatch.models import ModelRegistry, negative_bias
    from ferbatch.scoring import Components, PipelineSettings
    from ferbatch.training import evaluate_real_photos

    settings = ScoreSettings()
    components = Components.for_run(settings, None, ModelRegistry.at().root)
    results = evaluate_real_photos([DEV_SETS / "dev_wild", DEV_SETS / "dev_posed"], components.detector(),
                                   components.classifier(), PipelineSettings.from_settings(settings))
    wild, posed = results["dev_wild"], results["dev_posed"]
    assert wild["sent3"] >= 0.80 and wild["macro_recall"] >= 0.66 and wild["recall"]["Neutral"] >= 0.55
    assert abs(negative_bias(wild)) <= 0.08
    assert posed["acc7"] >= 0.68 and posed["sent3"] >= 0.91 and posed["macro_recall"] >= 0.65
