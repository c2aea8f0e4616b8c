"""Classification metrics for a FER model, with and without horizontal-flip test-time augmentation."""

from __future__ import annotations

import keras
import numpy as np

from ferbatch.classes import CLASS_NAMES, NUM_CLASSES
from ferbatch.scoring import KerasClassifier
from ferbatch.training._data import FerData

EVAL_SPLITS = ("PublicTest", "PrivateTest")


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Rows are true classes, columns predicted classes."""
    return np.bincount(
        np.asarray(y_true, dtype=np.int64) * NUM_CLASSES + np.asarray(y_pred, dtype=np.int64),
        minlength=NUM_CLASSES * NUM_CLASSES,
    ).reshape(NUM_CLASSES, NUM_CLASSES)


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    """Accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix."""
    matrix = confusion_matrix(y_true, y_pred)
    true_positive = np.diag(matrix).astype("float64")
    predicted = matrix.sum(axis=0)
    actual = matrix.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, true_positive / predicted, 0.0)
        recall = np.where(actual > 0, true_positive / actual, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    present = actual > 0
    return {
        "n": int(matrix.sum()),
        "accuracy": float(true_positive.sum() / max(matrix.sum(), 1)),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "per_class": {
            name: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(actual[i]),
            }
            for i, name in enumerate(CLASS_NAMES)
        },
        "confusion_matrix": matrix.tolist(),
    }


def evaluate(model: keras.Model, faces: np.ndarray, labels: np.ndarray, flip_tta: bool = True) -> dict[str, dict]:
    """Metrics on one split, as {"plain": ..., "flip_tta": ...}, through the same classifier scoring uses.
    flip_tta=False measures "plain" only, in half the time."""
    classifier = KerasClassifier(model, version="evaluated")
    plain = classifier.predict(faces)
    metrics = {"plain": classification_metrics(labels, plain.argmax(axis=1))}
    if flip_tta:
        flipped = classifier.predict(np.asarray(faces)[:, :, ::-1])
        metrics["flip_tta"] = classification_metrics(labels, ((plain + flipped) / 2).argmax(axis=1))
    return metrics


def evaluate_splits(model: keras.Model, data: FerData, flip_tta: bool = True) -> dict[str, dict]:
    """Metrics on each evaluation split present in `data` (PublicTest for selection, PrivateTest to report)."""
    results = {}
    for split in EVAL_SPLITS:
        faces, labels = data.subset(split)
        if len(labels):
            results[split] = evaluate(model, faces, labels, flip_tta)
    return results
