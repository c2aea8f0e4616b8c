"""Map FER emotions to sentiment: a label (positive / negative / neutral) and a score in [-1, 1]."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np

from ferbatch.classes import CLASS_NAMES
from ferbatch.errors import FerbatchError

SENTIMENTS = ("positive", "negative", "neutral")
DEFAULT_MAP: dict[str, str] = {
    "Angry": "negative",
    "Disgust": "negative",
    "Fear": "negative",
    "Happy": "positive",
    "Sad": "negative",
    "Surprise": "neutral",
    "Neutral": "neutral",
}


@dataclass(frozen=True)
class SentimentMap:
    """Which sentiment each emotion counts as.

    sentiment_score = P(positive emotions) - P(negative emotions), so with the default map
    P(Happy) - (P(Angry) + P(Disgust) + P(Fear) + P(Sad)).
    """

    mapping: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_MAP))

    def __post_init__(self) -> None:
        unknown = set(self.mapping) - set(CLASS_NAMES)
        if unknown:
            raise FerbatchError(f"sentiment map: unknown emotion(s) {', '.join(sorted(unknown))}")
        missing = set(CLASS_NAMES) - set(self.mapping)
        if missing:
            raise FerbatchError(f"sentiment map: no sentiment for {', '.join(sorted(missing))}")
        bad = {k: v for k, v in self.mapping.items() if v not in SENTIMENTS}
        if bad:
            raise FerbatchError(f"sentiment map: {bad} (sentiments are {', '.join(SENTIMENTS)})")

    @classmethod
    def with_overrides(cls, text: str | None) -> SentimentMap:
        """The default map changed by 'Emotion=sentiment,...' (e.g. 'Surprise=positive')."""
        mapping = dict(DEFAULT_MAP)
        for item in filter(None, (part.strip() for part in (text or "").split(","))):
            emotion, sep, sentiment = item.partition("=")
            if not sep:
                raise FerbatchError(f"sentiment map: {item!r} is not Emotion=sentiment")
            by_lower = {name.lower(): name for name in CLASS_NAMES}
            mapping[by_lower.get(emotion.strip().lower(), emotion.strip())] = sentiment.strip().lower()
        return cls(mapping)

    def to_json(self) -> str:
        return json.dumps(self.mapping, sort_keys=False)

    def _weights(self, sentiment: str) -> np.ndarray:
        return np.array([self.mapping[name] == sentiment for name in CLASS_NAMES], dtype="float32")

    def score(self, probabilities: np.ndarray) -> np.ndarray:
        """Per row: P(positive emotions) - P(negative emotions), in [-1, 1]."""
        signed = self._weights("positive") - self._weights("negative")
        return np.clip(np.asarray(probabilities, dtype="float32") @ signed, -1.0, 1.0)

    def label(self, emotion_index: np.ndarray) -> np.ndarray:
        """The sentiment of each top emotion."""
        names = np.array([self.mapping[name] for name in CLASS_NAMES], dtype=object)
        return names[np.asarray(emotion_index, dtype=np.int64)]
