"""The `nightly` flow: retrain when the training data or recipe changed, then score every configured folder."""

from __future__ import annotations

from ferbatch_flows.retrain import retrain
from ferbatch_flows.score import score
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from ferbatch.config import load_config, retrain_parameters
from ferbatch.interrupts import keep_deadline
from ferbatch.models import ModelRegistry
from ferbatch.training import RetrainDecision, recipe, retrain_decision

decide_retrain = task(retrain_decision, name="check-training-data", cache_policy=NO_CACHE)


@flow(name="nightly", log_prints=True)
def nightly(config_file: str | None = None, force_retrain: bool = False) -> dict:
    """Retrain (or skip), then score with whatever model is current. Reads ferbatch.toml (see `ferbatch config`)."""
    keep_deadline()  # SIGTERM during the flow (a retrain included) still ends `ferbatch` within seconds
    logger = get_run_logger()
    config, source = load_config(config_file)
    logger.info("configuration: %s", source or "defaults and FERBATCH_* environment")
    registry = ModelRegistry.at(config.models_dir)
    settings = config.score.require_folders()  # no folders: fail before training
    train = config.train
    retrained = None
    if train.data is None:
        logger.info("retrain skipped: no train.data configured")
        decision = RetrainDecision(False, "no train.data configured")
    else:
        decision = decide_retrain(registry, recipe(train.preset), train.data, train.labels, train.extra_folder,
                                  force_retrain)
        if decision.retrain:
            logger.info("retraining: %s", decision.reason)
            retrained = retrain(**{**retrain_parameters(config), "models_dir": str(registry.root)})
        else:
            logger.info("retrain skipped: %s", decision.reason)
    scored = score(settings, config.sentiment, models_dir=str(registry.root))
    return {"retrain": {"ran": decision.retrain, "reason": decision.reason, "result": retrained}, "score": scored}
