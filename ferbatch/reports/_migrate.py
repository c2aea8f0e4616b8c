"""Rewrite report parts written before run_date left the files (see ferbatch.migrate)."""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq

from ferbatch.errors import FerbatchError
from ferbatch.reports._schemas import TABLES
from ferbatch.reports._store import STAGING_DIR, _OutDirLock


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
                data = data.drop_columns(["run_date"]).replace_schema_metadata(schema.metadata)
                staging = out_dir / STAGING_DIR / part.relative_to(out_dir).with_suffix(".parquet.migrate")
                staging.parent.mkdir(parents=True, exist_ok=True)
                pq.write_table(data, staging, compression="snappy")
                os.replace(staging, part)
                rewritten.append(part)
    return rewritten
