from __future__ import annotations

import numpy as np
import pytest

from ferbatch.models import create_model
from ferbatch.scoring import KerasClassifier
from ferbatch.training import classification_metrics, confusion_matrix, evaluate


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
    plain = KerasClassifier(model, "v", batch_size=8).predict(random_faces)
    mirrored = KerasClassifier(model, "v", batch_size=8).predict(random_faces[:, :, ::-1])
    with_tta = KerasClassifier(model, "v", batch_size=8, flip_tta=True).predict(random_faces)
    np.testing.assert_allclose(with_tta, (plain + mirrored) / 2, atol=1e-6)


def test_fixed_size_batches_give_the_same_probabilities_as_one_plain_predict(random_faces):
    model = create_model("tiny")
    batched = KerasClassifier(model, "v", batch_size=5).predict(random_faces[:13])  # 5 + 5 + 3
    direct = model.predict(random_faces[:13, ..., None].astype("float32"), verbose=0)
    np.testing.assert_allclose(batched, direct, atol=1e-5)
    assert batched.shape == (13, 7)
    assert KerasClassifier(model, "v").predict(random_faces[:0]).shape == (0, 7)


def test_evaluate_reports_plain_and_flip_tta_metrics(random_faces):
    labels = np.arange(16) % 7
    metrics = evaluate(create_model("tiny"), random_faces, labels)
    assert set(metrics) == {"plain", "flip_tta"}
    assert metrics["plain"]["n"] == 16 and sum(map(sum, metrics["flip_tta"]["confusion_matrix"])) == 16
