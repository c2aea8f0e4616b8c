"""Ensemble presets: members trained in resumable chunks, served as one standard-layers model.keras."""

from __future__ import annotations

import subprocess
import sys

import keras
import numpy as np
import pytest
from conftest import SAMPLE_CSV

from ferbatch.models import ModelRegistry, create_model, crop_offsets, serving_model
from ferbatch.training import ENSEMBLES, PRESETS, EnsembleRecipe, preset


def _probabilities(network: keras.Model, faces: np.ndarray) -> np.ndarray:
    return np.asarray(network.predict_on_batch(faces[..., None].astype("float32")))


def test_the_serving_model_averages_every_member_over_fixed_crops_and_mirrors(random_faces):
    faces = random_faces[:6]
    members = [create_model("tiny", input_side=40, pixel_mean=m, pixel_variance=0.05) for m in (0.3, 0.6)]
    served = serving_model(members, crops=5, flip=True)
    expected = []
    for network in members:
        for top, left in crop_offsets(40, 5):
            crop = faces[:, top : top + 40, left : left + 40]
            expected += [_probabilities(network, crop), _probabilities(network, crop[:, :, ::-1])]
    np.testing.assert_allclose(np.asarray(served.predict_on_batch(faces[..., None].astype("float32"))),
                               np.mean(expected, axis=0), atol=1e-6)
    assert served.input_shape == (None, 48, 48, 1) and served.output_shape == (None, 7)


def test_crop_offsets_are_the_centre_then_the_corners():
    assert crop_offsets(40, 1) == [(4, 4)]
    assert crop_offsets(40, 5) == [(4, 4), (0, 0), (0, 8), (8, 0), (8, 8)]
    with pytest.raises(ValueError, match="crops must be 1 or 5"):
        crop_offsets(40, 10)


@pytest.fixture
def tiny_ensemble(monkeypatch):
    monkeypatch.setitem(PRESETS, "tiny_crop", preset("smoke").with_overrides(crop=40, early_stopping_patience=5))
    monkeypatch.setitem(ENSEMBLES, "tiny_x2", EnsembleRecipe(member="tiny_crop", seeds=(11, 22), crops=5, flip=True))
    return "tiny_x2"


@pytest.mark.usefixtures("prefect_harness")
def test_an_ensemble_preset_trains_its_members_in_chunks_then_registers_one_model(tiny_ensemble, tmp_path):
    from ferbatch_flows.retrain import retrain

    common = {"data": str(SAMPLE_CSV), "models_dir": str(tmp_path), "preset_name": tiny_ensemble}
    first = retrain(**common, stop_after_minutes=1e-6)  # the first member stops after one of its two epochs
    registry = ModelRegistry(tmp_path)
    assert first["unfinished"] and registry.versions() == [] and len(registry.unfinished_versions()) == 1

    done = retrain(**common)  # the same command: resumes member 1, trains member 2, assembles
    assert not done["unfinished"] and done["promoted"]
    assert registry.unfinished_versions() == []
    card = registry.card(done["version"])
    assert card["role"] == "ensemble" and card["views"] == {"crops": 5, "flip": True, "count": 20}
    assert [m["seed"] for m in card["members"]] == [11, 22]
    assert {"training_curves.png", "confusion_PrivateTest_plain.png", "class_distribution.png"} <= set(card["files"])
    versions = [folder for folder in registry.root.iterdir() if folder.is_dir() and not folder.name.startswith(".")]
    # faces of the training data stay out of the registered versions (the run's own .work/report/ keeps them)
    assert versions and not [path for folder in versions for path in folder.rglob("sample_faces.png")]
    for member in card["members"]:
        assert registry.card(member["version"])["role"] == "member"
        assert member["epochs_run"] == 2 and len(member["public_test_curve"]) == 2
        assert set(member["accuracy"]) == {"PublicTest", "PrivateTest"} and "Disgust" in member["recall"]["PrivateTest"]
    assert [c["last_epoch"] for c in card["members"][0]["chunks"]] == [1, 2]
    assert card["wall_time_s"] == pytest.approx(sum(m["wall_time_s"] for m in card["members"]), abs=0.05)

    # A re-run reuses the registered members instead of training them again.
    again = retrain(**common)
    assert registry.card(again["version"])["members"] == [
        {**m} for m in card["members"]
    ]

    # Any reader loads it with Keras alone: nothing of ferbatch imported.
    code = ("import sys, keras, numpy as np; m = keras.saving.load_model(sys.argv[1]); "
            "p = m.predict(np.zeros((2, 48, 48, 1), 'float32'), verbose=0); "
            "assert p.shape == (2, 7) and abs(p.sum() - 2) < 1e-4; "
            "assert not any(k.startswith('ferbatch') for k in sys.modules); print('ok')")
    out = subprocess.run([sys.executable, "-c", code, str(registry.model_path(done["version"]))],
                         capture_output=True, text=True, timeout=300)
    assert out.stdout.strip().endswith("ok"), out.stderr[-2000:]
