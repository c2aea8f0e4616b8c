"""Choosing the shipped model: labelled real photos rank, the negative-share bias of photos in the wild is
capped, FER2013 PublicTest is a floor; without real-photo figures the PublicTest gate decides."""

from __future__ import annotations

import numpy as np
import pytest

from ferbatch.classes import CLASS_NAMES, NUM_CLASSES
from ferbatch.models import (
    NEGATIVE_BIAS_CAP,
    ModelRegistry,
    create_model,
    in_the_wild,
    negative_bias,
    real_photo_score,
    real_photo_standing,
)
from ferbatch.training import real_photo_metrics

SAD, NEUTRAL, HAPPY = (CLASS_NAMES.index(name) for name in ("Sad", "Neutral", "Happy"))


def _metrics(labels: list[int], predicted: list[int | None]) -> dict:
    probabilities = np.full((len(labels), NUM_CLASSES), np.nan)
    for row, p in enumerate(predicted):
        if p is not None:
            probabilities[row] = np.eye(NUM_CLASSES)[p]
    return real_photo_metrics(np.array(labels), probabilities)


def _card(public: float, **sets: dict) -> dict:
    split = {"plain": {"accuracy": public}}
    return {"architecture": "tiny", "metrics": {"PublicTest": split, "PrivateTest": split},
            "real_photos": {"sets": sets}}


def test_negative_bias_is_the_share_read_negative_minus_the_true_share():
    # 10 photos, 2 truly Sad; read: 5 Sad (3 of them Neutral faces), one face not found (never negative).
    labels = [SAD, SAD] + [NEUTRAL] * 6 + [HAPPY] * 2
    predicted = [SAD, None, SAD, SAD, SAD, NEUTRAL, NEUTRAL, NEUTRAL, SAD, HAPPY]
    m = _metrics(labels, predicted)
    assert m["negative_bias"] == pytest.approx(5 / 10 - 2 / 10)
    assert negative_bias(m) == pytest.approx(0.3)
    assert negative_bias(_metrics(labels, labels)) == 0


def test_the_score_is_the_mean_of_sentiment_accuracy_and_macro_recall_over_the_sets():
    good = _metrics([NEUTRAL, HAPPY, SAD, SAD], [NEUTRAL, HAPPY, SAD, SAD])
    half = _metrics([NEUTRAL, HAPPY, SAD, SAD], [NEUTRAL, HAPPY, NEUTRAL, HAPPY])
    card = _card(0.6, posed=good, other=half)
    assert real_photo_score(card, ["posed"]) == 1.0
    expected_half = (half["sent3"] + half["macro_recall"]) / 2
    assert real_photo_score(card) == pytest.approx((1.0 + expected_half) / 2)
    assert real_photo_score(_card(0.6)) is None


def test_sets_in_the_wild_are_named_so():
    assert in_the_wild("dev_wild") and in_the_wild("My_Wild_Photos") and not in_the_wild("dev_posed")


def test_a_candidate_that_overreads_negative_in_the_wild_is_refused_however_it_scores():
    labels = [NEUTRAL] * 8 + [SAD] * 2
    current = _card(0.70, dev_wild=_metrics(labels, [NEUTRAL] * 6 + [SAD] * 4))  # bias +0.2
    overreads = _card(0.70, dev_wild=_metrics(labels, [NEUTRAL] * 7 + [SAD] * 3))  # +0.1, better score
    standing = real_photo_standing(overreads, current, 0.70, 0.70)
    assert not standing.eligible and "dev_wild is +0.100" in standing.reason
    # The same figures on a posed set are not capped: the score decides.
    assert real_photo_standing(_card(0.7, posed=overreads["real_photos"]["sets"]["dev_wild"]),
                               _card(0.7, posed=current["real_photos"]["sets"]["dev_wild"]), 0.7, 0.7).eligible
    assert abs(overreads["real_photos"]["sets"]["dev_wild"]["negative_bias"]) > NEGATIVE_BIAS_CAP


def test_publictest_is_a_floor_two_points_below_the_current_model():
    labels = [NEUTRAL] * 8 + [SAD] * 2
    perfect = _metrics(labels, labels)
    worse = _metrics(labels, [NEUTRAL] * 8 + [NEUTRAL, SAD])
    current = _card(0.70, dev_wild=worse)
    assert real_photo_standing(_card(0.685, dev_wild=perfect), current, 0.685, 0.70).eligible
    floored = real_photo_standing(_card(0.675, dev_wild=perfect), current, 0.675, 0.70)
    assert not floored.eligible and "PublicTest" in floored.reason
    # A lower real-photo score is refused even with a better PublicTest.
    assert not real_photo_standing(current, _card(0.60, dev_wild=perfect), 0.70, 0.60).eligible


def test_without_a_shared_set_there_is_no_standing():
    labels = [NEUTRAL, SAD]
    assert real_photo_standing(_card(0.7, a_wild=_metrics(labels, labels)),
                               _card(0.7, b_wild=_metrics(labels, labels)), 0.7, 0.7) is None


def test_the_registry_promotes_by_real_photos_when_both_cards_have_them(tmp_path):
    tiny = create_model("tiny")
    registry = ModelRegistry(tmp_path)
    labels = [NEUTRAL] * 8 + [SAD] * 2
    current = registry.register(tiny, _card(0.70, dev_wild=_metrics(labels, [NEUTRAL] * 5 + [SAD] * 5)))
    registry.promote(current)
    # Better on real photos, 1.5 points lower on PublicTest: the old gate refused this; real photos decide now.
    better = registry.register(tiny, _card(0.685, dev_wild=_metrics(labels, labels)))
    decision = registry.promote(better)
    assert decision.promoted and "real-photo score" in decision.reason
    labels20 = [NEUTRAL] * 18 + [SAD] * 2  # one Sad face missed: bias -0.05, inside the cap
    registry.promote(registry.register(tiny, _card(0.70, dev_wild=_metrics(labels20, labels20))), force=True)
    better = registry.current_version()
    worse = registry.register(tiny, _card(0.75, dev_wild=_metrics(labels20, [NEUTRAL] * 19 + [SAD])))
    refused = registry.promote(worse)
    assert not refused.promoted and "below the current" in refused.reason
    assert registry.current_version() == better
    # No figures on the candidate: the PublicTest gate, as before.
    assert registry.promote(registry.register(tiny, _card(0.71))).promoted
    assert not registry.promote(registry.register(tiny, _card(0.69))).promoted


def test_the_card_says_what_chose_its_checkpoint():
    from ferbatch.models._registry import selection_note

    plain = selection_note({"sources": {"fer2013.csv.gz": "0" * 64}})
    beside = selection_note({"sources": {"fer2013.csv.gz": "0" * 64, "images/": "1" * 64}})
    assert plain.startswith("checkpoint chosen on PublicTest;")
    assert "held-out fifth" in beside and "held-out fifth" not in plain
    assert "real photos decide promotion" in plain
