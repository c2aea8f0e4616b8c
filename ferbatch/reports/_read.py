"""The rows themselves, read back from an output folder: each image's latest scoring, and its faces."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from ferbatch.classes import CLASS_NAMES
from ferbatch.errors import FerbatchError
from ferbatch.reports._folder import _dataset
from ferbatch.reports._migrate import fill_face_columns
from ferbatch.reports._rows import TOP_LEVEL_FOLDER

ROW_TABLES = ("images", "faces")
_IMAGE_KEY = ["root", "path"]


def emotion_name(text: str) -> str:
    """The class name for `text` in any case; an unknown name is a one-line error listing the known ones."""
    by_lower = {name.lower(): name for name in CLASS_NAMES}
    if text.strip().lower() not in by_lower:
        raise FerbatchError(f"unknown emotion {text!r} (use one of {', '.join(CLASS_NAMES)})")
    return by_lower[text.strip().lower()]


def _top_level_labelled(table: pa.Table) -> pa.Table:
    """Runs before the label wrote '' for images directly in a scanned folder: show both as the label."""
    index = table.column_names.index("folder")
    folder = pc.if_else(pc.equal(table.column("folder"), ""), TOP_LEVEL_FOLDER, table.column("folder"))
    return table.set_column(index, "folder", folder)


def _latest_runs(images: pa.Table) -> pa.Table:
    """(root, path, run_id) of each image's latest scoring run (a new model or --rescore scores it again): by
    scored_at, to the microsecond, since run ids of runs started in the same second sort by their random tail."""
    newest = images.group_by(_IMAGE_KEY).aggregate([("scored_at", "max")]).rename_columns([*_IMAGE_KEY, "scored_at"])
    keys = images.select([*_IMAGE_KEY, "scored_at", "run_id"]).join(newest, keys=[*_IMAGE_KEY, "scored_at"],
                                                                    join_type="inner")
    return keys.select([*_IMAGE_KEY, "run_id"])


def read_rows(out_dir: str | Path, table: str, *, folder: str | None = None, emotion: str | None = None,
              limit: int | None = None) -> pa.Table:
    """Rows of `table` (images or faces) for each image's latest scoring run, sorted by root and path (and face),
    optionally only those in `folder` (a first-level subfolder, or '(top level)') or of top `emotion`.

    Faces parts written before the faces table held its image's root, folder and taken_at get them from the
    images table. Raises FerbatchError when the folder holds no scored image.
    """
    if table not in ROW_TABLES:
        raise ValueError(f"table must be one of {ROW_TABLES}, not {table!r}")
    images_data = _dataset(out_dir, "images")
    if images_data is None:
        raise FerbatchError(f"{out_dir}: no scored images (is this a ferbatch --out folder?)")
    images = images_data.to_table()
    latest = _latest_runs(images)
    if table == "images":
        rows = images.join(latest, keys=[*_IMAGE_KEY, "run_id"], join_type="left semi")
    else:
        faces_data = _dataset(out_dir, "faces")
        if faces_data is None:
            return pa.table({})
        rows = fill_face_columns(faces_data.to_table(), images)
        rows = rows.join(latest, keys=[*_IMAGE_KEY, "run_id"], join_type="left semi")
    rows = _top_level_labelled(rows)
    if folder is not None:
        wanted = TOP_LEVEL_FOLDER if folder in ("", TOP_LEVEL_FOLDER) else folder.strip("/")
        rows = rows.filter(pc.equal(rows.column("folder"), wanted))
    if emotion is not None:
        rows = rows.filter(pc.equal(rows.column("emotion"), emotion_name(emotion)))
    order = [(column, "ascending") for column in (*_IMAGE_KEY, *(("face_index",) if table == "faces" else ()))]
    rows = rows.sort_by(order)
    return rows.slice(0, min(limit, rows.num_rows)) if limit is not None else rows  # any limit, 10**20 too
