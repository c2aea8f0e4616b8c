"""Issue 11: runs that outlive an interruption and a machine (unfinished versions, --resume-from, --init-from)."""

from __future__ import annotations

import json
import shutil
import time

import numpy as np
import pytest
from conftest import SAMPLE_CSV

from ferbatch.errors import RegistryError
from ferbatch.models import ModelRegistry
from ferbatch.training import preset, register_unfinished, train, training_setup, unfinished_card_for

# Crop recipes augment in the batch pipeline, keyed by (seed, epoch, batch): a resumed run sees the very
# batches an uninterrupted one does. (Whole-face recipes augment with Keras layers whose random state
# restarts on load, so they resume with other augmentation draws.)
TWO_EPOCHS = preset("smoke").with_overrides(epochs=2, early_stopping_patience=5, crop=40)


def _train(sample_data, workdir, config, **kwargs):
    return train(config, *sample_data.subset("Training"), *sample_data.subset("PublicTest"), workdir, **kwargs)


def _weights(model) -> list[np.ndarray]:
    return [np.asarray(w) for w in model.get_weights()]


@pytest.fixture(scope="module")
def stopped_run(sample_data, tmp_path_factory):
    """A TWO_EPOCHS run that a deadline already past stopped after its first epoch: (result, work folder), trained
    once for the module; each test takes a copy of the folder (`_copy`)."""
    workdir = tmp_path_factory.mktemp("stopped")
    return _train(sample_data, workdir / "checkpoints", TWO_EPOCHS, stop_at=time.time()), workdir


def _copy(stopped_run, to):
    result, workdir = stopped_run
    return result, shutil.copytree(workdir, to)


def test_a_run_stopped_registered_and_resumed_elsewhere_ends_with_the_uninterrupted_weights(
    sample_data, tmp_path, stopped_run
):
    whole = _train(sample_data, tmp_path / "whole", TWO_EPOCHS)
    assert whole.finished and whole.epochs_run == 2

    # A deadline already past: the first epoch runs, then the run stops and leaves its checkpoint.
    first, _ = _copy(stopped_run, tmp_path / "here")
    assert not first.finished and first.epochs_run == 1
    registry = ModelRegistry(tmp_path / "models")
    version = register_unfinished(registry, TWO_EPOCHS, first, tmp_path / "here", "smoke")
    assert registry.unfinished_versions() == [version] and registry.versions() == []
    card = registry.unfinished_card(version)
    assert card["epochs_done"] == 1 and card["training_config"]["epochs"] == 2 and card["preset"] == "smoke"
    assert len(card["history"]["val_accuracy"]) == 1 and card["chunks"][0]["last_epoch"] == 1

    # "Another machine": only the registry travels (a copy of models/), not the work folder.
    moved = ModelRegistry(shutil.copytree(registry.root, tmp_path / "elsewhere"))
    workdir = tmp_path / "other-work"
    config, resume, init = training_setup(moved, workdir, preset("default"), resume_from=version)
    assert config == TWO_EPOCHS and resume and init is None
    second = _train(sample_data, workdir / "checkpoints", config, resume=True)
    assert second.finished and second.resumed and second.epochs_run == 2
    assert second.run_id == first.run_id and [c["last_epoch"] for c in second.chunks] == [1, 2]
    assert second.history["val_loss"] == pytest.approx(whole.history["val_loss"], abs=1e-5)
    for resumed_weight, whole_weight in zip(_weights(second.classifier), _weights(whole.classifier), strict=True):
        np.testing.assert_allclose(resumed_weight, whole_weight, atol=1e-5)


def test_registering_again_supersedes_the_older_unfinished_version_of_the_same_run(sample_data, tmp_path):
    config = TWO_EPOCHS.with_overrides(epochs=3)
    registry = ModelRegistry(tmp_path / "models")
    first = _train(sample_data, tmp_path / "w" / "checkpoints", config, stop_at=time.time())
    older = register_unfinished(registry, config, first, tmp_path / "w")
    again = _train(sample_data, tmp_path / "w" / "checkpoints", config, resume=True, stop_at=time.time())
    newer = register_unfinished(registry, config, again, tmp_path / "w")
    assert registry.unfinished_versions() == [newer] and newer != older
    assert registry.unfinished_card(newer)["epochs_done"] == 2


def test_an_unfinished_version_is_never_a_model(tmp_path, stopped_run):
    registry = ModelRegistry(tmp_path / "models")
    result, _ = _copy(stopped_run, tmp_path / "w")
    version = register_unfinished(registry, TWO_EPOCHS, result, tmp_path / "w")
    with pytest.raises(RegistryError, match=r"unfinished training run.*--resume-from"):
        registry.resolve(version)
    with pytest.raises(RegistryError, match="no unfinished run 'nope'"):
        registry.unfinished_card("nope")
    card = unfinished_card_for(tmp_path / "w" / "checkpoints")
    assert card["architecture"] == "tiny"


def test_init_from_starts_from_the_given_weights(sample_data, tmp_path, models_dir):
    registry = ModelRegistry(models_dir)
    source = registry.load_model()
    architecture = registry.card()["architecture"]
    config = preset("smoke").with_overrides(architecture=architecture, epochs=1, learning_rate=0.0,
                                            weight_decay=0.0)
    _, resume, init = training_setup(registry, tmp_path, config, init_from=registry.current_version())
    assert not resume
    result = _train(sample_data, tmp_path / "w", config, init_weights=init)
    # With a zero learning rate only BatchNormalization's moving statistics may move.
    trainable = {id(v) for v in result.classifier.trainable_variables}
    for new, old in zip(result.classifier.variables, source.variables, strict=True):
        if id(new) in trainable:
            np.testing.assert_array_equal(np.asarray(new), np.asarray(old))


@pytest.mark.usefixtures("prefect_harness")
def test_the_retrain_flow_stops_at_its_deadline_and_resume_from_finishes_and_cleans_up(tmp_path):
    from ferbatch_flows.retrain import retrain

    common = {"data": str(SAMPLE_CSV), "models_dir": str(tmp_path)}
    stopped = retrain(**common, preset_name="smoke", stop_after_minutes=1e-6)
    assert stopped["unfinished"] and stopped["epochs_done"] == 1 and not stopped["promoted"]
    registry = ModelRegistry(tmp_path)
    assert registry.current_version() is None and registry.versions() == []
    done = retrain(**common, resume_from=stopped["version"])
    assert not done["unfinished"] and done["promoted"]
    assert registry.unfinished_versions() == [] and registry.versions() == [done["version"]]
    card = registry.card(done["version"])
    assert card["epochs_run"] == 2 and len(card["chunks"]) == 2
    assert json.loads((tmp_path / done["version"] / "card.json").read_text())["run_id"] == stopped_run_id(stopped)


def stopped_run_id(result: dict) -> str:
    return ModelRegistry(result["models_dir"]).card(ModelRegistry(result["models_dir"]).versions()[-1])["run_id"]


def test_a_checkpoint_from_before_run_ids_gets_one_that_its_resumed_chunks_keep(sample_data, tmp_path, stopped_run):
    result, _ = _copy(stopped_run, tmp_path / "w")
    state_file = tmp_path / "w" / "checkpoints" / "state.json"
    state = json.loads(state_file.read_text())
    del state["run_id"], state["chunks"]
    state_file.write_text(json.dumps(state))
    registry = ModelRegistry(tmp_path / "models")
    version = register_unfinished(registry, TWO_EPOCHS, result, tmp_path / "w")
    run_id = registry.unfinished_card(version)["run_id"]
    assert run_id
    _, resume, _ = training_setup(registry, tmp_path / "again", TWO_EPOCHS, resume_from=version)
    resumed = _train(sample_data, tmp_path / "again" / "checkpoints", TWO_EPOCHS, resume=resume)
    assert resumed.run_id == run_id and resumed.chunks[0]["host"] == "unrecorded"
