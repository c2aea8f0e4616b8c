from __future__ import annotations

import numpy as np
import pytest

from ferbatch.evaluation import classification_metrics, confusion_matrix, predict_probabilities
from ferbatch.model import create_model


def test_confusion_matrix_rows_are_true_classes():
    matrix = confusion_matrix(np.array([0, 0, 3, 6]), np.array([0, 3, 3, 0]))
    assert matrix[0, 0] == 1 and matrix[0, 3] == 1 and matrix[3, 3] == 1 and matrix[6, 0] == 1
    assert matrix.sum() == 4


def test_metrics_match_a_hand_computed_example():
    y_true = np.array([0, 0, 0, 3, 3, 6])
    y_pred = np.array([0, 0, 3, 3, 3, 0])
    m = classification_metrics(y_true, y_pred)
    assert m["accuracy"] == pytest.approx(4 / 6)
    angry = m["per_class"]["Angry"]
    assert angry["precision"] == pytest.approx(2 / 3)
    assert angry["recall"] == pytest.approx(2 / 3)
    happy = m["per_class"]["Happy"]
    assert happy["precision"] == pytest.approx(2 / 3) and happy["recall"] == pytest.approx(1.0)
    assert m["per_class"]["Neutral"]["f1"] == 0.0
    # Macro-F1 averages the classes present in y_true: Angry 2/3, Happy 0.8, Neutral 0.
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.8 + 0.0) / 3)
    assert m["per_class"]["Disgust"]["support"] == 0


def test_flip_tta_averages_the_image_and_its_mirror(random_faces):
    model = create_model("tiny")
    plain = predict_probabilities(model, random_faces)
    mirrored = predict_probabilities(model, random_faces[:, :, ::-1])
    np.testing.assert_allclose(
        predict_probabilities(model, random_faces, flip_tta=True), (plain + mirrored) / 2, atol=1e-6
    )
