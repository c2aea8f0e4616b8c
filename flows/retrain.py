"""The `retrain` flow: load and validate data, train, calibrate, evaluate, register, promote."""

from __future__ import annotations

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
) -> dict:
    """Train a FER model and register it; promote it only when PublicTest accuracy is not worse."""
    config = preset(preset_name).with_overrides(**(overrides or {}))
    registry = ModelRegistry(models_dir or default_models_dir())
    workdir = retraining.work_dir(registry.root)
    report_dir = workdir / "report"
    faces = load_data(data, labels, extra_folder, report_dir)
    result = train_model(config, faces, workdir, resume)
    calibration = calibrate_model(config, result.classifier, faces)
    metrics = evaluate_model(result.classifier, faces)
    version = register_model(registry, config, faces, result, metrics, report_dir, calibration)
    decision = promote_model(registry, version, promote, tolerance)
    card = registry.card(version)
    create_markdown_artifact(
        retraining.metrics_markdown(card, decision), key="retrain-metrics", description="Model metrics"
    )
    return {"version": version, "promoted": decision.promoted, "reason": decision.reason,
            "models_dir": str(Path(registry.root)), "metrics": card["metrics"]}
