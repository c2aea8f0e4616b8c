"""Typed rows of the `images` and `faces` tables, and a run's summary: what the Parquet schemas hold, by name.

Each row class lists its table's columns in schema order (checked at import), so a row that does not fit
its table fails here rather than in a writer halfway through a run.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import date, datetime
from pathlib import Path

from ferbatch.config import SENTIMENTS
from ferbatch.reports._schemas import FACES_SCHEMA, IMAGES_SCHEMA

# The `folder` value of images directly in a scanned folder (not in a subfolder): visible in every BI chart,
# where an empty string is a blank group. Runs before this label wrote ''; readers show both as this label.
TOP_LEVEL_FOLDER = "(top level)"


@dataclass(frozen=True, slots=True)
class ImageRow:
    """One image of a run: `ok` (area-weighted mean of its faces), `no_face` or `error`."""

    run_id: str
    run_date: date
    scored_at: datetime
    root: str
    path: str
    folder: str
    image_id: str | None
    bytes: int | None
    mtime: datetime | None
    width: int | None
    height: int | None
    taken_at: datetime | None
    status: str  # ok | no_face | error
    error: str | None
    n_faces: int
    emotion: str | None
    sentiment: str | None
    sentiment_score: float | None
    p_angry: float | None
    p_disgust: float | None
    p_fear: float | None
    p_happy: float | None
    p_sad: float | None
    p_surprise: float | None
    p_neutral: float | None
    model_version: str
    detector: str

    def record(self) -> dict:
        return {name: getattr(self, name) for name in _IMAGE_COLUMNS}


@dataclass(frozen=True, slots=True)
class FaceRow:
    """One detected face of an `ok` image."""

    run_id: str
    run_date: date
    image_id: str
    root: str
    path: str
    folder: str
    taken_at: datetime | None
    face_index: int
    x: int
    y: int
    w: int
    h: int
    det_score: float
    p_angry: float
    p_disgust: float
    p_fear: float
    p_happy: float
    p_sad: float
    p_surprise: float
    p_neutral: float
    emotion: str
    sentiment: str
    sentiment_score: float
    model_version: str

    def record(self) -> dict:
        return {name: getattr(self, name) for name in _FACE_COLUMNS}


_IMAGE_COLUMNS = tuple(f.name for f in fields(ImageRow))
_FACE_COLUMNS = tuple(f.name for f in fields(FaceRow))
if list(_IMAGE_COLUMNS) != IMAGES_SCHEMA.names or list(_FACE_COLUMNS) != FACES_SCHEMA.names:
    raise AssertionError("ImageRow / FaceRow no longer match IMAGES_SCHEMA / FACES_SCHEMA")


def sentiment_shares(counts: Mapping[str, int], n_ok: int) -> dict[str, float | None]:
    """{sentiment: share of the ok images} (None without ok images): the one place shares are computed."""
    return {sentiment: (counts.get(sentiment, 0) / n_ok if n_ok else None) for sentiment in SENTIMENTS}


@dataclass
class RunSummary:
    """What a run did: counts, timings and committed files; `to_dict` is its JSON form (flow result, --json)."""

    run_id: str
    run_date: date
    out_dir: Path
    model_version: str | None
    n_found: int = 0
    n_skipped: int = 0
    n_scored: int = 0
    n_faces: int = 0
    status_counts: Counter = field(default_factory=Counter)
    sentiment_counts: Counter = field(default_factory=Counter)
    error_reasons: Counter = field(default_factory=Counter)
    files: dict[str, list[Path]] = field(default_factory=dict)  # table -> committed parts
    # Seconds per stage summed over images; decode and detect run in threads, so these add up to more
    # than the wall time when threads overlap.
    stage_seconds: Counter = field(default_factory=Counter)
    seconds: float = 0.0
    aggregates: list[dict] = field(default_factory=list)
    # A model new to the folder: {"model_version", "previous": {model: photos}, "photos", "rescored",
    # "estimated_seconds"}; None when every current row is by this run's model.
    model_change: dict | None = None

    def add(self, row: ImageRow) -> None:
        self.n_scored += 1
        self.n_faces += row.n_faces
        self.status_counts[row.status] += 1
        if row.sentiment:
            self.sentiment_counts[row.sentiment] += 1
        if row.error:
            self.error_reasons[row.error.split(":")[0]] += 1

    def merge(self, other: RunSummary) -> None:
        self.n_scored += other.n_scored
        self.n_faces += other.n_faces
        self.status_counts.update(other.status_counts)
        self.sentiment_counts.update(other.sentiment_counts)
        self.error_reasons.update(other.error_reasons)
        self.stage_seconds.update(other.stage_seconds)

    @property
    def images_per_second(self) -> float:
        return self.n_scored / self.seconds if self.seconds else 0.0

    def to_dict(self) -> dict:
        """JSON-ready: the score flow's return value, its artifact and the CLI's table read this."""
        n_ok = self.status_counts.get("ok", 0)
        shares = sentiment_shares(self.sentiment_counts, n_ok)
        return {
            "run_id": self.run_id,
            "run_date": self.run_date.isoformat(),
            "out_dir": str(self.out_dir),
            "model_version": self.model_version,
            "images_found": self.n_found,
            "already_scored": self.n_skipped,
            "scored": self.n_scored,
            "ok": n_ok,
            "no_face": self.status_counts.get("no_face", 0),
            "error": self.status_counts.get("error", 0),
            "faces": self.n_faces,
            "share_positive": shares["positive"],
            "share_negative": shares["negative"],
            "share_neutral": shares["neutral"],
            "top_errors": dict(self.error_reasons.most_common(5)),
            "seconds": round(self.seconds, 2),
            "stage_seconds": {stage: round(seconds, 3) for stage, seconds in self.stage_seconds.items()},
            "images_per_second": round(self.images_per_second, 2),
            "files": {table: [str(path) for path in paths] for table, paths in self.files.items()},
            "model_change": self.model_change,
        }
