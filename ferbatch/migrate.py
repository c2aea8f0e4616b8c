"""Rewrite report files written before run_date left the files, so every reader opens the folder again.

    python -m ferbatch.migrate OUT

Until this change each Parquet file also held `run_date` as a date column, which pandas and pyarrow cannot
merge with the `run_date=` folder name. This drops that column from every committed part under OUT's
`images/`, `faces/` and `aggregates/` (only where it agrees with the folder name): each file is rewritten
under a staging name outside the table folders and renamed over the old one, under the output folder's
lock; rows, other columns, types and key-value metadata are kept. Files already without the column are
left untouched, so it can be re-run.
"""

from __future__ import annotations

import os
import sys
from datetime import date
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq

from ferbatch.errors import FerbatchError
from ferbatch.reports import STAGING_DIR, TABLES, OutDirLock


def drop_partition_column(out_dir: str | Path) -> list[Path]:
    """Rewrite the parts that still hold run_date as a column; returns the files rewritten."""
    out_dir = Path(out_dir)
    rewritten = []
    with OutDirLock(out_dir):
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


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    try:
        files = drop_partition_column(args[0])
    except FerbatchError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    print(f"{len(files)} file(s) rewritten without the run_date column")
    return 0


if __name__ == "__main__":
    sys.exit(main())
