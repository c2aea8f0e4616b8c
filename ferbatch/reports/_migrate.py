"""Rewrite report parts written by earlier versions to today's schemas (see ferbatch.reports.migrate): run_date left
the files; the faces table gained its image's root, folder and taken_at."""

from __future__ import annotations

import logging
import os
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ferbatch.errors import FerbatchError
from ferbatch.reports._folder import STAGING_DIR, _OutDirLock
from ferbatch.reports._schemas import FACE_IMAGE_COLUMNS, SCHEMAS, TABLES

log = logging.getLogger(__name__)


def _replace_part(out_dir: Path, part: Path, data: pa.Table) -> None:
    """Rewrite one report part: written in the staging folder first, then renamed over it."""
    staging = out_dir / STAGING_DIR / part.relative_to(out_dir).with_suffix(".parquet.migrate")
    staging.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(data, staging, compression="snappy")
    os.replace(staging, part)


def drop_partition_column(out_dir: str | Path) -> list[Path]:
    """Rewrite the parts that still hold run_date as a column; returns the files rewritten."""
    out_dir = Path(out_dir)
    rewritten = []
    with _OutDirLock(out_dir):
        for table in TABLES:
            for part in sorted((out_dir / table).glob("run_date=*/part-*.parquet")):
                schema = pq.read_schema(part)
                if "run_date" not in schema.names:
                    continue
                data = pq.read_table(part, partitioning=None)
                folder_date = date.fromisoformat(part.parent.name.removeprefix("run_date="))
                values = data.column("run_date")
                if data.num_rows and not pc.all(pc.equal(values.cast("date32"), folder_date)).as_py():
                    raise FerbatchError(f"{part}: run_date inside the file differs from its folder; left as is")
                _replace_part(out_dir, part, data.drop_columns(["run_date"]).replace_schema_metadata(schema.metadata))
                rewritten.append(part)
    return rewritten


def _with_image_columns(faces: pa.Table, images: pa.Table) -> pa.Table:
    """`faces` with root, folder and taken_at from the images rows of the same run, image and path."""
    keys = ["run_id", "image_id", "path"]
    source = images.select([*keys, *FACE_IMAGE_COLUMNS]).filter(pc.is_valid(images.column("image_id")))
    # One row per key, so no face is repeated: the same file content at the same relative path under two roots
    # in one run is the only way to meet a key twice, and an old faces row cannot say which root it came from.
    source = source.group_by(keys, use_threads=False).aggregate([(c, "first") for c in FACE_IMAGE_COLUMNS])
    source = source.select([*keys, *(f"{c}_first" for c in FACE_IMAGE_COLUMNS)])
    source = source.rename_columns([*keys, *(f"_image_{c}" for c in FACE_IMAGE_COLUMNS)])
    joined = faces.append_column("_order", pa.array(range(faces.num_rows), pa.int64()))
    joined = joined.join(source, keys=keys, join_type="left outer").sort_by("_order")
    for column in FACE_IMAGE_COLUMNS:
        fallback = joined.column(f"_image_{column}")
        if column in faces.column_names:  # keep what a newer part already holds
            fallback = pc.coalesce(joined.column(column), fallback)
            joined = joined.drop_columns([column])
        joined = joined.append_column(column, fallback)
    return joined.drop_columns(["_order", *(f"_image_{c}" for c in FACE_IMAGE_COLUMNS)])


def fill_face_columns(faces: pa.Table, images: pa.Table) -> pa.Table:
    """Faces rows read from parts written before the faces table held its image's root, folder and taken_at,
    given them from `images` (the same runs' rows); rows that hold them already are unchanged."""
    # root is never null in a part that has the columns (taken_at often is: photos without an EXIF date).
    old_rows = "root" not in faces.column_names or faces.column("root").null_count
    return _with_image_columns(faces, images) if old_rows and faces.num_rows else faces


def _add_face_columns(out_dir: Path) -> list[Path]:
    rewritten = []
    target = SCHEMAS["faces"].remove(SCHEMAS["faces"].get_field_index("run_date"))
    for part in sorted((out_dir / "faces").glob("run_date=*/part-*.parquet")):
        schema = pq.read_schema(part)
        if all(column in schema.names for column in FACE_IMAGE_COLUMNS):
            continue
        if "run_date" in schema.names:  # older still: drop_partition_column checks and drops that column first
            log.warning("%s: still holds run_date; run `python -m ferbatch.reports.migrate %s`", part, out_dir)
            continue
        sibling = out_dir / "images" / part.parent.name / part.name  # the same run and shard
        if not sibling.is_file():
            log.warning("%s: no images part beside it to take root, folder and taken_at from; left as is", part)
            continue
        faces = pq.read_table(part, partitioning=None)
        images = pq.read_table(sibling, partitioning=None, columns=["run_id", "image_id", "path",
                                                                    *FACE_IMAGE_COLUMNS])
        data = _with_image_columns(faces, images)
        if data.num_rows and data.column("root").null_count:
            log.warning("%s: some faces have no row in %s; left as is", part, sibling.name)
            continue
        _replace_part(out_dir, part, data.select(target.names).cast(target).replace_schema_metadata(schema.metadata))
        rewritten.append(part)
    return rewritten


def add_face_columns(out_dir: str | Path, *, locked: bool = False) -> list[Path]:
    """Rewrite the faces parts written before the table held root, folder and taken_at, taking them from the
    images part of the same run and shard; returns the files rewritten. Each file is written under a staging
    name and renamed over the old one (readers see the old or the new file), rows and metadata kept; parts
    that have the columns are left alone, so it can run again. `locked`: the caller holds the folder's lock."""
    out_dir = Path(out_dir)
    if locked:
        return _add_face_columns(out_dir)
    with _OutDirLock(out_dir):
        return _add_face_columns(out_dir)
