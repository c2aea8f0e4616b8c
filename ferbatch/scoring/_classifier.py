"""Emotion classifiers behind a small interface: `predict(faces) -> probabilities`.

`KerasClassifier` wraps a registered model; tests inject fakes with the same two members.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from ferbatch.classes import IMAGE_SIZE, NUM_CLASSES
from ferbatch.config import DEFAULT_BATCH_SIZE


@runtime_checkable
class EmotionClassifier(Protocol):
    version: str

    def predict(self, faces: np.ndarray) -> np.ndarray:
        """(N, 48, 48) uint8 faces -> (N, 7) probabilities in FER2013 class order."""
        ...


class KerasClassifier:
    """A registered `model.keras`, called in batches of at most `batch_size` faces."""

    def __init__(self, model, version: str, batch_size: int = DEFAULT_BATCH_SIZE, flip_tta: bool = False) -> None:
        self.model, self.version = model, version
        self.batch_size, self.flip_tta = batch_size, flip_tta

    @classmethod
    def from_registry(
        cls, models_dir: str | Path, version: str | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
        flip_tta: bool = False,
    ) -> KerasClassifier:
        from ferbatch.models import ModelRegistry

        registry = ModelRegistry(models_dir)
        chosen = registry.resolve(version)
        return cls(registry.load_model(chosen), chosen, batch_size, flip_tta).warmed_up()

    def warmed_up(self) -> KerasClassifier:
        """Trace the model before the first real batch: Keras traces the first batch size, then a shape-generic
        function at the second, so two tiny batches take both traces (about 1 s for the 3-network model) off
        the first chunk's critical path."""
        for n in (1, 2):
            self.model.predict_on_batch(np.zeros((n, IMAGE_SIZE, IMAGE_SIZE, 1), np.float32))
        return self

    def _predict_batches(self, x: np.ndarray) -> np.ndarray:
        # Batches of at most batch_size at their own size: padding a chunk's last batch to a fixed shape cost
        # up to 40% more work (650 faces in chunks of about 208 padded to 256), and Keras traces a shape-generic
        # function after the second size, so exact sizes add no tracing.
        out = np.empty((len(x), NUM_CLASSES), dtype=np.float32)
        for start in range(0, len(x), self.batch_size):
            chunk = x[start : start + self.batch_size, :, :, None].astype(np.float32)
            out[start : start + len(chunk)] = np.asarray(self.model.predict_on_batch(chunk))
        return out

    def predict(self, faces: np.ndarray) -> np.ndarray:
        faces = np.asarray(faces)
        if len(faces) == 0:
            return np.zeros((0, NUM_CLASSES), dtype=np.float32)
        probabilities = self._predict_batches(faces)
        if self.flip_tta:
            probabilities = (probabilities + self._predict_batches(faces[:, :, ::-1])) / 2
        return probabilities
