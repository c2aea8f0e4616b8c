from __future__ import annotations

import json

import numpy as np
import pytest

from ferbatch.errors import RegistryError
from ferbatch.models import ModelRegistry, create_model, promotion_score


def _card(public_accuracy: float) -> dict:
    def split():
        return {"plain": {"accuracy": public_accuracy}, "flip_tta": {"accuracy": public_accuracy}}

    return {"architecture": "tiny", "metrics": {"PublicTest": split(), "PrivateTest": split()}}


@pytest.fixture(scope="module")
def tiny():
    return create_model("tiny")


def test_register_stores_model_card_and_pictures_in_a_version_folder(tmp_path, tiny):
    picture = tmp_path / "curves.png"
    picture.write_bytes(b"png")
    registry = ModelRegistry(tmp_path / "models")
    version = registry.register(tiny, _card(0.5), [picture])
    folder = registry.root / version
    assert {p.name for p in folder.iterdir()} == {"model.keras", "card.json", "curves.png"}
    card = json.loads((folder / "card.json").read_text())
    assert card["version"] == version
    assert card["model_bytes"] == (folder / "model.keras").stat().st_size
    assert registry.versions() == [version]
    assert registry.current_version() is None
    assert folder.stat().st_mode & 0o777 == 0o755
    faces = np.zeros((2, 48, 48, 1), "float32")
    np.testing.assert_allclose(registry.load_model(version).predict(faces, verbose=0),
                               tiny.predict(faces, verbose=0), atol=1e-6)


def test_first_model_is_promoted(tmp_path, tiny):
    registry = ModelRegistry(tmp_path)
    version = registry.register(tiny, _card(0.5))
    decision = registry.promote(version)
    assert decision.promoted and decision.previous is None
    assert registry.current_version() == version
    assert json.loads((tmp_path / "current.json").read_text())["version"] == version
    assert (tmp_path / "current.json").stat().st_mode & 0o777 == 0o644


def test_a_worse_model_is_not_promoted_and_a_better_one_is(tmp_path, tiny):
    registry = ModelRegistry(tmp_path)
    first = registry.register(tiny, _card(0.60))
    registry.promote(first)
    worse = registry.register(tiny, _card(0.59))
    refused = registry.promote(worse)
    assert not refused.promoted
    assert "below the current 0.6000" in refused.reason
    assert registry.current_version() == first
    better = registry.register(tiny, _card(0.61))
    assert registry.promote(better).promoted
    assert registry.current_version() == better


def test_tolerance_and_force_let_a_slightly_worse_model_through(tmp_path, tiny):
    registry = ModelRegistry(tmp_path)
    registry.promote(registry.register(tiny, _card(0.60)))
    slightly_worse = registry.register(tiny, _card(0.595))
    assert registry.promote(slightly_worse, tolerance=0.01).promoted
    much_worse = registry.register(tiny, _card(0.30))
    assert not registry.promote(much_worse).promoted
    assert registry.promote(much_worse, force=True).promoted


def test_a_failed_registration_leaves_no_version_and_keeps_the_pointer(tmp_path, tiny, monkeypatch):
    registry = ModelRegistry(tmp_path)
    first = registry.register(tiny, _card(0.6))
    registry.promote(first)

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(type(tiny), "save", crash)
    with pytest.raises(OSError, match="disk full"):
        registry.register(tiny, _card(0.9))
    assert registry.versions() == [first]
    assert registry.current_version() == first
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".staging")]


def test_unknown_version_and_empty_registry_are_clear_errors(tmp_path):
    registry = ModelRegistry(tmp_path)
    with pytest.raises(RegistryError, match="no current model"):
        registry.resolve()
    with pytest.raises(RegistryError, match="no model version 'v9'"):
        registry.resolve("v9")


def test_a_calibrated_model_is_judged_by_its_accuracy_before_the_biases_fitted_on_publictest(tmp_path, tiny):
    registry = ModelRegistry(tmp_path)
    registry.promote(registry.register(tiny, _card(0.6375)))
    calibrated = _card(0.6375)  # as measured: 0.6275 before the biases, 0.6375 after them
    calibrated["calibration"] = {"PublicTest_before": {"accuracy": 0.6275}, "PublicTest_after": {"accuracy": 0.6375}}
    assert promotion_score(calibrated) == 0.6275
    refused = registry.promote(registry.register(tiny, calibrated))
    assert not refused.promoted and "accuracy 0.6275 is below the current 0.6375" in refused.reason


def test_promotion_score_reads_public_test_accuracy_only():
    card = _card(0.5)
    card["metrics"]["PrivateTest"]["plain"]["accuracy"] = 0.99
    assert promotion_score(card) == 0.5


def test_a_corrupt_model_is_a_one_line_error_before_loading_with_or_without_a_sha256_on_the_card(tmp_path, tiny):
    """Issue 12, case 4: the card's model_sha256 is compared; older cards get a structural check."""
    registry = ModelRegistry(tmp_path / "models")
    version = registry.register(tiny, _card(0.5))
    card_file = registry.root / version / "card.json"
    card = json.loads(card_file.read_text())
    assert len(card["model_sha256"]) == 64
    assert registry.verify_model(version) == registry.model_path(version)
    path = registry.model_path(version)
    good = path.read_bytes()
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(RegistryError, match=r"model\.keras: corrupt model file \(its sha256 differs"):
        registry.verify_model(version)
    with pytest.raises(RegistryError, match=r"model\.keras: cannot load the model") as raised:
        registry.load_model(version)
    assert "\n" not in str(raised.value)

    del card["model_sha256"]  # a card registered before the sha256 was recorded
    card_file.write_text(json.dumps(card))
    path.write_bytes(good)
    assert registry.verify_model(version) == path
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(RegistryError, match=r"model\.keras: corrupt model file \(not a Keras archive"):
        registry.verify_model(version)
    damaged = bytearray(good)
    damaged[len(good) // 2] ^= 0xFF  # a flipped bit inside the archive
    path.write_bytes(bytes(damaged))
    with pytest.raises(RegistryError, match=r"model\.keras: corrupt model file"):
        registry.verify_model(version)


def test_at_opens_the_given_folder_else_the_default_one(tmp_path, monkeypatch):
    assert ModelRegistry.at(tmp_path / "given").root == tmp_path / "given"
    monkeypatch.setenv("FERBATCH_MODELS_DIR", str(tmp_path / "default"))
    assert ModelRegistry.at().root == ModelRegistry.at(None).root == tmp_path / "default"


def test_the_project_models_folder_is_the_default_in_a_checkout(monkeypatch):
    from pathlib import Path

    from ferbatch.models import default_models_dir

    monkeypatch.delenv("FERBATCH_MODELS_DIR", raising=False)
    project_models = Path(__file__).resolve().parents[1] / "models"
    assert default_models_dir() == project_models  # the package moved; the path it looks for did not
