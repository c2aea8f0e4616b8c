"""Copies of scored images with face boxes and labels drawn, for a person to check results by eye."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from ferbatch.classes import CLASS_NAMES
from ferbatch.scoring._images import ANNOTATIONS_MARKER, ImageError, decode, read_bytes
from ferbatch.scoring._pipeline import ScoredImage
from ferbatch.scoring._sentiment import SentimentMap

_COLOURS = {"positive": (60, 180, 75), "negative": (40, 40, 220), "neutral": (200, 160, 40)}  # BGR


def draw(rgb: np.ndarray, scored: ScoredImage, sentiments: list[str]) -> np.ndarray:
    """BGR image with a box and 'Emotion 87%' per face, coloured by sentiment."""
    canvas = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    thickness = max(2, round(max(canvas.shape[:2]) / 500))
    for face, probabilities, sentiment in zip(scored.prepared.faces, scored.probabilities, sentiments, strict=True):
        colour = _COLOURS[sentiment]
        top = int(probabilities.argmax())
        x, y, w, h = (round(v) for v in (face.x, face.y, face.w, face.h))
        cv2.rectangle(canvas, (x, y), (x + w, y + h), colour, thickness)
        label = f"{CLASS_NAMES[top]} {probabilities[top]:.0%}"
        scale = max(0.5, w / 250)
        (tw, th), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        cv2.rectangle(canvas, (x, max(0, y - th - 8)), (x + tw + 6, y), colour, -1)
        cv2.putText(canvas, label, (x + 3, y - 5), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thickness)
    return canvas


def write_annotated(scored: ScoredImage, sentiments: list[str], out_dir: str | Path) -> Path | None:
    """Write `out_dir/<relative path>.jpg`; images that could not be decoded are skipped."""
    file = scored.prepared.file
    try:
        rgb = decode(read_bytes(file, max_bytes=file.bytes or 0)).pixels  # as scored: a file grown since is left
    except ImageError:
        return None
    target = Path(out_dir) / file.path.with_suffix(".jpg")
    target.parent.mkdir(parents=True, exist_ok=True)
    ok, encoded = cv2.imencode(".jpg", draw(rgb, scored, sentiments), [cv2.IMWRITE_JPEG_QUALITY, 90])
    if ok:
        target.write_bytes(encoded.tobytes())
    return target if ok else None


def annotator(out_dir: str | Path, sentiment: SentimentMap) -> Callable[[ScoredImage], None]:
    """An `on_image` callback that writes an annotated copy of every image with faces.

    Marks `out_dir` with ANNOTATIONS_MARKER first, so no later scan scores the copies.
    """
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    marker = Path(out_dir) / ANNOTATIONS_MARKER
    if not marker.exists():
        marker.write_text("Annotated copies by `ferbatch score --annotate` or `ferbatch analyze --annotate`; "
                          "ferbatch never scans this folder.\n")

    def annotate(scored: ScoredImage) -> None:
        if scored.prepared.faces:
            write_annotated(scored, list(sentiment.label(scored.probabilities.argmax(axis=1))), out_dir)

    return annotate
