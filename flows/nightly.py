"""The `nightly` flow: retrain when the training data or recipe changed, then score every configured folder."""

from __future__ import annotations

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from ferbatch import retraining
from ferbatch.config import load_config, retrain_parameters, score_parameters
from ferbatch.registry import ModelRegistry, default_models_dir
from ferbatch.training import recipe
from flows.retrain import retrain
from flows.score import score

decide_retrain = task(retraining.retrain_decision, name="check-training-data", cache_policy=NO_CACHE)


@flow(name="nightly", log_prints=True)
def nightly(config_file: str | None = None, force_retrain: bool = False) -> dict:
    """Retrain (or skip), then score with whatever model is current. Reads ferbatch.toml (see `ferbatch config`)."""
    logger = get_run_logger()
    config, source = load_config(config_file)
    logger.info("configuration: %s", source or "defaults and FERBATCH_* environment")
    registry = ModelRegistry(config.models_dir or default_models_dir())
    score_kwargs = score_parameters(config, models_dir=str(registry.root))  # no folders: fail before training
    train = config.train
    retrained = None
    if train.data is None:
        logger.info("retrain skipped: no train.data configured")
        decision = retraining.RetrainDecision(False, "no train.data configured")
    else:
        decision = decide_retrain(registry, recipe(train.preset), train.data, train.labels, train.extra_folder,
                                  force_retrain)
        if decision.retrain:
            logger.info("retraining: %s", decision.reason)
            retrained = retrain(**{**retrain_parameters(config), "models_dir": str(registry.root)})
        else:
            logger.info("retrain skipped: %s", decision.reason)
    scored = score(**score_kwargs)
    return {"retrain": {"ran": decision.retrain, "reason": decision.reason, "result": retrained}, "score": scored}
