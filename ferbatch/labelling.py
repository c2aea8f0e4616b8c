"""The labelling loop: export face crops of a scored output folder for a person to sort into class folders.

`ferbatch label export OUT --to DIR` writes the least confident (or a random sample of) faces that OUT's reports
hold as 96 px crops into DIR/_unsorted/, cut from the original image files with the scoring framing, plus one CSV
linking each crop to its image. A person moves each crop into DIR/Happy/, DIR/Sad/, ... or DIR/_skip/; with
`train.extra_folder = DIR` the next nightly run fine-tunes the model on them. The reports never hold face pixels:
only this explicit command writes any, and only into DIR.
"""

from __future__ import annotations

import csv
import io
import logging
import os
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

import numpy as np

from ferbatch.errors import FerbatchError
from ferbatch.reports import PROBABILITY_COLUMNS
from ferbatch.safe.files import create_new, os_reason
from ferbatch.safe.text import csv_cell, printable

log = logging.getLogger(__name__)

EXPORT_SIDE = 96
UNSORTED = "_unsorted"
SKIP = "_skip"


@dataclass
class ExportResult:
    folder: Path
    csv_path: Path | None
    written: list[Path] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> faces (or error rows)


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_destination(destination: Path, out_dir: Path, scanned: list[Path]) -> None:
    """Refuse a destination inside or around the output folder or a scanned folder: crops there would be scored
    as photos or mixed into the reports (and a destination such as / would be the whole file system)."""
    target = destination.resolve()
    if _inside(target, out_dir.resolve()):
        raise FerbatchError(f"{destination}: inside the output folder {out_dir}; export face crops elsewhere")
    if _inside(out_dir.resolve(), target):
        raise FerbatchError(f"{destination}: holds the output folder {out_dir}; export face crops into a folder "
                            "of their own")
    for root in scanned:
        if _inside(target, Path(root).resolve()):
            raise FerbatchError(f"{destination}: inside the scanned folder {root}; the crops would be scored as "
                                "photos. Export them elsewhere")
        if _inside(Path(root).resolve(), target):
            raise FerbatchError(f"{destination}: holds the scanned folder {root}; a scan of it would score the "
                                "crops as photos. Export them into a folder of their own")


def _read(out_dir: Path, table: str, columns: list[str]):
    from ferbatch.reports import ReportStore

    rows = ReportStore(out_dir).history(table, columns)
    return None if rows is None else rows.to_pandas()


def candidate_faces(out_dir: Path, since: date | None = None):
    """One row per face (latest run that scored it): its original file, box and probabilities; and the number
    of error rows in the same runs. Rows sort least confident first."""
    images = _read(out_dir, "images", ["run_id", "run_date", "root", "path", "image_id", "status"])
    faces = _read(out_dir, "faces", ["run_id", "run_date", "image_id", "path", "face_index", "x", "y", "w", "h",
                                     "det_score", "emotion", "model_version", *PROBABILITY_COLUMNS])
    if images is None:
        raise FerbatchError(f"{out_dir}: no scored images here (is this a ferbatch --out folder?)")
    if since is not None:
        images = images[images["run_date"] >= since]
        faces = faces[faces["run_date"] >= since] if faces is not None else None
    errors = int((images["status"] == "error").sum())
    if faces is None or faces.empty:
        return faces, errors, images
    roots = images.drop_duplicates(["run_id", "image_id", "path"])[["run_id", "image_id", "path", "root"]]
    faces = faces.merge(roots, on=["run_id", "image_id", "path"], how="left")
    faces = faces.sort_values("run_id").drop_duplicates(["image_id", "face_index"], keep="last")
    faces["confidence"] = faces[PROBABILITY_COLUMNS].max(axis=1)
    return faces.sort_values(["confidence", "image_id", "face_index"]).reset_index(drop=True), errors, images


def _crop(file: Path, row, expected_id: str) -> tuple[np.ndarray | None, str]:
    """The face as the scoring pipeline framed it, at EXPORT_SIDE, from the original file; or (None, reason)."""
    import cv2

    from ferbatch.scoring import Face, ImageError, ImageFile, crop_face, decode, read_bytes
    from ferbatch.scoring._images import image_id
    from ferbatch.training._labelled import scoring_framing

    if not file.is_file():
        return None, "missing_file"
    try:
        data = read_bytes(ImageFile(file.parent, Path(file.name), None, None))
        if image_id(data) != expected_id:
            return None, "file_changed_since_scored"
        rgb = decode(data).pixels
    except (ImageError, OSError):
        return None, "unreadable_file"
    margin, level_above = scoring_framing()
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    face = Face(float(row.x), float(row.y), float(row.w), float(row.h), float(row.det_score))
    return crop_face(grey, face, margin, size=EXPORT_SIDE, level_above=level_above), ""


def _already_exported(destination: Path) -> set[str]:
    """Crop names in the folders a person sorts crops into (_unsorted/, _skip/, other "_" folders and the class
    folders Happy/, Sad/, ...): faces already exported (sorted or not) are not offered again. Only those folders
    are looked into, never whatever else the destination holds."""
    from ferbatch.classes import CLASS_NAMES

    classes = {name.lower() for name in CLASS_NAMES}
    try:
        folders = [Path(entry.path) for entry in os.scandir(destination) if entry.is_dir(follow_symlinks=False)
                   and (entry.name.startswith("_") or entry.name.lower() in classes)]
    except OSError:
        return set()
    names: set[str] = set()
    for folder in folders:
        try:
            names.update(p.name for p in folder.rglob("*.png"))
        except OSError as exc:
            log.warning("%s: not read (%s)", folder, exc.strerror or exc)
    return names


def _new_csv_path(destination: Path) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    path, n = destination / f"export-{stamp}.csv", 1
    while path.exists():
        n += 1
        path = destination / f"export-{stamp}-{n}.csv"
    return path


def export_faces(out_dir: str | Path, destination: str | Path, *, uncertain: int | None = None,
                 sample: int | None = None, since: date | None = None, scanned: list[Path] = (),
                 seed: int = 0) -> ExportResult:
    """Write crops of the `uncertain` least confident faces (or a random `sample`) into destination/_unsorted/,
    plus destination/export-<UTC time>.csv. Error rows, missing or changed files are skipped with a warning."""
    out_dir, destination = Path(out_dir), Path(destination)
    if (uncertain is None) == (sample is None):
        raise FerbatchError("give one of --uncertain N or --sample N")
    faces, errors, images = candidate_faces(out_dir, since)
    check_destination(destination, out_dir, [*scanned, *sorted(set(images["root"]))])
    result = ExportResult(destination, None)
    if errors:
        result.skipped["error_rows"] = errors
    wanted = uncertain or sample
    if faces is None or faces.empty:
        log.warning("%s: no faces to export%s", out_dir, f" since {since}" if since else "")
        return result
    if sample is not None:
        faces = faces.iloc[np.random.default_rng(seed).permutation(len(faces))]
    done = _already_exported(destination)
    rows = []
    failed: tuple[Path, OSError] | None = None
    unsorted = destination / UNSORTED
    for row in faces.itertuples(index=False):
        if len(rows) == wanted:
            break
        name = f"{row.image_id[:16]}-{row.face_index}.png"
        if name in done:
            result.skipped["already_exported"] = result.skipped.get("already_exported", 0) + 1
            continue
        file = Path(row.root) / row.path if isinstance(row.root, str) else Path(row.path)
        crop, reason = _crop(file, row, row.image_id)
        if crop is None:
            result.skipped[reason] = result.skipped.get(reason, 0) + 1
            log.warning("%s: face %d skipped (%s)", file, row.face_index, reason.replace("_", " "))
            continue
        try:
            written = _write_crop(unsorted, name, crop)
        except OSError as exc:
            failed = (unsorted / name, exc)
            break
        if not written:  # something is there already: never written over, never through
            result.skipped["already_exported"] = result.skipped.get("already_exported", 0) + 1
            continue
        result.written.append(unsorted / name)
        rows.append({"crop": f"{UNSORTED}/{name}", "image_id": row.image_id, "face_index": row.face_index,
                     "path": csv_cell(printable(str(file))), "run_id": row.run_id, "model_version": row.model_version,
                     "emotion": row.emotion, "confidence": round(float(row.confidence), 4),
                     **{c: round(float(getattr(row, c)), 4) for c in PROBABILITY_COLUMNS}})
    if errors:
        log.warning("%s: %d error row(s) skipped (images that could not be read when scored)", out_dir, errors)
    if rows:
        try:
            result.csv_path = _write_csv(destination, rows)
        except OSError as exc:
            failed = failed or (destination, exc)
    if failed:
        path, exc = failed
        listed = f", listed in {result.csv_path}" if result.csv_path else ""
        raise FerbatchError(f"{path}: cannot write ({os_reason(exc)}); {len(result.written)} crop(s) were "
                            f"written before it{listed}")
    return result


def _write_crop(folder: Path, name: str, crop: np.ndarray) -> bool:
    """A new PNG file (never over or through what is there); False when the name is taken."""
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    ok, encoded = cv2.imencode(".png", crop)
    if not ok:
        raise OSError(f"cannot encode {name}")
    return create_new(folder / name, encoded.tobytes())


def _write_csv(destination: Path, rows: list[dict]) -> Path:
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    while True:  # a name of its own: never over an earlier export or through a link
        path = _new_csv_path(destination)
        if create_new(path, text.getvalue().encode("utf-8")):
            return path
