"""One configuration for the CLI, the flows and the deployments: `ferbatch.toml` plus `FERBATCH_*` overrides.

`ScoreSettings` is the [score] section and, unchanged, the `score` flow's settings and `run_scoring`'s.
"""

from ferbatch.config._config import (
    FerbatchConfig,
    ScheduleSection,
    TrainSection,
    annotated_toml,
    config_path,
    load_config,
    retrain_parameters,
    to_toml,
    write_config_template,
)
from ferbatch.config._score import (
    CLASSIFIER_PRECISIONS,
    DEFAULT_BATCH_SIZE,
    DEFAULT_MAX_BYTES,
    DEFAULT_MAX_PIXELS,
    DEFAULT_SENTIMENT_MAP,
    SENTIMENTS,
    ScoreSettings,
)

__all__ = [
    "CLASSIFIER_PRECISIONS", "DEFAULT_BATCH_SIZE", "DEFAULT_MAX_BYTES", "DEFAULT_MAX_PIXELS", "DEFAULT_SENTIMENT_MAP",
    "SENTIMENTS",
    "FerbatchConfig",
    "ScheduleSection", "ScoreSettings", "TrainSection", "annotated_toml", "config_path", "load_config",
    "retrain_parameters", "to_toml", "write_config_template",
]
