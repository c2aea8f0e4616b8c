"""The `nightly` flow: fine-tune the current model when the training files changed (or retrain the recipe the
configuration names), then score every configured folder."""

from __future__ import annotations

import time

from ferbatch_flows.retrain import fine_tune, retrain
from ferbatch_flows.score import score
from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from ferbatch.config import load_config, retrain_parameters
from ferbatch.models import ModelRegistry
from ferbatch.runtime.interrupts import keep_deadline
from ferbatch.training import check_nightly, nightly_markdown, record_refused, tonight

plan_retrain = task(tonight, name="check-training-data", cache_policy=NO_CACHE)


@flow(name="nightly", log_prints=True)
def nightly(config_file: str | None = None, force_retrain: bool = False) -> dict:
    """Retrain (or skip), then score with whatever model is current. Reads ferbatch.toml (see `ferbatch config`)."""
    keep_deadline()  # SIGTERM during the flow (a retrain included) still ends `ferbatch` within seconds
    started_at = time.time()  # train.max_minutes counts from here: the retrain step, checks and loading included
    logger = get_run_logger()
    config, source = load_config(config_file)
    logger.info("configuration: %s", source or "defaults and FERBATCH_* environment")
    check_nightly(config)  # folders, output, models, training data: fail before training, a line per mistake
    registry = ModelRegistry.at(config.models_dir)
    settings = config.score
    train = config.train
    retrained = None
    plan, extra_folder = plan_retrain(config, registry, force_retrain)
    if plan.action == "skip":
        logger.info("retrain skipped: %s", plan.reason)
    else:
        logger.info("%s: %s", "fine-tuning the current model" if plan.action == "fine_tune" else "retraining",
                    plan.reason)
        parameters = {**retrain_parameters(config), "models_dir": str(registry.root),
                      "extra_folder": str(extra_folder) if extra_folder else None}
        if plan.action == "fine_tune":
            retrained = fine_tune(data=parameters["data"], labels=parameters.get("labels"),
                                  extra_folder=parameters["extra_folder"], models_dir=parameters["models_dir"],
                                  base_version=plan.base_version, max_minutes=train.max_minutes,
                                  tolerance=train.tolerance, started_at=started_at,
                                  real_photos=parameters.get("real_photos"), public_tolerance=train.public_tolerance)
            note = (retrained.get("gate") or {}).get("user_holdout", {}).get("note")
            if note:
                logger.warning("user holdout: %s", note)
        else:
            retrained = retrain(**parameters)
        if not retrained["unfinished"] and not retrained["promoted"]:
            record_refused(registry, plan, retrained["version"], retrained["reason"])
            logger.info("recorded the refusal of %s: the same data and recipe are not trained again; "
                        "`ferbatch nightly --force-retrain` trains it anyway", retrained["version"])
    create_markdown_artifact(nightly_markdown(plan, retrained), key="nightly-retrain",
                             description="What the nightly retrain did and why")
    scored = score(settings, config.sentiment, models_dir=str(registry.root))
    return {"retrain": {"ran": plan.action != "skip", "action": plan.action, "reason": plan.reason,
                        "result": retrained},
            "score": scored}
