"""deploy/accelerator_train.py: members trained on another machine come back and finish here untouched."""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import SAMPLE_CSV

from ferbatch.models import ModelRegistry
from ferbatch.training import ENSEMBLES, PRESETS, EnsembleRecipe, load_training_data, preset

_SCRIPT = Path(__file__).resolve().parents[1] / "deploy" / "accelerator_train.py"
_spec = importlib.util.spec_from_file_location("accelerator_train", _SCRIPT)
tool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tool)


@pytest.fixture
def tiny_ensemble(monkeypatch):
    monkeypatch.setitem(PRESETS, "tiny_crop", preset("smoke").with_overrides(crop=40, early_stopping_patience=5))
    monkeypatch.setitem(ENSEMBLES, "tiny_x2", EnsembleRecipe(member="tiny_crop", seeds=(11, 22), crops=1, flip=True))
    return "tiny_x2"


def test_packed_faces_come_back_exactly_and_a_changed_label_is_refused(tmp_path):
    arrays = tmp_path / "arrays"
    tool.pack(SAMPLE_CSV, arrays)
    unpacked = tool.unpack(arrays)
    data = load_training_data(SAMPLE_CSV)
    for split in ("Training", "PublicTest"):
        images, labels = data.subset(split)
        np.testing.assert_array_equal(unpacked[split][0], images)
        np.testing.assert_array_equal(unpacked[split][1], labels)
    assert "PrivateTest" not in unpacked  # the final test never travels to where members are trained

    labels_file = arrays / "PublicTest-labels.npy"
    labels = np.load(labels_file)
    labels[0] = (labels[0] + 1) % 7
    np.save(labels_file, labels)
    with pytest.raises(SystemExit, match="PublicTest faces do not match their SHA-256"):
        tool.unpack(arrays)


@pytest.mark.usefixtures("prefect_harness")
def test_members_trained_elsewhere_are_adopted_and_assembled_without_training_again(tiny_ensemble, tmp_path):
    from ferbatch_flows.retrain import retrain

    arrays = tmp_path / "arrays"
    tool.pack(SAMPLE_CSV, arrays)
    tars, states = [], {}
    for seed in (11, 22):
        there = tmp_path / "there" / str(seed)
        tool.train_member(arrays, tiny_ensemble, seed, stop_at=time.time() + 3600, workdir=there)
        states[seed] = json.loads((there / "state.json").read_text())
        tars.append(tmp_path / f"member-{seed}.tar")
        tool.pack_member(there, tars[-1])

    models = tmp_path / "models"
    versions = tool.adopt(SAMPLE_CSV, tars, models, tiny_ensemble)
    registry = ModelRegistry(models)
    assert sorted(registry.unfinished_versions()) == sorted(versions) and registry.versions() == []

    done = retrain(data=str(SAMPLE_CSV), models_dir=str(models), preset_name=tiny_ensemble)
    assert not done["unfinished"] and done["promoted"] and registry.unfinished_versions() == []
    card = registry.card(done["version"])
    for member, seed in zip(card["members"], (11, 22), strict=True):
        assert member["seed"] == seed
        # The only chunk is the one run elsewhere: the flow evaluated and registered it, and trained nothing.
        assert member["chunks"] == states[seed]["chunks"]
        assert member["public_test_curve"] == pytest.approx(states[seed]["history"]["val_accuracy"], abs=5e-5)


def test_a_damaged_tar_is_refused_by_name_and_registers_nothing(tmp_path):
    from ferbatch.errors import FerbatchError

    bad = tmp_path / "member-11.tar"
    bad.write_bytes(b"cut off in transfer")
    with pytest.raises(FerbatchError, match=r"member-11\.tar: not a member tar written by `train`"):
        tool.adopt(SAMPLE_CSV, [bad], tmp_path / "models")
    assert ModelRegistry(tmp_path / "models").unfinished_versions() == []
