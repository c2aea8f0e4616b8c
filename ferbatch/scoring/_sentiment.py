"""Map FER emotions to sentiment: a label (positive / negative / neutral) and a score in [-1, 1]."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from ferbatch.classes import CLASS_NAMES
from ferbatch.config import DEFAULT_SENTIMENT_MAP, SENTIMENTS
from ferbatch.errors import FerbatchError


@dataclass(frozen=True)
class SentimentMap:
    """Which sentiment each emotion counts as.

    sentiment_score = P(positive emotions) - P(negative emotions), so with the default map
    P(Happy) - (P(Angry) + P(Disgust) + P(Fear) + P(Sad)).
    """

    mapping: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_SENTIMENT_MAP))

    def __post_init__(self) -> None:
        unknown = set(self.mapping) - set(CLASS_NAMES)
        if unknown:
            raise FerbatchError(f"sentiment map: unknown emotion(s) {', '.join(sorted(unknown))}")
        missing = set(CLASS_NAMES) - set(self.mapping)
        if missing:
            raise FerbatchError(f"sentiment map: no sentiment for {', '.join(sorted(missing))}")
        bad = {k: v for k, v in self.mapping.items() if v not in SENTIMENTS}
        if bad:
            named = ", ".join(f"{k}={v}: {v!r} is not a sentiment" for k, v in sorted(bad.items()))
            raise FerbatchError(f"sentiment map: {named} (use {', '.join(SENTIMENTS[:-1])} or {SENTIMENTS[-1]})")

    @classmethod
    def with_overrides(cls, overrides: Mapping[str, str] | None) -> SentimentMap:
        """The default map changed by {emotion: sentiment} (any case, e.g. {'surprise': 'positive'})."""
        by_lower = {name.lower(): name for name in CLASS_NAMES}
        mapping = dict(DEFAULT_SENTIMENT_MAP)
        for emotion, sentiment in (overrides or {}).items():
            mapping[by_lower.get(emotion.strip().lower(), emotion.strip())] = sentiment.strip().lower()
        return cls(mapping)


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


def parse_sentiment_map(text: str | None) -> dict[str, str]:
    """'Emotion=sentiment,...' (the --sentiment-map option) as a dict; checked by SentimentMap.with_overrides."""
    overrides = {}
    for item in filter(None, (part.strip() for part in (text or "").split(","))):
        emotion, sep, sentiment = item.partition("=")
        if not sep:
            raise FerbatchError(f"sentiment map: {item!r} is not Emotion=sentiment")
        overrides[emotion.strip()] = sentiment.strip()
    return overrides
