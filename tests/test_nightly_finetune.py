"""The nightly retrain: follow the current model's recipe, fine-tune it on new labelled faces within a time budget,
gate on PublicTest and the user holdout, and never train a refused candidate twice."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import cv2
import numpy as np
import pytest
from conftest import SAMPLE_CSV
from imagefactory import PHOTOS

from ferbatch.classes import CLASS_NAMES
from ferbatch.models import ModelRegistry
from ferbatch.training import NightlyPlan, nightly_markdown, plan_nightly, record_refused, source_digests


def _fake_current(root, card: dict) -> ModelRegistry:
    """A registry whose current model is just a card (enough for planning, which loads no model)."""
    version = root / "20260101-000000-model"
    version.mkdir(parents=True)
    (version / "model.keras").write_bytes(b"not loaded by the planner")
    metrics = {"PublicTest": {"plain": {"accuracy": 0.6}}}  # what every valid card has
    (version / "card.json").write_text(json.dumps({"version": version.name, "metrics": metrics, **card}))
    (root / "current.json").write_text(json.dumps({"version": version.name}))
    return ModelRegistry(root)


SHIPPED_RECIPE = {"ensemble": {"member": "crop_cnn_100", "seeds": [1234, 2345, 3456], "crops": 1, "flip": False}}


def test_with_no_preset_configured_the_nightly_follows_the_current_recipe_and_skips_unchanged_data(tmp_path):
    registry = _fake_current(tmp_path, {"preset": "crop_cnn_100_x3", "training_config": SHIPPED_RECIPE,
                                        "data": {"sources": source_digests(SAMPLE_CSV)}})
    plan = plan_nightly(registry, SAMPLE_CSV)
    assert plan.action == "skip" and "same data with the same config" in plan.reason
    # naming another recipe is an explicit choice: it is trained from scratch
    explicit = plan_nightly(registry, SAMPLE_CSV, preset_name="default")
    assert explicit.action == "retrain" and explicit.preset_name == "default"
    assert "not model 20260101-000000-model's recipe (crop_cnn_100_x3)" in explicit.reason


def test_new_labelled_faces_plan_a_fine_tune_and_a_refused_one_is_skipped_until_forced(tmp_path):
    registry = _fake_current(tmp_path / "models", {"preset": "smoke", "data": {"sources": source_digests(SAMPLE_CSV)}})
    labelled = tmp_path / "labelled"
    (labelled / "Happy").mkdir(parents=True)
    cv2.imwrite(str(labelled / "Happy" / "a.png"), np.full((96, 96), 99, np.uint8))
    plan = plan_nightly(registry, SAMPLE_CSV, extra_folder=labelled)
    assert plan.action == "fine_tune" and "labelled/" in plan.reason and plan.base_version == registry.current_version()
    record_refused(registry, plan, "20260102-000000-candidate", "PublicTest accuracy 0.5 is below the current 0.6")
    again = plan_nightly(registry, SAMPLE_CSV, extra_folder=labelled)
    assert again.action == "skip" and "20260102-000000-candidate" in again.reason and "--force-retrain" in again.reason
    assert "--force-retrain" in nightly_markdown(again)
    assert plan_nightly(registry, SAMPLE_CSV, extra_folder=labelled, force=True).action == "fine_tune"
    cv2.imwrite(str(labelled / "Happy" / "b.png"), np.full((96, 96), 42, np.uint8))  # more faces: a new candidate
    assert plan_nightly(registry, SAMPLE_CSV, extra_folder=labelled).action == "fine_tune"


def test_no_current_model_and_no_preset_skips_with_what_to_do(tmp_path):
    plan = plan_nightly(ModelRegistry(tmp_path), SAMPLE_CSV)
    assert plan.action == "skip" and "ferbatch train --preset" in plan.reason


# ---- the fine-tune itself, on the tiny network ----


@pytest.fixture(scope="module")
def tiny_registry(tmp_path_factory):
    """A registry whose current model is a tiny network of the `smoke` recipe, trained on the sample once for the
    module (each test gets a copy: `tiny_current`)."""
    from ferbatch.models import build_card
    from ferbatch.training import evaluate_splits, load_training_data, preset, train

    folder = tmp_path_factory.mktemp("tiny")
    data = load_training_data(SAMPLE_CSV)
    config = preset("smoke").with_overrides(epochs=1)
    result = train(config, *data.subset("Training"), *data.subset("PublicTest"), folder / "work")
    card = build_card(architecture="tiny", parameters=1, training_config=config.to_dict(), data_summary=data.summary(),
                      metrics=evaluate_splits(result.classifier, data), epochs_run=1, best_epoch=1, wall_time_s=0.0,
                      stopped_early=False, input_contract={})
    card.update(preset="smoke", role="model")
    registry = ModelRegistry(folder / "models")
    registry.promote(registry.register(result.classifier, card))
    return registry.root


@pytest.fixture
def tiny_current(tmp_path, tiny_registry):
    """This test's own copy of the module's tiny registry, at tmp_path/models."""
    return ModelRegistry(shutil.copytree(tiny_registry, tmp_path / "models"))


def _label_faces(folder, n: int = 50) -> None:
    """n FER faces (PrivateTest rows of the sample), upscaled to 96 px, in their class folders."""
    from ferbatch.training import load_fer2013

    data = load_fer2013(SAMPLE_CSV)
    faces, labels = data.subset("PrivateTest")
    for i in range(n):
        target = folder / CLASS_NAMES[labels[i % len(labels)]] / f"face{i:03d}.png"
        target.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(target), cv2.resize(faces[i % len(faces)], (96, 96), interpolation=cv2.INTER_LINEAR))


def _fine_tune_gate_says(figures: dict, public_tolerance: float = 0.015) -> bool:
    """What the gate must decide for these figures (docs/retraining.md), written out independently."""
    public, holdout = figures["PublicTest"], figures["user_holdout"]
    if holdout["faces"] >= 20 and holdout["after"] != holdout["before"]:
        return holdout["after"] > holdout["before"] and public["before"] - public["after"] <= public_tolerance
    return public["after"] >= public["before"]


@pytest.mark.usefixtures("prefect_harness")
def test_fifty_new_labelled_faces_fine_tune_within_the_budget_and_the_gate_shows_both_figures(tmp_path, tiny_current):
    from ferbatch_flows.retrain import fine_tune

    _label_faces(tmp_path / "labelled")
    before = tiny_current.current_version()
    result = fine_tune(data=str(SAMPLE_CSV), extra_folder=str(tmp_path / "labelled"),
                       models_dir=str(tiny_current.root), max_minutes=0.5)
    assert result["minutes"] <= 0.5 * 1.1
    card = tiny_current.card(result["version"])
    gate = card["gate"]
    assert gate == result["gate"]
    assert gate["user_holdout"]["faces"] == card["fine_tune"]["user_faces"]["holdout"] > 0
    assert None not in (gate["PublicTest"]["before"], gate["PublicTest"]["after"], gate["user_holdout"]["before"],
                        gate["user_holdout"]["after"])
    assert gate["PublicTest"]["before"] == pytest.approx(tiny_current.card(before)["metrics"]["PublicTest"]["plain"]
                                                         ["accuracy"], abs=1e-4)
    should = _fine_tune_gate_says(gate)
    assert result["promoted"] == should
    assert tiny_current.current_version() == (result["version"] if should else before)
    assert card["fine_tune"]["from"] == before and card["preset"] == "smoke"
    assert card["data"]["sources"] == source_digests(SAMPLE_CSV, None, tmp_path / "labelled")
    # the holdout is never trained on: Training holds FER2013's 210 faces and the other labelled ones
    assert sum(card["data"]["class_counts"]["Training"]) == 210 + card["fine_tune"]["user_faces"]["training"]
    # fewer than 20 held out: said on the card, in the reason, and PublicTest decided
    assert gate["user_holdout"]["enough"] is False and "label about" in gate["user_holdout"]["note"]
    assert "PublicTest decides alone" in result["reason"]
    network = card["fine_tune"]["networks"][0]
    assert network["fine_tuned"] and 1 <= network["steps"] <= network["planned_steps"]
    assert set(card["metrics"]["PublicTest"]) == {"plain"}  # the mirror pass is left out: it would double the time


@pytest.mark.usefixtures("prefect_harness")
def test_a_budget_too_small_for_the_steps_still_trains_the_first_network_and_gates_it(tmp_path, tiny_current):
    from ferbatch_flows.retrain import fine_tune

    _label_faces(tmp_path / "labelled", 10)
    result = fine_tune(data=str(SAMPLE_CSV), extra_folder=str(tmp_path / "labelled"),
                       models_dir=str(tiny_current.root), max_minutes=0.001)
    card = tiny_current.card(result["version"])
    assert card["fine_tune"]["stopped_at_deadline"] is True
    assert card["fine_tune"]["networks"][0]["steps"] == 1  # one step always runs; the deadline had passed
    assert "PublicTest accuracy" in result["reason"]  # the gate decided


def test_the_step_deadline_ends_an_epoch_mid_way_and_it_still_counts_as_done(tmp_path):
    import time

    from ferbatch.training import load_training_data, preset, train

    data = load_training_data(SAMPLE_CSV)
    config = preset("smoke").with_overrides(epochs=2, batch_size=16)
    images, labels = data.subset("Training")
    result = train(config, images, labels, *data.subset("PublicTest"), tmp_path / "work",
                   step_deadline=time.time(), validate=False)
    assert result.cut_short and result.epochs_run == 1 and result.history["steps"] == [1]
    assert len(labels) // 16 > 1 and result.history["step_s"][0] > 0
    assert (tmp_path / "work" / "checkpoint.keras").is_file()  # checkpointed as every epoch is
    assert "val_accuracy" not in result.history and result.best_epoch == 1  # no validation: the latest weights


def test_the_fine_tune_sample_keeps_fer2013s_class_mix_with_the_users_faces_in_half_their_places():
    from ferbatch.training import fine_tune_training_set, load_training_data

    data = load_training_data(SAMPLE_CSV)  # 30 Training faces of each class
    mine = np.flatnonzero((data.split == 2) & (data.labels == 3))[:6]  # six Happy faces stand for the user's
    data = replace(data, images=np.concatenate([data.images, data.images[mine]]),
                   labels=np.concatenate([data.labels, data.labels[mine]]),
                   split=np.concatenate([data.split, np.zeros(6, np.uint8)]),
                   source_row=np.concatenate([data.source_row, np.full(6, -1)]))
    user = data.source_row < 0
    images, labels, repeat = fine_tune_training_set(data, 140, seed=3)
    assert np.bincount(labels, minlength=7).tolist() == [20] * 7  # the class mix of the FER2013 faces
    users = {face.tobytes() for face in data.images[user]}
    from_user = np.array([face.tobytes() in users for face in images])
    assert from_user.sum() == 10 and set(labels[from_user]) == {3}  # half of Happy's 20 places
    assert repeat == pytest.approx(10 / 6, abs=0.01)
    replay = [face.tobytes() for face in images[~from_user]]
    assert len(set(replay)) == len(replay) == 130  # FER2013 faces, each once
    assert all(len(fine_tune_training_set(data, n, seed=1)[1]) >= n for n in (32, 100, 128))  # whole batches
    again = fine_tune_training_set(data, 140, seed=3)
    assert np.array_equal(again[0], images) and np.array_equal(again[1], labels)  # the same run, the same sample
    # a long sample: each user face at most 30 times; the FER2013 faces of each class fill in as far as they go
    _, labels, repeat = fine_tune_training_set(data, 7000, seed=3)
    assert repeat == 30 and (labels == 3).sum() == 6 * 30 + 30


def test_each_network_is_planned_to_its_share_of_the_time_at_the_speed_measured():
    from ferbatch.training import CurrentFigures, FineTuneSetup, TrainConfig, plan_network

    setup = FineTuneSetup("base", (TrainConfig(batch_size=100),) * 3, {"crops": 1, "flip": False}, 0.0, 300.0, 3)
    current = CurrentFigures(0.5, seconds_per_face=0.003)  # 3 networks read 333 faces/s
    first = plan_network([], 0, 3, train_until=200.0, setup=setup, current=current, now=50.0)
    # 150 s for three networks: 50 s each, less 8 s of overhead, at 3.5 x 100 faces x 1 ms = 0.35 s a step
    assert abs(first.steps - (50 - 8) / 0.35) < 1.01 and first.step_deadline == pytest.approx(98.0)
    measured = [{"steps": 120, "step_s": 0.3, "overhead_s": 5.0}]
    second = plan_network(measured, 1, 3, train_until=200.0, setup=setup, current=current, now=100.0)
    assert abs(second.steps - (50 - 5) / 0.3) < 1.01
    assert plan_network(measured, 2, 3, train_until=200.0, setup=setup, current=current, now=196.0) is None
    late_first = plan_network([], 0, 3, train_until=200.0, setup=setup, current=current, now=199.0)
    assert late_first.steps == 1  # the first network always trains
    traced = [{"steps": 1, "step_s": 30.0, "overhead_s": 0.0}]  # one step, mostly tracing: not a speed
    plan = plan_network(traced, 1, 3, train_until=200.0, setup=setup, current=current, now=100.0)
    assert plan.step_s == pytest.approx(0.35)


def _gate_registry(root, candidate_public: float) -> ModelRegistry:
    for name, accuracy in (("20260101-000000-current", 0.70), ("20260102-000000-candidate", candidate_public)):
        (root / name).mkdir(parents=True)
        (root / name / "model.keras").write_bytes(b"never loaded")
        (root / name / "card.json").write_text(json.dumps({"version": name, "metrics": {
            "PublicTest": {"plain": {"accuracy": accuracy}}}}))
    (root / "current.json").write_text(json.dumps({"version": "20260101-000000-current"}))
    return ModelRegistry(root)


@pytest.mark.parametrize(("faces", "holdout", "public_after", "promoted", "said"), [
    (40, (0.50, 0.60), 0.69, True, "within train.public_tolerance"),  # better for the user, PublicTest -1 point
    (40, (0.50, 0.60), 0.68, False, "more than train.public_tolerance"),  # -2 points: a collapse guard trips
    (40, (0.60, 0.55), 0.71, False, "worse on your faces"),  # worse on the user's faces: refused whatever else
    (40, (0.60, 0.60), 0.69, False, "user holdout unchanged"),  # unchanged: PublicTest alone, and it fell
    (12, (0.50, 0.75), 0.69, False, "label about 40 more faces"),  # too few: PublicTest alone, said plainly
    (12, (0.75, 0.50), 0.70, True, "PublicTest decides alone"),
])
def test_the_gate_promotes_what_reads_the_users_faces_better_and_guards_publictest(
        tmp_path, faces, holdout, public_after, promoted, said):
    from ferbatch.training import gate, gate_figures

    registry = _gate_registry(tmp_path, public_after)
    candidate = "20260102-000000-candidate"
    figures = gate_figures(registry, registry.current_version(), {"PublicTest": {"plain": {"accuracy": public_after}}},
                           faces, *holdout)
    decision = gate(registry, candidate, figures, tolerance=0.0, public_tolerance=0.015)
    assert decision.promoted is promoted and said in decision.reason
    assert registry.current_version() == (candidate if promoted else "20260101-000000-current")
    assert figures["user_holdout"]["enough"] is (faces >= 20)
    assert ("note" in figures["user_holdout"]) is (faces < 20)
    if faces < 20:
        assert "**Too few held-out faces**" in nightly_markdown(NightlyPlan("fine_tune", "new faces"),
                                                               {"version": candidate, "gate": figures})


@pytest.mark.usefixtures("prefect_harness")
def test_a_refused_candidate_is_not_trained_again_the_next_night(tmp_path, tiny_current):
    from ferbatch_flows.nightly import nightly

    # make the current model unbeatable on PublicTest, so the gate refuses whatever the fine-tune gives
    current = tiny_current.current_version()
    card_file = tiny_current.root / current / "card.json"
    card = json.loads(card_file.read_text())
    card["metrics"]["PublicTest"]["plain"]["accuracy"] = 1.0
    card_file.write_text(json.dumps(card))
    _label_faces(tmp_path / "labelled", 20)
    (tmp_path / "photos").mkdir()
    shutil.copy(PHOTOS / "fr_obama.jpg", tmp_path / "photos")
    config = tmp_path / "ferbatch.toml"
    config.write_text(f'models_dir = "models"\n[train]\ndata = "{SAMPLE_CSV}"\nextra_folder = "labelled"\n'
                      'max_minutes = 0.5\n[score]\nfolders = ["photos"]\nout = "reports"\n')

    first = nightly(config_file=str(config))
    assert first["retrain"]["action"] == "fine_tune" and first["retrain"]["result"]["promoted"] is False
    versions = tiny_current.versions()
    second = nightly(config_file=str(config))
    assert second["retrain"]["ran"] is False
    assert first["retrain"]["result"]["version"] in second["retrain"]["reason"]
    assert "--force-retrain" in second["retrain"]["reason"]
    assert tiny_current.versions() == versions and tiny_current.current_version() == current
    markdown = nightly_markdown(NightlyPlan("fine_tune", "new faces"), first["retrain"]["result"])
    assert "| PublicTest accuracy | 1.0000 |" in markdown and "user holdout accuracy" in markdown


@pytest.mark.slow  # by default: test_nightly (a skipped retrain, then scoring) and test_nightly_checks (a night with
# nothing to do, printed and as JSON, without Prefect)
def test_ferbatch_nightly_twice_with_nothing_changed_trains_neither_night(tmp_path, tiny_current, run_ferbatch):
    (tmp_path / "photos").mkdir()
    shutil.copy(PHOTOS / "fr_obama.jpg", tmp_path / "photos")
    config = tmp_path / "ferbatch.toml"  # train.data set, no preset: the configuration `config init` suggests
    config.write_text(f'models_dir = "models"\n[train]\ndata = "{SAMPLE_CSV}"\n'
                      '[score]\nfolders = ["photos"]\nout = "reports"\n')
    versions = tiny_current.versions()
    for _night in range(2):
        result = run_ferbatch("--config", config, "nightly")
        assert result.returncode == 0, result.stderr[-3000:]
        printed = " ".join(result.stdout.split())  # the line is wrapped to 80 columns
        assert printed.startswith("retrain: skipped (model ") and "same data with the same config" in printed
    assert tiny_current.versions() == versions
    assert not (tiny_current.root / ".work").exists()  # no training started


@pytest.fixture(scope="module")
def tiny_ensemble_registry(tmp_path_factory):
    """A registry whose current model is two tiny networks served as one model, as the shipped ensemble is; trained
    once for the module (each test gets a copy: `tiny_ensemble`)."""
    from ferbatch.models import build_card, serving_model
    from ferbatch.training import evaluate_splits, load_training_data, preset, train

    folder = tmp_path_factory.mktemp("tiny-ensemble")
    data = load_training_data(SAMPLE_CSV)
    member = preset("smoke").with_overrides(epochs=1)
    networks = [train(member.with_overrides(seed=seed), *data.subset("Training"), *data.subset("PublicTest"),
                      folder / f"work{seed}").classifier for seed in (1, 2)]
    model = serving_model(networks, crops=1, flip=False, name="2xtiny")
    recipe = {"ensemble": {"member": "smoke", "seeds": [1, 2], "crops": 1, "flip": False}, "member": member.to_dict()}
    card = build_card(architecture="2xtiny", parameters=1, training_config=recipe, data_summary=data.summary(),
                      metrics=evaluate_splits(model, data), epochs_run=2, best_epoch=0, wall_time_s=0.0,
                      stopped_early=False, input_contract={})
    card.update(preset="tiny_x2", role="ensemble", views={"crops": 1, "flip": False, "count": 2})
    registry = ModelRegistry(folder / "models")
    registry.promote(registry.register(model, card))
    return registry.root


@pytest.fixture
def tiny_ensemble(tmp_path, tiny_ensemble_registry):
    return ModelRegistry(shutil.copytree(tiny_ensemble_registry, tmp_path / "models"))


@pytest.mark.usefixtures("prefect_harness")
@pytest.mark.parametrize("minutes", [2, 0.001])  # the tiny networks' samples end in seconds either way
def test_an_ensemble_is_fine_tuned_member_by_member_and_gated_as_a_whole(tmp_path, tiny_ensemble, minutes):
    from ferbatch_flows.retrain import fine_tune

    _label_faces(tmp_path / "labelled", 20)
    result = fine_tune(data=str(SAMPLE_CSV), extra_folder=str(tmp_path / "labelled"),
                       models_dir=str(tiny_ensemble.root), max_minutes=minutes)
    card = tiny_ensemble.card(result["version"])
    tuned = [network["fine_tuned"] for network in card["fine_tune"]["networks"]]
    # with time, both members are fine-tuned; without, the first trains a step and the second keeps its weights
    assert tuned == ([True, True] if minutes == 2 else [True, False])
    assert result["minutes"] <= minutes * 1.1 or minutes < 0.1
    assert card["role"] == "ensemble" and card["preset"] == "tiny_x2" and card["views"]["count"] == 2
    model = tiny_ensemble.load_model(result["version"])
    assert len([layer for layer in model.layers if hasattr(layer, "layers")]) == 2
    assert set(result["gate"]) == {"PublicTest", "user_holdout"}
