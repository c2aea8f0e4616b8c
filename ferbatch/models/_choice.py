"""Which version ships: labelled real photos decide, FER2013 PublicTest is a floor.

The rule (docs/model.md, "Choosing the shipped model"):
- A version is ranked by its **real-photo score**: the mean, over the labelled sets measured on both cards, of
  (sentiment accuracy + macro recall) / 2: what a dashboard reads (positive / neutral / negative shares) and
  whether every expression is read at all.
- On sets of photos **in the wild**, a version must not read more or fewer photos as negative than there are by
  more than NEGATIVE_BIAS_CAP (share read Angry/Disgust/Fear/Sad minus the true share). Posed sets are not
  capped: their faces are posed to be read as expressions, and every model under-reads them a little.
- Its PublicTest accuracy may be at most PUBLIC_FLOOR below the current model's: FER2013 guards against a
  collapse, it does not rank.
- Without real-photo figures on both cards the PublicTest gate decides, as it always did.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from ferbatch.classes import CLASS_NAMES
from ferbatch.config import DEFAULT_SENTIMENT_MAP

NEGATIVE_BIAS_CAP = 0.08
PUBLIC_FLOOR = 0.02
# The emotions the default sentiment map calls negative: the bias is read against it, whatever a site's map says.
NEGATIVE_CLASSES = tuple(name for name in CLASS_NAMES if DEFAULT_SENTIMENT_MAP[name] == "negative")


def in_the_wild(set_name: str) -> bool:
    """A labelled set counts as photos in the wild when its folder's name says so (dev_wild, my_wild_photos)."""
    return "wild" in set_name.lower()


def negative_bias(metrics: Mapping) -> float:
    """Share of a set's photos read negative minus the share that are, from its confusion matrix (rows: true
    class; columns: predicted class, then "no face", which is never negative); NaN for figures without one."""
    if "confusion_matrix" not in metrics:
        return float(metrics.get("negative_bias", math.nan))
    matrix = np.asarray(metrics["confusion_matrix"], dtype=np.int64)
    negative = [CLASS_NAMES.index(name) for name in NEGATIVE_CLASSES]
    total = max(int(matrix.sum()), 1)
    return float((matrix[:, negative].sum() - matrix[negative, :].sum()) / total)


def real_photo_sets(card: Mapping) -> dict[str, dict]:
    """{set name: figures} measured on a card (`ferbatch evaluate --real-photos`, the retrain flow), or {}."""
    sets = (card.get("real_photos") or {}).get("sets") or {}
    return {name: m for name, m in sets.items() if isinstance(m, Mapping) and {"sent3", "macro_recall"} <= set(m)}


def real_photo_score(card: Mapping, sets: list[str] | None = None) -> float | None:
    """Mean over `sets` (default: every set on the card) of (sent3 + macro recall) / 2; None without figures."""
    measured = real_photo_sets(card)
    names = [name for name in (measured if sets is None else sets) if name in measured]
    if not names:
        return None
    return float(np.mean([(measured[name]["sent3"] + measured[name]["macro_recall"]) / 2 for name in names]))


@dataclass(frozen=True)
class Standing:
    """How a candidate stands against the current model by the rule above."""

    eligible: bool
    reason: str
    score: float | None = None
    current_score: float | None = None


def real_photo_standing(candidate: Mapping, current: Mapping, candidate_public: float, current_public: float,
                        tolerance: float = 0.0) -> Standing | None:
    """The rule's verdict on `candidate` against `current`, or None when the two share no measured set (the
    PublicTest gate then decides)."""
    shared = sorted(set(real_photo_sets(candidate)) & set(real_photo_sets(current)))
    if not shared:
        return None
    sets = real_photo_sets(candidate)
    for name in shared:
        bias = negative_bias(sets[name])
        if in_the_wild(name) and not abs(bias) <= NEGATIVE_BIAS_CAP:  # an unknown bias is no pass either
            return Standing(False, f"its negative-share bias on {name} is {bias:+.3f} (share read negative "
                                   f"minus the true share; cap +-{NEGATIVE_BIAS_CAP:.2f})")
    if candidate_public < current_public - PUBLIC_FLOOR:
        return Standing(False, f"PublicTest accuracy {candidate_public:.4f} is more than {PUBLIC_FLOOR * 100:.0f} "
                               f"points below the current {current_public:.4f}")
    score, current_score = real_photo_score(candidate, shared), real_photo_score(current, shared)
    assert score is not None and current_score is not None
    names = ", ".join(shared)
    if score + tolerance < current_score:
        return Standing(False, f"real-photo score {score:.4f} is below the current {current_score:.4f} ({names})",
                        score, current_score)
    return Standing(True, f"real-photo score {score:.4f} is not below the current {current_score:.4f} ({names}); "
                          f"PublicTest {candidate_public:.4f} within the floor", score, current_score)
