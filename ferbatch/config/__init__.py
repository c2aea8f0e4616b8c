"""One configuration for the CLI, the flows and the deployments: `ferbatch.toml` plus `FERBATCH_*` overrides."""

from ferbatch.config._config import (
    FerbatchConfig,
    ScheduleSection,
    ScoreSection,
    TrainSection,
    config_path,
    load_config,
    retrain_parameters,
    score_parameters,
    to_toml,
)

__all__ = [
    "FerbatchConfig", "ScheduleSection", "ScoreSection", "TrainSection", "config_path", "load_config",
    "retrain_parameters", "score_parameters", "to_toml",
]
