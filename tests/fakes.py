"""Stand-ins for the detector and the classifier, injected through the same small interfaces."""

from __future__ import annotations

import time

import numpy as np

from ferbatch.scoring import Face


class FakeDetector:
    """One face per 100 px of image width (none below 100 px), each a little larger than the last."""

    name = "fake-detector"

    def detect(self, rgb: np.ndarray, scale: float = 1.0) -> list[Face]:
        count = round(rgb.shape[1] / scale) // 100
        return [Face(x=10 + 100 * i, y=10, w=40 + 10 * i, h=40 + 10 * i, score=0.99) for i in range(count)]


class FakeClassifier:
    """Puts 0.7 on the class picked by the face index within its call, records each call's size."""

    def __init__(self, version: str = "fake-v1", delay: float = 0.0) -> None:
        self.version, self.delay = version, delay
        self.calls: list[int] = []

    def predict(self, faces: np.ndarray) -> np.ndarray:
        self.calls.append(len(faces))
        if self.delay:
            time.sleep(self.delay)
        probabilities = np.full((len(faces), 7), 0.05, dtype=np.float32)
        probabilities[np.arange(len(faces)), np.arange(len(faces)) % 7] = 0.7
        return probabilities


class PixelClassifier:
    """Probabilities that depend only on each face's pixels, whatever else shares its call."""

    def __init__(self, version: str = "pixel-v1") -> None:
        self.version = version

    def predict(self, faces: np.ndarray) -> np.ndarray:
        means = np.asarray(faces, dtype=np.float32).reshape(len(faces), -1).mean(axis=1)
        logits = np.stack([np.cos(means / 17.0 + k) for k in range(7)], axis=1)
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)


class FakeComponents:
    """A run's detector and classifier loader, as `ferbatch.scoring.Components` builds them; counts loads."""

    def __init__(self, classifier=None, detector=None) -> None:
        self._classifier = classifier or FakeClassifier()
        self._detector = detector or FakeDetector()
        self.model_version = self._classifier.version
        self.loads: list[int] = []

    def detector(self):
        return self._detector

    def classifier(self):
        self.loads.append(1)
        return self._classifier
