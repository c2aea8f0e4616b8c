"""What PublicTest-chosen class biases (ferbatch.training.fit_class_bias) would do to a registered model.

    python benchmarks/experiments/calibration.py --data ../shared/data/fer2013.csv.gz [--model VERSION]

Fits the biases on PublicTest exactly as the retrain flow does, then reports accuracy, macro-F1 and
per-class recall on PublicTest and PrivateTest, before and after. PrivateTest is only reported here.
A model whose card already records a calibration is measured as it is (biases on top of biases).
"""

from __future__ import annotations

import argparse
import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

from ferbatch.classes import CLASS_NAMES
from ferbatch.models import ModelRegistry
from ferbatch.scoring import KerasClassifier
from ferbatch.training import biased_predictions, classification_metrics, fit_class_bias, load_fer2013


def _summary(labels: np.ndarray, predicted: np.ndarray) -> dict:
    metrics = classification_metrics(labels, predicted)
    return {"accuracy": round(metrics["accuracy"], 4), "macro_f1": round(metrics["macro_f1"], 4),
            "recall": {c: round(metrics["per_class"][c]["recall"], 3) for c in CLASS_NAMES}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--model", default=None)
    parser.add_argument("--models-dir", default=None)
    args = parser.parse_args()

    registry = ModelRegistry.at(args.models_dir)
    version = registry.resolve(args.model)
    classifier = KerasClassifier(registry.load_model(version), version)
    data = load_fer2013(args.data)
    predicted = {}
    for split in ("PublicTest", "PrivateTest"):
        faces, labels = data.subset(split)
        predicted[split] = (classifier.predict(faces), labels)
    bias = fit_class_bias(*predicted["PublicTest"])
    report = {"model": version, "logit_bias": dict(zip(CLASS_NAMES, bias.round(2).tolist(), strict=True))}
    for split, (probabilities, labels) in predicted.items():
        report[split] = {"before": _summary(labels, probabilities.argmax(axis=1)),
                         "after": _summary(labels, biased_predictions(probabilities, bias))}
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
