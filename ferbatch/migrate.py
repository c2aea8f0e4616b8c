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

import sys

from ferbatch.errors import FerbatchError
from ferbatch.reports import drop_partition_column


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
