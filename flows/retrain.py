"""The `retrain` flow: load and validate data, train, calibrate, evaluate, register, promote."""

from __future__ import annotations

import time
from pathlib import Path

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from ferbatch import retraining
from ferbatch.registry import ModelRegistry, default_models_dir
from ferbatch.training import preset

# Arrays and Keras models pass between tasks in memory; hashing them for a cache key would cost more
# than it saves, so these tasks do not cache.
load_data = task(retraining.prepare_data, name="load-and-validate-data", cache_policy=NO_CACHE)
train_model = task(retraining.fit, name="train", cache_policy=NO_CACHE)
calibrate_model = task(retraining.calibrate, name="calibrate-on-publictest", cache_policy=NO_CACHE)
evaluate_model = task(retraining.assess, name="evaluate", cache_policy=NO_CACHE)
register_model = task(retraining.register, name="register", cache_policy=NO_CACHE)
register_unfinished = task(retraining.register_unfinished, name="register-unfinished", cache_policy=NO_CACHE)
promote_model = task(retraining.promote, name="promote", cache_policy=NO_CACHE)


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
) -> dict:
    """Train a FER model and register it; promote it only when PublicTest accuracy is not worse.

    With `stop_after_minutes`, a run that would not finish in time stops after an epoch and is registered
    as an unfinished version, which `resume_from` continues later, on this machine or another.
    """
    started = time.time()
    config = preset(preset_name).with_overrides(**(overrides or {}))
    registry = ModelRegistry(models_dir or default_models_dir())
    workdir = retraining.work_dir(registry.root)
    if resume_from:
        preset_name = registry.unfinished_card(resume_from).get("preset") or preset_name
    config, resume_run, init_weights = retraining.training_setup(registry, workdir, config, resume_from, init_from,
                                                                 overrides)
    report_dir = workdir / "report"
    faces = load_data(data, labels, extra_folder, report_dir)
    stop_at = started + stop_after_minutes * 60 if stop_after_minutes else None
    result = train_model(config, faces, workdir, resume or resume_run, stop_at, init_weights)
    if not result.finished:
        version = register_unfinished(registry, config, result, workdir, preset_name, faces)
        return {"version": version, "unfinished": True, "promoted": False, "epochs_done": result.epochs_run,
                "epochs": config.epochs, "best_public_accuracy": result.best_public_accuracy,
                "models_dir": str(Path(registry.root)), "reason": "stopped at the deadline; resume it later"}
    calibration = calibrate_model(config, result.classifier, faces)
    metrics = evaluate_model(result.classifier, faces)
    version = register_model(registry, config, faces, result, metrics, report_dir, calibration)
    decision = promote_model(registry, version, promote, tolerance)
    card = registry.card(version)
    create_markdown_artifact(
        retraining.metrics_markdown(card, decision), key="retrain-metrics", description="Model metrics"
    )
    return {"version": version, "unfinished": False, "promoted": decision.promoted, "reason": decision.reason,
            "models_dir": str(Path(registry.root)), "metrics": card["metrics"]}
