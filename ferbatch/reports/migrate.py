"""Rewrite report files written by earlier versions, so every reader opens the folder again.

    python -m ferbatch.reports.migrate OUT

1. `run_date` left the files: until then each Parquet file also held it as a date column, which pandas and
   pyarrow cannot merge with the `run_date=` folder name. It is dropped from every committed part under OUT's
   `images/`, `faces/` and `aggregates/` (only where it agrees with the folder name).
2. The faces table gained its image's `root`, `folder` and `taken_at`: older faces parts are given them from
   the images part of the same run (a scoring run into OUT does this step by itself).

Each file is rewritten under a staging name outside the table folders and renamed over the old one, under the
output folder's lock; rows, other columns, types and key-value metadata are kept. Files already up to date are
left untouched, so it can be re-run.
"""

from __future__ import annotations

import sys

from ferbatch.errors import FerbatchError
from ferbatch.reports import add_face_columns, drop_partition_column


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    try:
        files = drop_partition_column(args[0])
        faces = add_face_columns(args[0])
    except FerbatchError as exc:
        print(f"Error: {exc}", file=sys.stderr)
        return 1
    print(f"{len(files)} file(s) rewritten without the run_date column")
    print(f"{len(faces)} faces file(s) given their images' root, folder and taken_at")
    return 0


if __name__ == "__main__":
    sys.exit(main())
