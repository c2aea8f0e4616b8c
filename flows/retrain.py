"""The `retrain` flow: load and validate data, train, calibrate, evaluate, register, promote.

An ensemble preset trains its members one after another (a member already registered is reused, an
unfinished one resumed), then assembles, evaluates, registers and promotes the whole.

The `fine-tune` flow (the nightly retrain): fine-tune the current model's networks from their weights on the
user's labelled faces plus a FER2013 replay sample, sized to a time budget that covers the evaluation too, then gate
on the user holdout with PublicTest as a guard.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from ferbatch import training
from ferbatch.config import ScoreSettings
from ferbatch.errors import FerbatchError
from ferbatch.models import ModelRegistry, real_photo_sets
from ferbatch.models._workdirs import nightly_work_dir, release_work_dir
from ferbatch.runtime.interrupts import add_cleanup, keep_deadline
from ferbatch.training import EnsembleRecipe, recipe

# Arrays and Keras models pass between tasks in memory; hashing them for a cache key would cost more
# than it saves, so these tasks do not cache.
load_data = task(training.prepare_data, name="load-and-validate-data", cache_policy=NO_CACHE)
mix_in_teacher = task(training.teacher_targets, name="teacher-targets", cache_policy=NO_CACHE)
load_batch_teacher = task(training.batch_teacher, name="load-batch-teacher", cache_policy=NO_CACHE)
train_model = task(training.fit, name="train", cache_policy=NO_CACHE)
calibrate_model = task(training.calibrate, name="calibrate-on-publictest", cache_policy=NO_CACHE)
evaluate_model = task(training.evaluate_splits, name="evaluate", cache_policy=NO_CACHE)
register_model = task(training.register, name="register", cache_policy=NO_CACHE)
register_unfinished = task(training.register_unfinished, name="register-unfinished", cache_policy=NO_CACHE)
assemble_ensemble = task(training.assemble, name="assemble-ensemble", cache_policy=NO_CACHE)
register_ensemble = task(training.register_ensemble, name="register-ensemble", cache_policy=NO_CACHE)
promote_model = task(training.promote, name="promote", cache_policy=NO_CACHE)
measure_real_photos = task(training.real_photos_on_card, name="measure-real-photos", cache_policy=NO_CACHE)
measure_current = task(training.measure_current, name="measure-current-model", cache_policy=NO_CACHE)
measure_holdout = task(training.holdout_accuracy, name="user-holdout-accuracy", cache_policy=NO_CACHE)
tune_network = task(training.fine_tune_network, name="fine-tune-network", cache_policy=NO_CACHE)
register_fine_tuned = task(training.register_fine_tuned, name="register-fine-tuned", cache_policy=NO_CACHE)
gate_model = task(training.gate, name="gate-publictest-and-user-holdout", cache_policy=NO_CACHE)


def _unfinished(version: str, registry: ModelRegistry, epochs_done: int, epochs: int, best: float,
                reason: str = "stopped at the deadline; resume it later") -> dict:
    return {"version": version, "unfinished": True, "promoted": False, "epochs_done": epochs_done,
            "epochs": epochs, "best_public_accuracy": best, "models_dir": str(Path(registry.root)), "reason": reason}


def _measure_real_photos(registry: ModelRegistry, version: str, folders: list[str] | None) -> None:
    """The new model's figures on labelled real photos, scored as `score` scores them, onto its card; the
    current model's too where its card lacks a set, so that promotion compares the two on the same photos."""
    if not folders:
        return
    measured = measure_real_photos(registry, version, folders, ScoreSettings())
    print(training.real_photos_markdown(measured["sets"]).split("\n\n")[0])
    current = registry.current_version()
    if current is not None and current != version and not set(measured["sets"]) <= set(
            real_photo_sets(registry.card(current))):
        measure_real_photos(registry, current, folders, ScoreSettings())


def _finish(registry: ModelRegistry, version: str, promote: str, tolerance: float,
            real_photos: list[str] | None = None) -> dict:
    _measure_real_photos(registry, version, real_photos)
    decision = promote_model(registry, version, promote, tolerance)
    card = registry.card(version)
    create_markdown_artifact(
        training.metrics_markdown(card, decision), key="retrain-metrics", description="Model metrics"
    )
    return {"version": version, "unfinished": False, "promoted": decision.promoted, "reason": decision.reason,
            "models_dir": str(Path(registry.root)), "metrics": card["metrics"]}


@flow(name="retrain", log_prints=True)
def retrain(
    data: str,
    labels: str | None = None,
    extra_folder: str | None = None,
    models_dir: str | None = None,
    preset_name: str = "default",
    overrides: dict | None = None,
    resume: bool = False,
    promote: str = "auto",
    tolerance: float = 0.0,
    resume_from: str | None = None,
    init_from: str | None = None,
    stop_after_minutes: float | None = None,
    real_photos: list[str] | None = None,
) -> dict:
    """Train a FER model and register it; promote it only when PublicTest accuracy is not worse.

    With `stop_after_minutes`, a run that would not finish in time stops after an epoch and is registered
    as an unfinished version, which `resume_from` (or, for an ensemble preset, the same command) continues
    later, on this machine or another.
    """
    keep_deadline()  # as a subflow of `nightly` too: Prefect installs its SIGTERM handler again for each flow
    stop_at = time.time() + stop_after_minutes * 60 if stop_after_minutes else None
    registry = ModelRegistry.at(models_dir)
    workdir = training.work_dir(registry.root)
    if resume_from:
        preset_name = registry.unfinished_card(resume_from).get("preset") or preset_name
    chosen = recipe(preset_name)
    if isinstance(chosen, EnsembleRecipe):
        return _retrain_ensemble(registry, workdir, preset_name, chosen, data, labels, extra_folder, stop_at,
                                 promote, tolerance, real_photos)
    config = chosen.with_overrides(**(overrides or {}))
    config, resume_run, init_weights = training.training_setup(registry, workdir, config, resume_from, init_from,
                                                                 overrides)
    report_dir = workdir / "report"
    faces, data_pictures = load_data(data, labels, extra_folder, report_dir, config.targets)
    faces = mix_in_teacher(registry, config, faces, workdir)
    result = train_model(config, faces, workdir, resume or resume_run, stop_at, init_weights,
                         load_batch_teacher(registry, config))
    if not result.finished:
        version = register_unfinished(registry, config, result, workdir, preset_name, faces)
        return _unfinished(version, registry, result.epochs_run, config.epochs, result.best_public_accuracy)
    model, calibration = calibrate_model(config, result.classifier, faces)
    result = replace(result, classifier=model)
    metrics = evaluate_model(result.classifier, faces)
    version = register_model(registry, config, faces, result, metrics, report_dir, calibration, preset_name,
                             data_pictures=data_pictures)
    return _finish(registry, version, promote, tolerance, real_photos)


def _retrain_ensemble(registry: ModelRegistry, workdir: Path, name: str, ensemble: EnsembleRecipe, data: str,
                      labels: str | None, extra_folder: str | None, stop_at: float | None, promote: str,
                      tolerance: float, real_photos: list[str] | None = None) -> dict:
    report_dir = workdir / "report"
    faces, data_pictures = load_data(data, labels, extra_folder, report_dir, training.preset(ensemble.member).targets)
    sources = faces.summary()["sources"]
    member_versions, trained = [], False
    for config in ensemble.member_configs():
        finished, unfinished = training.find_member(registry, config, sources)
        if finished:
            member_versions.append(finished)
            continue
        # Like a single run, a chunk always trains at least one epoch; the next member waits for a later one.
        if trained and stop_at is not None and time.time() >= stop_at:
            version = unfinished or "(not started)"
            return _unfinished(version, registry, 0, config.epochs, float("nan"),
                               f"member seed {config.seed} waits for the next chunk")
        if unfinished:
            training.training_setup(registry, workdir, config, resume_from=unfinished)
        result = train_model(config, faces, workdir, bool(unfinished), stop_at)
        trained = True
        if not result.finished:
            version = register_unfinished(registry, config, result, workdir, name, faces)
            return _unfinished(version, registry, result.epochs_run, config.epochs, result.best_public_accuracy,
                               f"member seed {config.seed} stopped at the deadline; run the same command again")
        metrics = evaluate_model(result.classifier, faces)
        member_versions.append(register_model(registry, config, faces, result, metrics, report_dir, None, name,
                                              "member", data_pictures))
    members = [registry.load_model(version) for version in member_versions]
    model = assemble_ensemble(members, ensemble, name)
    metrics = evaluate_model(model, faces)
    version = register_ensemble(registry, name, ensemble, faces, model, metrics, member_versions, report_dir,
                                data_pictures)
    return _finish(registry, version, promote, tolerance, real_photos)


@flow(name="fine-tune", log_prints=True)
def fine_tune(
    data: str,
    labels: str | None = None,
    extra_folder: str | None = None,
    models_dir: str | None = None,
    base_version: str | None = None,
    max_minutes: float = 30.0,
    tolerance: float = 0.0,
    started_at: float | None = None,
    real_photos: list[str] | None = None,
    public_tolerance: float = training.DEFAULT_PUBLIC_TOLERANCE,
) -> dict:
    """Fine-tune the current model (or `base_version`) so that the whole run, evaluation and registration
    included, ends within `max_minutes` of `started_at`; gate it on the user holdout with PublicTest as a guard
    (see training.gate). Each network trains on the user's faces and a FER2013 replay sample sized to its share
    of the time, and stops at a step deadline."""
    registry = ModelRegistry.at(models_dir)
    setup = training.fine_tune_setup(registry, registry.resolve(base_version), max_minutes, started_at)
    workdir = nightly_work_dir(registry.root, add_cleanup)  # its own: removed at the end, also when interrupted
    report_dir = workdir / "report"
    faces, data_pictures = load_data(data, labels, extra_folder, report_dir)
    user_faces = training.user_faces_summary(faces)
    holdout_faces = (user_faces or {}).get("holdout", 0)
    note = training.too_few_holdout_note(holdout_faces)
    if note:
        print(f"user holdout: {note}")
    current = registry.load_model(setup.base_version)
    measured = measure_current(current, faces)
    train_until = training.training_deadline(setup, faces, measured)
    networks = training.base_networks(current)
    if len(networks) != len(setup.configs):
        raise FerbatchError(f"model {setup.base_version}: {len(networks)} network(s) inside, but its card "
                            f"names {len(setup.configs)}")
    runs: list[dict | None] = []
    for index, (config, network) in enumerate(zip(setup.configs, networks, strict=True)):
        plan = training.plan_network([run for run in runs if run], index, len(networks), train_until, setup,
                                     measured)
        if plan is None:
            print(f"network {index + 1} of {len(networks)} keeps its weights: no time left for its steps")
            runs.append(None)
            continue
        runs.append(tune_network(config, faces, workdir, network, index, len(networks), plan))
    results = [run["result"] if run else None for run in runs]
    model = training.assemble_fine_tuned(results, networks, setup, registry.card(setup.base_version)["architecture"])
    metrics = evaluate_model(model, faces, flip_tta=False)  # plain decides the gate; the mirror pass would double it
    after = measure_holdout(model, faces)
    figures = training.gate_figures(registry, setup.base_version, metrics, holdout_faces, measured.holdout_accuracy,
                                    after)
    version = register_fine_tuned(registry, setup, faces, model, runs, metrics, report_dir, data_pictures,
                                  figures, user_faces)
    _measure_real_photos(registry, version, real_photos)
    decision = gate_model(registry, version, figures, tolerance, public_tolerance)
    card = registry.card(version)
    minutes = (time.time() - setup.started_at) / 60
    create_markdown_artifact(
        training.metrics_markdown(card, decision), key="retrain-metrics", description="Model metrics"
    )
    release_work_dir(workdir)
    return {"version": version, "unfinished": False, "promoted": decision.promoted, "reason": decision.reason,
            "models_dir": str(Path(registry.root)), "metrics": card["metrics"], "gate": figures,
            "minutes": round(minutes, 2), "budget_minutes": max_minutes}
