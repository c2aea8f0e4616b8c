"""The real detector and classifier, built from plain picklable settings once per process.

A Dask worker receives a `Components` value with every shard and builds the YuNet detector and the
Keras classifier the first time; later shards on the same worker reuse them.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ferbatch.config import ScoreSettings
from ferbatch.scoring._classifier import KerasClassifier
from ferbatch.scoring._detection import DetectorSettings, YuNetDetector, default_detector_path


@dataclass(frozen=True)
class Components:
    models_dir: str
    model_version: str
    detector_path: str
    detector_settings: DetectorSettings
    batch_size: int
    flip_tta: bool
    precision: str  # as the settings ask ("auto" too): each process resolves it for its own CPU

    @classmethod
    def for_run(cls, settings: ScoreSettings, model: str | None = None,
                models_dir: str | Path | None = None) -> Components:
        """The registry's model (`model`, else the current one) and the YuNet detector, as `settings` ask."""
        from ferbatch.models import ModelRegistry

        registry = ModelRegistry.at(models_dir)
        version = registry.resolve(model)
        registry.verify_model(version)  # a corrupt model fails before the scan, also when nothing is new
        return cls(str(registry.root), version, str(default_detector_path(registry.root)),
                   DetectorSettings.from_settings(settings), settings.batch_size, settings.flip_tta, settings.precision)

    def detector(self) -> YuNetDetector:
        return _detector(self.detector_path, self.detector_settings)

    def classifier(self) -> KerasClassifier:
        return _classifier(self.models_dir, self.model_version, self.batch_size, self.flip_tta, self.precision)


@lru_cache(maxsize=2)
def _detector(path: str, settings: DetectorSettings) -> YuNetDetector:
    return YuNetDetector(Path(path), settings)


@lru_cache(maxsize=1)  # one model in memory per process; a new version replaces the old one
def _classifier(models_dir: str, version: str, batch_size: int, flip_tta: bool, precision: str) -> KerasClassifier:
    return KerasClassifier.from_registry(models_dir, version, batch_size=batch_size, flip_tta=flip_tta,
                                         precision=precision)
