"""A model judged on labelled real photos, through the scoring path: decode, detect, frame, classify.

A labelled set is a folder with `labels.csv` (`file,label`: a path relative to the folder's `images/`, or to
the folder itself when it has none, and a FER2013 class name in any case). Each photo is scored exactly as
`ferbatch score` scores it, and its verdict is the images table's `emotion`: the argmax of the area-weighted
mean of its faces' probabilities. A photo with no face found counts as wrong.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from ferbatch.classes import CLASS_NAMES, NUM_CLASSES
from ferbatch.config import ScoreSettings
from ferbatch.errors import DataError
from ferbatch.models import ModelRegistry, negative_bias
from ferbatch.scoring import (
    Components,
    EmotionClassifier,
    FaceDetector,
    ImageFile,
    PipelineSettings,
    SentimentMap,
    image_probabilities,
)
from ferbatch.scoring._pipeline import score_images

NO_FACE = -1  # the prediction of a photo in which no face was found


@dataclass(frozen=True)
class LabelledPhotos:
    """A labelled set of real photos: files relative to `root`, labels as FER2013 class indices."""

    name: str
    root: Path
    files: tuple[Path, ...]
    labels: np.ndarray


def load_labelled_photos(folder: str | Path) -> LabelledPhotos:
    """The photos and labels of a folder holding `labels.csv`; one-line `DataError` for anything unusable."""
    folder = Path(folder)
    labels_csv = folder / "labels.csv"
    if not labels_csv.is_file():
        raise DataError(f"{folder}: no labels.csv (a labelled photo set has one: file,label)")
    try:
        frame = pd.read_csv(labels_csv, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{labels_csv}: not a readable CSV file ({str(exc).splitlines()[0]})") from exc
    if not {"file", "label"} <= set(frame.columns):
        raise DataError(f"{labels_csv}: needs the columns file,label")
    by_name = {name.lower(): i for i, name in enumerate(CLASS_NAMES)}
    unknown = sorted(set(frame["label"].str.strip().str.lower()) - set(by_name))
    if unknown:
        raise DataError(f"{labels_csv}: label(s) {', '.join(unknown)} are not FER2013 classes "
                        f"({', '.join(CLASS_NAMES)})")
    root = folder / "images" if (folder / "images").is_dir() else folder
    files = tuple(Path(f) for f in frame["file"].str.strip())
    missing = [f for f in files if not (root / f).is_file()]
    if missing:
        raise DataError(f"{root}: {len(missing)} labelled file(s) missing, e.g. {missing[0]}")
    labels = np.array([by_name[label.strip().lower()] for label in frame["label"]], dtype=np.int64)
    return LabelledPhotos(folder.resolve().name, root, files, labels)


def predict_photos(photos: LabelledPhotos, detector: FaceDetector, classifier: EmotionClassifier,
                   settings: PipelineSettings) -> np.ndarray:
    """(N, 7) image-level probabilities, one row per photo in label order; NaN rows where no face was found."""
    files = [ImageFile(photos.root, path, None, None) for path in photos.files]
    out = np.full((len(files), NUM_CLASSES), np.nan)
    for i, scored in enumerate(score_images(files, detector, classifier, settings)):
        if scored.prepared.faces:
            out[i] = image_probabilities(scored.prepared.faces, scored.probabilities)
    return out


def real_photo_metrics(labels: np.ndarray, probabilities: np.ndarray, sentiment: SentimentMap | None = None) -> dict:
    """found, acc7, sent3, macro recall (over the classes the set has), per-class recall and the confusion
    matrix (rows: true class; columns: predicted class, then "no face")."""
    sentiment = sentiment or SentimentMap()
    found = ~np.isnan(probabilities).any(axis=1)
    predicted = np.where(found, np.nan_to_num(probabilities).argmax(axis=1), NO_FACE)
    matrix = np.zeros((NUM_CLASSES, NUM_CLASSES + 1), dtype=np.int64)
    np.add.at(matrix, (labels, np.where(predicted == NO_FACE, NUM_CLASSES, predicted)), 1)
    support = matrix.sum(axis=1)
    recall = {name: float(matrix[i, i] / support[i]) for i, name in enumerate(CLASS_NAMES) if support[i]}
    true_sentiment = sentiment.label(labels)
    predicted_sentiment = np.where(found, sentiment.label(np.maximum(predicted, 0)), None)
    n = max(len(labels), 1)
    return {
        "n": len(labels),
        "found": float(found.mean()) if len(labels) else 0.0,
        "acc7": float((predicted == labels).sum() / n),
        "sent3": float((predicted_sentiment == true_sentiment).sum() / n),
        "macro_recall": float(np.mean(list(recall.values()))) if recall else 0.0,
        "recall": recall,
        "support": {name: int(support[i]) for i, name in enumerate(CLASS_NAMES) if support[i]},
        "confusion_matrix": matrix.tolist(),
        "confusion_columns": [*CLASS_NAMES, "no face"],
        "negative_bias": negative_bias({"confusion_matrix": matrix}),
    }


def evaluate_real_photos(folders: Sequence[str | Path], detector: FaceDetector, classifier: EmotionClassifier,
                         settings: PipelineSettings, sentiment: SentimentMap | None = None) -> dict[str, dict]:
    """{set name: metrics} for each labelled folder, scored through the scoring pipeline."""
    results = {}
    for folder in folders:
        photos = load_labelled_photos(folder)
        results[photos.name] = real_photo_metrics(
            photos.labels, predict_photos(photos, detector, classifier, settings), sentiment)
    return results


def real_photos_markdown(results: dict[str, dict]) -> str:
    """One table of the headline figures and, per set, its per-class recall and confusion matrix."""
    lines = ["| set | n | found | acc7 | sent3 | macro recall | negative bias |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {name} | {m['n']} | {m['found']:.3f} | {m['acc7']:.3f} | {m['sent3']:.3f} | "
              f"{m['macro_recall']:.3f} | {negative_bias(m):+.3f} |" for name, m in results.items()]
    for name, m in results.items():
        lines += ["", f"{name}: recall " + ", ".join(f"{c} {r:.2f}" for c, r in m["recall"].items()), "",
                  "| true \\ predicted | " + " | ".join(c[:3] for c in m["confusion_columns"]) + " |",
                  "|---" * (len(m["confusion_columns"]) + 1) + "|"]
        lines += [f"| {CLASS_NAMES[i]} | " + " | ".join(str(v) for v in row) + " |"
                  for i, row in enumerate(m["confusion_matrix"]) if sum(row)]
    return "\n".join(lines)


def real_photos_on_card(registry: ModelRegistry, version: str, folders: Sequence[str | Path],
                        settings: ScoreSettings) -> dict:
    """Score the labelled sets with `version` as `ferbatch score` would with `settings` (default sentiment map),
    and record the figures
    on its card under "real_photos" (a set measured before is replaced, others kept). Returns that entry."""
    components = Components.for_run(settings, version, registry.root)
    pipeline = PipelineSettings.from_settings(settings)
    # The default sentiment map, so figures on different cards compare whatever a site's map says.
    classifier = components.classifier()
    results = evaluate_real_photos(folders, components.detector(), classifier, pipeline)
    measured = {"measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
                "framing": {"crop_margin": pipeline.crop_margin, "crop_shift": pipeline.crop_shift,
                            "level_above": pipeline.level_above, "light": pipeline.light},
                "detector_size": settings.detector_size, "flip_tta": settings.flip_tta,
                "precision": classifier.precision}
    entry = registry.card(version).get("real_photos") or {"sets": {}}
    entry = {"sets": {**entry["sets"], **{name: {**m, **measured} for name, m in results.items()}}}
    registry.record_on_card(version, "real_photos", entry)
    return {"sets": results}
