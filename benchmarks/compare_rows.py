"""Compare the `images` and `faces` rows of two ferbatch report folders, ignoring run ids and times.

    python benchmarks/compare_rows.py OUT_BEFORE OUT_AFTER

For checking that a change to the code keeps the scoring output: score the same folder with the
old and the new code into two --out folders, then compare them here. Exits 1 on any difference.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

IGNORED = ("run_id", "scored_at")  # differ between any two runs
KEYS = {"images": ["root", "path"], "faces": ["root", "path", "face_index"]}


def read(out: Path, table: str) -> pd.DataFrame:
    files = sorted((out / table).glob("run_date=*/*.parquet"))
    frame = pq.ParquetDataset(files, partitioning=None).read().to_pandas() if files else pd.DataFrame()
    frame = frame.drop(columns=[c for c in IGNORED if c in frame.columns])
    return frame.sort_values(KEYS[table]).reset_index(drop=True) if len(frame) else frame


def metadata(out: Path, table: str) -> dict:
    """The Parquet key-value metadata of the table's first part, less the run id."""
    files = sorted((out / table).glob("run_date=*/*.parquet"))
    values = dict(pq.read_schema(files[0]).metadata or {}) if files else {}
    return {k: v for k, v in values.items() if k != b"ferbatch.run_id"}


def compare(before: Path, after: Path) -> list[str]:
    problems = []
    for table in ("images", "faces"):
        old, new = read(before, table), read(after, table)
        try:
            pd.testing.assert_frame_equal(old, new, check_exact=True)
        except AssertionError as exc:
            problems.append(f"{table}: {exc}")
        else:
            if metadata(before, table) != metadata(after, table):
                problems.append(f"{table}: Parquet metadata differs")
                continue
            print(f"{table}: {len(new)} rows, {len(new.columns)} columns identical (ignoring {', '.join(IGNORED)})")
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    args = parser.parse_args()
    problems = compare(args.before, args.after)
    for problem in problems:
        print(problem, file=sys.stderr)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
