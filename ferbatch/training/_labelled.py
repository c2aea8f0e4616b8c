"""Your own labelled faces: a folder of class folders (Happy/, Sad/, ...) holding face crops or whole photos.

Rules (documented in docs/retraining.md):
- Folders whose names start with "_" (`_unsorted/`, `_skip/`) and files at the top level (the export's CSV)
  are not labelled faces: ignored by training and by the folder's digest.
- A file no larger than CROP_MAX_SIDE on its long side is a face crop and is resized to 48x48. A larger file is
  a photo: the face detector finds its faces and the largest is cropped with the scoring framing; a photo with
  no face found is skipped and counted.
- Every HOLDOUT_EVERY-th face, chosen by the sha256 of the file's bytes (so a file keeps its side however the
  folder grows, and the same picture copied twice lands on the same side), is the user holdout: never trained
  on, it is what the nightly fine-tune's gate checks besides PublicTest.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from ferbatch.classes import CLASS_NAMES, IMAGE_SIZE
from ferbatch.errors import DataError
from ferbatch.scoring import IMAGE_SUFFIXES, ImageError, ImageFile, decode, read_bytes

log = logging.getLogger(__name__)

HOLDOUT_EVERY = 5
CROP_MAX_SIDE = 128  # `ferbatch label export` writes 96 px crops; FER2013 faces are 48 px


def ignored(relative: Path) -> bool:
    """True for what is not a labelled face: top-level files and anything under a folder named "_..."."""
    return len(relative.parts) < 2 or relative.parts[0].startswith("_")


def is_holdout(content_sha256: str) -> bool:
    """The fixed user-holdout split: every fifth face by the hash of its file content."""
    return int(content_sha256[:16], 16) % HOLDOUT_EVERY == 0


def class_folders(folder: str | Path) -> list[tuple[Path, int]]:
    """(subfolder, class index) for each class folder; "_" folders are skipped, other unknown names refused."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder")
    by_name = {name.lower(): i for i, name in enumerate(CLASS_NAMES)}
    subfolders = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("_"))
    unknown = [p.name for p in subfolders if p.name.lower() not in by_name]
    if unknown:
        raise DataError(f"{folder}: subfolder(s) {', '.join(unknown)} are not class names ({', '.join(CLASS_NAMES)}"
                        "; folders starting with _ are ignored)")
    return [(sub, by_name[sub.name.lower()]) for sub in subfolders]


def with_labelled_faces(folder: str | Path | None) -> str | Path | None:
    """`folder` when a class folder in it holds an image file, else None: a labelling folder with nothing sorted
    yet (only _unsorted/ and the export CSV) is no training data yet, and no error either."""
    if folder is None or not Path(folder).is_dir():
        return folder  # a missing folder stays an error that names it
    for sub, _label in class_folders(folder):
        if any(f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES for f in sub.rglob("*")):
            return folder
    log.info("%s: no labelled faces in its class folders yet", folder)
    return None


@lru_cache(maxsize=1)
def _detector():
    from ferbatch.config import ScoreSettings
    from ferbatch.scoring import DetectorSettings, YuNetDetector, default_detector_path

    return YuNetDetector(default_detector_path(), DetectorSettings.from_settings(ScoreSettings()))


def scoring_framing() -> tuple[float, float | None]:
    """(crop margin, eye-levelling threshold) of the scoring pipeline, so training crops match scoring's."""
    from ferbatch.config import ScoreSettings
    from ferbatch.scoring import PipelineSettings

    settings = PipelineSettings.from_settings(ScoreSettings())
    return settings.crop_margin, settings.level_above


def face_from_image(data: bytes, detector_factory: Callable = _detector) -> tuple[np.ndarray | None, str]:
    """(48x48 grey face, "") from image bytes, or (None, reason): "unreadable" or "no_face"."""
    try:
        rgb = decode(data).pixels
    except ImageError:
        return None, "unreadable"
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    if max(grey.shape) > CROP_MAX_SIDE:
        faces = detector_factory().detect(rgb)
        if not faces:
            return None, "no_face"
        from ferbatch.scoring import crop_face

        margin, level_above = scoring_framing()
        return crop_face(grey, max(faces, key=lambda f: f.area), margin, level_above=level_above), ""
    interpolation = cv2.INTER_AREA if min(grey.shape) > IMAGE_SIZE else cv2.INTER_LINEAR
    return cv2.resize(grey, (IMAGE_SIZE, IMAGE_SIZE), interpolation=interpolation), ""


@dataclass(frozen=True)
class LabelledFaces:
    """The faces of a labelled folder, each marked training or holdout."""

    images: np.ndarray  # (N, 48, 48) uint8
    labels: np.ndarray  # (N,) uint8, FER2013 class order
    holdout: np.ndarray  # (N,) bool
    files: tuple[str, ...]  # relative paths, for logs
    rejected: dict[str, int] = field(default_factory=dict)

    def training(self) -> tuple[np.ndarray, np.ndarray]:
        return self.images[~self.holdout], self.labels[~self.holdout]

    def held_out(self) -> tuple[np.ndarray, np.ndarray]:
        return self.images[self.holdout], self.labels[self.holdout]

    def summary(self) -> dict:
        return {"faces": len(self.labels), "training": int((~self.holdout).sum()),
                "holdout": int(self.holdout.sum()), "rejected": dict(self.rejected)}


def load_labelled_folder(folder: str | Path, detector_factory: Callable = _detector) -> LabelledFaces:
    """Every readable face in the class folders, split into training and the fixed holdout."""
    folder = Path(folder)
    faces, labels, holdout, files = [], [], [], []
    rejected: Counter[str] = Counter()
    for sub, label in class_folders(folder):
        for file in sorted(sub.rglob("*")):
            if not file.is_file() or file.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                data = read_bytes(ImageFile(file.parent, Path(file.name), None, None))
            except (ImageError, OSError):
                rejected["extra_folder_unreadable_image"] += 1
                continue
            face, reason = face_from_image(data, detector_factory)
            if face is None:
                rejected[f"extra_folder_{'unreadable_image' if reason == 'unreadable' else 'no_face_found'}"] += 1
                continue
            faces.append(face)
            labels.append(label)
            holdout.append(is_holdout(hashlib.sha256(data).hexdigest()))
            files.append(file.relative_to(folder).as_posix())
    if not faces:
        raise DataError(f"{folder}: no readable face images in its class subfolders")
    result = LabelledFaces(np.stack(faces), np.array(labels, np.uint8), np.array(holdout, bool), tuple(files),
                           dict(rejected))
    summary = result.summary()
    log.info("labelled faces in %s: %d for training, %d held out, rejected %s", folder, summary["training"],
             summary["holdout"], dict(rejected) or "none")
    return result
