"""Per-class logit biases chosen on PublicTest, to lift the rare classes (Disgust, Fear) without losing accuracy.

A network trained on FER2013's skewed classes under-predicts Disgust (1.5% of Training). Adding a bias b
to the logits moves each class's decision boundary: softmax(z + b) instead of softmax(z). The bias is
folded into the final Dense layer, so the registered model.keras is still standard layers and any reader
(scoring, an independent evaluation) gets the calibrated output by loading it.
"""

from __future__ import annotations

import keras
import numpy as np

from ferbatch.classes import NUM_CLASSES
from ferbatch.training._evaluation import classification_metrics

BIAS_GRID = np.round(np.linspace(-1.5, 1.5, 31), 2)


def biased_predictions(probabilities: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """The classes a model predicts once `bias` is added to its logits (argmax of log p + bias)."""
    return (np.log(np.clip(probabilities, 1e-12, 1.0)) + bias).argmax(axis=1)


# How much of the guard set's accuracy a calibration may give up (see fit_class_bias).
GUARD_DROP = 0.005


def fit_class_bias(probabilities: np.ndarray, labels: np.ndarray, sweeps: int = 3,
                   fixed: tuple[int, ...] = (), guard: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Biases on log-probabilities that maximise macro-F1 without lowering accuracy, by coordinate ascent.

    Each sweep tries every grid value for each class in turn (but the `fixed` ones, whose bias stays 0) and
    keeps a change only when it raises macro-F1 and keeps accuracy at or above the unbiased accuracy.
    guard: (probabilities, labels) of a second held-out set (faces in the wild) whose accuracy may fall by at
    most GUARD_DROP: PublicTest's labels call many ordinary faces Sad or Angry, and a bias fitted on them alone
    takes back what faces in the wild taught. Deterministic; zeros if nothing helps.
    """
    def score(bias: np.ndarray) -> tuple[float, float]:
        metrics = classification_metrics(labels, biased_predictions(probabilities, bias))
        return metrics["accuracy"], metrics["macro_f1"]

    def guard_accuracy(bias: np.ndarray) -> float:
        return 1.0 if guard is None else float(np.mean(biased_predictions(guard[0], bias) == guard[1]))

    bias = np.zeros(NUM_CLASSES)
    floor, best_f1 = score(bias)
    guard_floor = guard_accuracy(bias) - GUARD_DROP
    for _ in range(sweeps):
        changed = False
        for cls in (c for c in range(NUM_CLASSES) if c not in fixed):
            for value in BIAS_GRID:
                trial = bias.copy()
                trial[cls] = value
                accuracy, f1 = score(trial)
                if accuracy >= floor and f1 > best_f1 + 1e-9 and guard_accuracy(trial) >= guard_floor:
                    bias, best_f1, changed = trial, f1, True
        if not changed:
            break
    return bias


def _logits_layers(model: keras.Model) -> list[keras.layers.Layer]:
    """The `logits` layer of a network, or of every network inside a serving wrapper."""
    found = []
    for layer in model.layers:
        if layer.name == "logits":
            found.append(layer)
        elif isinstance(layer, keras.Model):
            found += _logits_layers(layer)
    return found


def apply_class_bias(model: keras.Model, bias: np.ndarray) -> None:
    """Fold `bias` into the model's `logits` layer, so its output becomes softmax(logits + bias).

    In a serving wrapper every member gets the bias: exact for one member (its views then average
    softmax(z + b)), and for an ensemble the biases act on each member's logits before the average.
    """
    layers = _logits_layers(model)
    if not layers:
        raise ValueError(f"model {model.name!r} has no layer named 'logits' to calibrate")
    for layer in layers:
        kernel, current = layer.get_weights()
        layer.set_weights([kernel, (current + np.asarray(bias)).astype(current.dtype)])
