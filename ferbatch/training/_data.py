"""Load and validate FER2013-format data (`emotion,pixels,Usage`) into uint8 arrays.

Every row is checked; invalid rows are dropped and counted by reason. A file that cannot be used at all
raises `DataError` with one line naming the file and the problem.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import pandas as pd

from ferbatch.classes import IMAGE_SIZE, NUM_CLASSES, SPLITS
from ferbatch.errors import DataError
from ferbatch.models._registry import file_sha256
from ferbatch.scoring import ImageError, ImageFile, read_bytes
from ferbatch.training._labelled import face_from_image, ignored, load_labelled_folder

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("emotion", "pixels", "Usage")
N_PIXELS = IMAGE_SIZE * IMAGE_SIZE

# FER+ vote columns, in file order, and the FER2013 class each maps to (None: not one of the 7 classes).
FERPLUS_COLUMNS = (
    "neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt", "unknown", "NF",
)
_FERPLUS_TO_FER = {
    "neutral": 6, "happiness": 3, "surprise": 5, "sadness": 4, "anger": 0, "disgust": 1, "fear": 2,
}


@dataclass(frozen=True)
class FerData:
    """Validated faces. `split` holds an index into SPLITS; `source_row` the row's 0-based position in the CSV."""

    images: np.ndarray  # (N, 48, 48) uint8
    labels: np.ndarray  # (N,) uint8, FER2013 class order
    split: np.ndarray  # (N,) uint8 index into SPLITS
    source_row: np.ndarray  # (N,) int64; -1 for faces added from an extra folder
    n_source_rows: int
    rejected: dict[str, int] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)  # file name -> sha256
    label_source: str = "fer2013"
    # (N, 7) float32 training targets that replace the one-hot labels (FER+ votes, a teacher's mix); None: labels
    targets: np.ndarray | None = None
    # The extra folder's held-out faces (never trained on), measured every epoch beside PublicTest.
    extra_holdout: tuple[np.ndarray, np.ndarray] | None = None

    def subset(self, split_name: str) -> tuple[np.ndarray, np.ndarray]:
        """Images and labels of one split (Training, PublicTest or PrivateTest)."""
        mask = self.split == SPLITS.index(split_name)
        return self.images[mask], self.labels[mask]

    def training_extra(self) -> np.ndarray:
        """(N_train,) bool: which Training faces came from an extra folder, in `subset("Training")` order."""
        return self.source_row[self.split == SPLITS.index("Training")] < 0

    def training_targets(self) -> np.ndarray | None:
        """The soft targets of the Training faces, in `subset("Training")` order, or None (train on labels)."""
        return None if self.targets is None else self.targets[self.split == SPLITS.index("Training")]

    def class_counts(self) -> dict[str, list[int]]:
        """Per split, the number of faces of each class in CLASS_NAMES order."""
        return {
            name: np.bincount(self.labels[self.split == i], minlength=NUM_CLASSES).tolist()
            for i, name in enumerate(SPLITS)
        }

    def summary(self) -> dict:
        """A JSON-ready description for logs, data reports and model cards."""
        return {
            "rows_read": self.n_source_rows,
            "rows_used": len(self.labels),
            "rejected": dict(self.rejected),
            "label_source": self.label_source,
            "class_counts": self.class_counts(),
            "sources": dict(self.sources),
        }


def folder_digest(folder: Path) -> str:
    """sha256 over the relative paths and contents of every labelled face file under `folder`, in sorted order
    (top-level files and "_" folders such as _unsorted/ are not labelled faces: see _labelled)."""
    from ferbatch.config import DEFAULT_MAX_BYTES
    from ferbatch.scoring import ImageError, ImageFile
    from ferbatch.scoring._images import file_id

    digest = hashlib.sha256()
    for file in sorted(p for p in Path(folder).rglob("*") if p.is_file() and not ignored(p.relative_to(folder))):
        digest.update(file.relative_to(folder).as_posix().encode("utf-8", "surrogateescape") + b"\0")
        try:  # what loading reads: a file over the size limit (a 20 GB sparse file) is refused unread, by its size
            digest.update(bytes.fromhex(file_id(ImageFile(file.parent, Path(file.name), None, None),
                                                DEFAULT_MAX_BYTES)))
        except ImageError as exc:
            digest.update(str(exc).encode())
    return digest.hexdigest()


def source_digests(
    path: str | Path, ferplus_labels: str | Path | None = None, extra_folder: str | Path | None = None
) -> dict[str, str]:
    """The `sources` entry `load_training_data` would record, computed without parsing anything."""
    for source in (path, ferplus_labels):
        if source is not None and not Path(source).is_file():
            raise DataError(f"{source}: no such file")
    if extra_folder is not None and not Path(extra_folder).is_dir():
        raise DataError(f"{extra_folder}: no such folder")
    sources = {Path(path).name: file_sha256(Path(path))}
    if ferplus_labels is not None:
        sources[Path(ferplus_labels).name] = file_sha256(Path(ferplus_labels))
    if extra_folder is not None:
        sources[f"{Path(extra_folder).name}/"] = folder_digest(Path(extra_folder))
    return sources


def _read_csv(path: Path, what: str) -> pd.DataFrame:
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: the file is empty")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, compression="infer")
    except pd.errors.EmptyDataError as exc:
        raise DataError(f"{path}: the file is empty") from exc
    except (pd.errors.ParserError, UnicodeDecodeError, OSError, EOFError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(f"{path}: not a readable {what} CSV file ({reason})") from exc
    return frame


def _parse_pixels(pixels: list[str], out: np.ndarray) -> np.ndarray:
    """Parse space-separated pixel strings into `out`; return the per-row reason code (0 = valid)."""
    reasons = np.zeros(len(pixels), dtype=np.uint8)
    for i, text in enumerate(pixels):
        try:
            values = np.fromstring(text, dtype=np.int32, sep=" ")
        except ValueError:  # a token that is not an integer
            reasons[i] = 1
            continue
        if values.size != N_PIXELS:
            reasons[i] = 1
        elif values.min() < 0 or values.max() > 255:
            reasons[i] = 2
        else:
            out[i] = values.reshape(IMAGE_SIZE, IMAGE_SIZE)
    return reasons


def load_fer2013(path: str | Path) -> FerData:
    """Read and validate a FER2013 CSV (plain or .gz). Invalid rows are dropped and counted by reason."""
    path = Path(path)
    frame = _read_csv(path, "FER2013")
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise DataError(
            f"{path}: not a FER2013 CSV: missing column(s) {', '.join(missing)} "
            f"(expected {','.join(REQUIRED_COLUMNS)})"
        )
    n_rows = len(frame)
    if n_rows == 0:
        raise DataError(f"{path}: the file has a header but no rows")

    emotion = frame["emotion"].str.strip()
    usage = frame["Usage"].str.strip()
    emotion_ok = emotion.str.fullmatch(r"[0-6]").to_numpy(dtype=bool)
    usage_ok = usage.isin(SPLITS).to_numpy()

    images = np.zeros((n_rows, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    pixel_reason = _parse_pixels(frame["pixels"].tolist(), images)

    rejected: Counter[str] = Counter()
    rejected["emotion_not_0_to_6"] = int((~emotion_ok).sum())
    rejected["usage_not_a_split"] = int((emotion_ok & ~usage_ok).sum())
    rest = emotion_ok & usage_ok
    rejected["pixels_not_2304_integers"] = int((rest & (pixel_reason == 1)).sum())
    rejected["pixels_outside_0_255"] = int((rest & (pixel_reason == 2)).sum())
    valid = rest & (pixel_reason == 0)
    if not valid.any():
        raise DataError(f"{path}: no valid rows among {n_rows} ({_format_reasons(rejected)})")

    data = FerData(
        images=images[valid],
        labels=emotion[valid].astype(np.uint8).to_numpy(),
        split=usage[valid].map({name: i for i, name in enumerate(SPLITS)}).astype(np.uint8).to_numpy(),
        source_row=np.flatnonzero(valid).astype(np.int64),
        n_source_rows=n_rows,
        rejected={k: v for k, v in rejected.items() if v},
        sources={path.name: file_sha256(path)},
    )
    log.info("%s: %d rows, %d valid, rejected: %s", path, n_rows, valid.sum(), _format_reasons(data.rejected))
    return data


def _format_reasons(rejected: dict[str, int]) -> str:
    parts = [f"{reason}={count}" for reason, count in rejected.items() if count]
    return ", ".join(parts) if parts else "none"


def ferplus_majority(votes: np.ndarray, is_face: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """FER2013 labels from FER+ vote counts (columns in FERPLUS_COLUMNS order).

    Returns (labels, reason) where reason is "" for usable rows, else why the row is dropped:
    not a face, or a majority of unknown, not-a-face or contempt. Ties go to the first column.
    """
    majority = votes.argmax(axis=1)
    to_fer = np.array([_FERPLUS_TO_FER.get(name, -1) for name in FERPLUS_COLUMNS])
    labels = to_fer[majority]
    names = np.array(FERPLUS_COLUMNS)
    reason = np.where(labels >= 0, "", np.char.add("ferplus_majority_", names[majority]))
    reason = np.where(is_face, reason, "ferplus_not_a_face")
    return labels, reason


def _read_ferplus_votes(data: FerData, path: Path) -> tuple[np.ndarray, np.ndarray]:
    """(votes, is_face) per source row of the FER2013 file, checked to be in the same row order."""
    frame = _read_csv(path, "FER+")
    missing = [c for c in ("Usage", "Image name", *FERPLUS_COLUMNS) if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: not a FER+ label file: missing column(s) {', '.join(missing)}")
    if len(frame) != data.n_source_rows:
        raise DataError(
            f"{path}: has {len(frame)} rows but the FER2013 file has {data.n_source_rows}; "
            "FER+ labels must be in the same row order"
        )
    try:
        votes = frame[list(FERPLUS_COLUMNS)].replace("", "0").astype(np.int64).to_numpy()
    except ValueError as exc:
        raise DataError(f"{path}: vote columns must hold integers ({exc})") from exc
    usage_matches = (frame["Usage"].str.strip().to_numpy()[data.source_row] == np.array(SPLITS)[data.split])
    if not usage_matches.all():
        raise DataError(
            f"{path}: Usage differs from the FER2013 file on {int((~usage_matches).sum())} rows; "
            "the files are not in the same order"
        )
    return votes, frame["Image name"].str.strip().to_numpy() != ""


def apply_ferplus_labels(data: FerData, path: str | Path) -> FerData:
    """Replace labels with FER+ majority votes (same row order as the FER2013 file)."""
    path = Path(path)
    votes, is_face = _read_ferplus_votes(data, path)
    labels, reason = ferplus_majority(votes, is_face)
    keep_rows = reason[data.source_row] == ""
    rejected = Counter(data.rejected)
    rejected.update(Counter(reason[data.source_row][~keep_rows].tolist()))
    log.info("FER+ labels from %s: kept %d of %d faces", path, keep_rows.sum(), len(keep_rows))
    return replace(
        data,
        images=data.images[keep_rows],
        labels=labels[data.source_row][keep_rows].astype(np.uint8),
        split=data.split[keep_rows],
        source_row=data.source_row[keep_rows],
        rejected=dict(rejected),
        sources={**data.sources, path.name: file_sha256(path)},
        label_source="ferplus",
    )


def ferplus_vote_targets(votes: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each face's FER+ vote distribution over the 7 FER2013 classes, as (N, 7) float32 training targets.

    Contempt, unknown and not-a-face votes are left out and the emotion votes renormalised; a face with no
    emotion vote at all keeps its FER2013 label (one-hot).
    """
    to_fer = [_FERPLUS_TO_FER.get(name) for name in FERPLUS_COLUMNS]
    emotion = np.zeros((len(votes), NUM_CLASSES), dtype=np.float32)
    for column, fer_class in enumerate(to_fer):
        if fer_class is not None:
            emotion[:, fer_class] += votes[:, column]
    totals = emotion.sum(axis=1, keepdims=True)
    one_hot = np.eye(NUM_CLASSES, dtype=np.float32)[labels]
    return np.where(totals > 0, emotion / np.maximum(totals, 1), one_hot).astype(np.float32)


def apply_ferplus_votes(data: FerData, path: str | Path) -> FerData:
    """Train towards FER+ vote distributions; keep FER2013 labels for selection and evaluation.

    Training faces that FER+ judged not a face are dropped (their votes say nothing of an emotion); test
    faces all stay, so PublicTest and PrivateTest figures compare with every other recipe's.
    """
    path = Path(path)
    votes, is_face = _read_ferplus_votes(data, path)
    training = data.split == SPLITS.index("Training")
    keep = ~training | is_face[data.source_row]
    rejected = Counter(data.rejected)
    if (~keep).any():
        rejected["ferplus_not_a_face"] += int((~keep).sum())
    log.info("FER+ vote targets from %s: %d training faces judged not a face dropped", path, (~keep).sum())
    return replace(
        data,
        images=data.images[keep],
        labels=data.labels[keep],
        split=data.split[keep],
        source_row=data.source_row[keep],
        rejected=dict(rejected),
        sources={**data.sources, path.name: file_sha256(path)},
        label_source="ferplus_votes",
        targets=ferplus_vote_targets(votes[data.source_row[keep]], data.labels[keep]),
    )


def with_teacher(data: FerData, teacher_probabilities: np.ndarray, weight: float,
                 extra_weight: float | None = None) -> FerData:
    """Mix a teacher's (N_train, 7) probabilities on the Training faces into their targets with `weight`
    (`extra_weight` on faces from an extra folder, when given)."""
    training = data.split == SPLITS.index("Training")
    if len(teacher_probabilities) != training.sum():
        raise DataError(f"the teacher scored {len(teacher_probabilities)} faces, not the {training.sum()} "
                        "training faces")
    targets = (data.targets.copy() if data.targets is not None
               else np.eye(NUM_CLASSES, dtype=np.float32)[data.labels])
    weights = np.full((int(training.sum()), 1), weight, np.float32)
    if extra_weight is not None:
        weights[data.training_extra()] = extra_weight
    targets[training] = (1 - weights) * targets[training] + weights * teacher_probabilities.astype(np.float32)
    return replace(data, targets=targets)


def read_face_crop(path: Path) -> np.ndarray | None:
    """A 48x48 grey uint8 face from an image file (a crop resized, a photo's largest detected face), or None."""
    try:
        return face_from_image(read_bytes(ImageFile(path.parent, Path(path.name), None, None)))[0]
    except ImageError:
        return None


def add_extra_folder(data: FerData, folder: str | Path) -> FerData:
    """Append labelled faces from class-named subfolders (e.g. Happy/, sad/) to Training, less the user holdout
    (every fifth face by content hash, never trained on; see _labelled)."""
    folder = Path(folder)
    labelled = load_labelled_folder(folder)
    faces, labels = labelled.training()
    held_out = labelled.held_out()
    rejected = Counter(data.rejected)
    rejected.update(labelled.rejected)
    log.info("extra folder %s: %d faces added to Training, %d held out, %d rejected", folder, len(faces),
             int(labelled.holdout.sum()), sum(labelled.rejected.values()))
    n = len(faces)
    return replace(
        data,
        images=np.concatenate([data.images, faces]),
        labels=np.concatenate([data.labels, labels]),
        split=np.concatenate([data.split, np.zeros(n, dtype=np.uint8)]),
        source_row=np.concatenate([data.source_row, np.full(n, -1, dtype=np.int64)]),
        rejected=dict(rejected),
        sources={**data.sources, f"{folder.name}/": folder_digest(folder)},
        targets=None if data.targets is None else np.concatenate(
            [data.targets, np.eye(NUM_CLASSES, dtype=np.float32)[np.array(labels, dtype=np.uint8)]]),
        extra_holdout=held_out if len(held_out[1]) else None,
    )


def load_training_data(
    path: str | Path,
    ferplus_labels: str | Path | None = None,
    extra_folder: str | Path | None = None,
    targets: str = "labels",
) -> FerData:
    """The full loading recipe used by training: FER2013 CSV, optional FER+ labels (majority labels, or vote
    distributions as targets when `targets="ferplus_votes"`), optional extra faces."""
    data = load_fer2013(path)
    if targets == "ferplus_votes":
        if ferplus_labels is None:
            raise DataError("this recipe trains on FER+ vote distributions: give the FER+ file "
                            "(--labels ferplus FILE)")
        data = apply_ferplus_votes(data, ferplus_labels)
    elif ferplus_labels is not None:
        data = apply_ferplus_labels(data, ferplus_labels)
    if extra_folder is not None:
        data = add_extra_folder(data, extra_folder)
    for name in SPLITS[:2]:
        if not (data.split == SPLITS.index(name)).any():
            raise DataError(f"{path}: no valid {name} rows; training needs Training and PublicTest")
    return data
