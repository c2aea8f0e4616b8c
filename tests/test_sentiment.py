import numpy as np
import pytest

from ferbatch.errors import FerbatchError
from ferbatch.scoring import SentimentMap, parse_sentiment_map


def test_default_score_is_happy_minus_the_negative_emotions():
    probabilities = np.array([[0.1, 0.05, 0.05, 0.5, 0.1, 0.1, 0.1]])  # An Di Fe Ha Sa Su Ne
    assert SentimentMap().score(probabilities)[0] == pytest.approx(0.5 - 0.3)


def test_default_labels_follow_the_documented_map():
    labels = SentimentMap().label(np.arange(7))
    assert labels.tolist() == ["negative", "negative", "negative", "positive", "negative", "neutral", "neutral"]


def test_overrides_change_one_emotion_and_the_score_with_it():
    sentiment = SentimentMap.with_overrides(parse_sentiment_map("surprise=positive"))
    assert sentiment.mapping["Surprise"] == "positive"
    probabilities = np.zeros((1, 7))
    probabilities[0, 5] = 1.0
    assert sentiment.score(probabilities)[0] == 1.0


@pytest.mark.parametrize("text", ["Joy=positive", "Happy=great", "Happy"])
def test_bad_overrides_are_clear_errors(text):
    with pytest.raises(FerbatchError, match="sentiment map"):
        SentimentMap.with_overrides(parse_sentiment_map(text))
