"""Time and peak RSS of the incremental check: what a run already holds, against what the scan found.

    python benchmarks/incremental_check.py [--photos 1000000,5000000] [--work /tmp/ferbatch-incremental]
                                           [--rows-per-part 500] [--new 1000] [--old] [--commit]

For each size, a synthetic output folder with that many photos in its current table (parts of
--rows-per-part rows, the default shard size) is written once under --work. Then, in a fresh process per
measurement, a scan of the same photos plus --new new ones is built in columns (as `plan_run` builds it) and
the check runs: read the current table's index (`ReportStore.current_base`) and join the scan against it
(`unmatched`). Printed: seconds and peak RSS above the process's RSS before the check, and the scan table's own
size. --old also measures the check this replaced (Python sets of every row's id and fingerprint, built from
the `images` history) on the same folder, side by side. --commit also builds the current table's next version
for a nightly with --new photos scored and 10 deleted (not switched to, then removed), and says how many of
its files were written rather than hard-linked.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = "/data/photos"
RUN_ID = "20260101T000000Z-000000"
EPOCH_US = 1_700_000_000_000_000


def _peak_rss_mb() -> float:
    """VmHWM: the peak since the last `_reset_peak` (Linux)."""
    with open("/proc/self/status") as handle:
        line = next(line for line in handle if line.startswith("VmHWM:"))
    return int(line.split()[1]) / 1024


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def _current_rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _path(i: np.ndarray) -> list[str]:
    return [f"campaign_{k % 300:03d}/2024-{k % 12 + 1:02d}/IMG_{k:09d}.jpg" for k in i.tolist()]


def _write_folder(out: Path, photos: int, rows_per_part: int) -> None:
    """An output folder whose current table (and history) holds `photos` scored photos."""
    from ferbatch.reports import IMAGES_SCHEMA

    schema = IMAGES_SCHEMA.remove(IMAGES_SCHEMA.get_field_index("run_date"))
    version = out / ".ferbatch-current" / RUN_ID / "images" / "run_date=2026-01-01"
    version.mkdir(parents=True, exist_ok=True)
    (out / ".ferbatch-current" / RUN_ID / "faces").mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    scored_at = datetime(2026, 1, 1, tzinfo=UTC)
    for part, start in enumerate(range(0, photos, rows_per_part)):
        i = np.arange(start, min(start + rows_per_part, photos))
        n = len(i)
        columns = {
            "run_id": pa.array([RUN_ID] * n), "scored_at": pa.array([scored_at] * n, schema.field("scored_at").type),
            "root": pa.array([ROOT] * n), "path": pa.array(_path(i)),
            "folder": pa.array([f"campaign_{k % 300:03d}" for k in i.tolist()]),
            "image_id": pa.array([bytes(row).hex() for row in rng.integers(0, 256, (n, 32), dtype=np.uint8)]),
            "bytes": pa.array(2_000_000 + i, pa.int64()),
            "mtime": pa.array(EPOCH_US + i, pa.int64()).cast(schema.field("mtime").type),
            "status": pa.array(["ok"] * n), "n_faces": pa.array(np.ones(n, np.int32)),
            "model_version": pa.array(["crop_cnn_100_x3-20260101"] * n), "detector": pa.array(["yunet"] * n),
        }
        table = pa.table({f.name: columns.get(f.name, pa.nulls(n, f.type)) for f in schema}, schema=schema)
        pq.write_table(table, version / f"part-{RUN_ID}-s{part:05d}.parquet", compression="snappy")
    _empty_faces(out)
    link = out / "current"
    if not link.is_symlink():
        os.symlink(f".ferbatch-current/{RUN_ID}", link)
    if not (out / "images").exists():  # the history, for --old: the same files
        os.symlink(f".ferbatch-current/{RUN_ID}/images", out / "images")
    (out / "done").write_text(str(photos))


def _empty_faces(out: Path) -> None:
    """A faces part beside each images part (no faces), as runs write them."""
    from ferbatch.reports import FACES_SCHEMA

    empty = FACES_SCHEMA.remove(FACES_SCHEMA.get_field_index("run_date")).empty_table()
    for part in (out / ".ferbatch-current" / RUN_ID / "images").glob("run_date=*/*.parquet"):
        faces = out / ".ferbatch-current" / RUN_ID / "faces" / part.parent.name / part.name
        if not faces.exists():
            faces.parent.mkdir(parents=True, exist_ok=True)
            pq.write_table(empty, faces)


def _scan(photos: int, new: int, deleted: int = 0, chunk: int = 100_000):
    """The scan of the folder's photos (less the last `deleted`) plus `new` ones, in columns, as `plan_run`
    builds it (in chunks)."""
    from ferbatch.reports import ScanTable

    indexes = np.concatenate([np.arange(photos - deleted), np.arange(photos, photos + new)])
    chunks = []
    for start in range(0, len(indexes), chunk):
        i = indexes[start: start + chunk]
        paths = _path(i)
        chunks.append(ScanTable.from_columns(
            [], [f"{ROOT}/{p}" for p in paths], (2_000_000 + i).tolist(), (EPOCH_US + i).tolist(),
            [0] * len(i), [p.encode() for p in paths]).table)
    return ScanTable([Path(ROOT)], pa.concat_tables(chunks).combine_chunks())


def _commit(out: Path, photos: int, new: int, deleted: int) -> dict:
    """A nightly's current-table version: `new` photos scored, `deleted` gone; built, measured, thrown away."""
    import shutil
    from datetime import date

    from ferbatch.reports import IMAGES_SCHEMA, CurrentUpdate, ReportStore
    from ferbatch.reports._current import build_version

    scan = _scan(photos, new, deleted)  # the last `deleted` photos of the table are gone from the folder
    keys = scan.table.column("file")
    run_id = "20260102T000000Z-000001"
    tmp = out / ".ferbatch-staging" / "bench-new.parquet"
    tmp.parent.mkdir(exist_ok=True)
    schema = IMAGES_SCHEMA.remove(IMAGES_SCHEMA.get_field_index("run_date"))
    fresh = pa.table({f.name: pa.nulls(new, f.type) for f in schema}).set_column(
        schema.get_field_index("root"), schema.field("root"), pa.array([ROOT] * new)).set_column(
        schema.get_field_index("path"), schema.field("path"), pa.array(_path(np.arange(photos, photos + new))))
    pq.write_table(fresh, tmp)
    before_rss = _current_rss_mb()
    _reset_peak()
    started = time.perf_counter()
    base = ReportStore(out).current_base("crop_cnn_100_x3-20260101")
    update = CurrentUpdate(base, keys, [ROOT])
    version = build_version(out, run_id, date(2026, 1, 2), update,
                            [(tmp, None, f"run_date=2026-01-02/part-{run_id}-s0000.parquet")], {})
    seconds = time.perf_counter() - started
    files = [p for p in version.rglob("*.parquet")]
    written = [p for p in files if p.stat().st_nlink == 1]  # not hard links
    result = {"mode": "commit", "photos": photos, "todo": new, "seconds": round(seconds, 2),
              "extra_mb": round(_peak_rss_mb() - before_rss, 1), "scan_table_mb": round(scan.table.nbytes / 2**20, 1),
              "files": len(files), "written": len(written), "written_mb": round(sum(p.stat().st_size for p in written)
                                                                               / 2**20, 2)}
    shutil.rmtree(version)
    tmp.unlink()
    return result


def _child(mode: str, out: Path, photos: int, new: int) -> dict:
    from ferbatch.reports import ReportStore, unmatched

    if mode == "commit":
        return _commit(out, photos, new, deleted=10)

    scan = _scan(photos, new)
    scan_mb = scan.table.nbytes / 2**20
    before_rss = _current_rss_mb()
    _reset_peak()
    started = time.perf_counter()
    if mode == "new":
        base = ReportStore(out).current_base("crop_cnn_100_x3-20260101")
        todo = len(unmatched(scan.table, base.index))
    else:  # the check this replaced: frozensets of every row, then a set lookup per scanned file
        import pyarrow.dataset as ds

        table = ds.dataset(str(out / "images"), format="parquet", partitioning="hive").to_table(
            columns=["image_id", "root", "path", "bytes", "mtime"])
        ids = frozenset(table.column("image_id").to_pylist())
        mtimes = table.column("mtime").cast(pa.int64()).to_pylist()
        files = (f"{r.rstrip('/')}/{p}" for r, p in zip(table.column("root").to_pylist(),
                                                         table.column("path").to_pylist(), strict=True))
        fingerprints = frozenset(zip(files, table.column("bytes").to_pylist(), mtimes, strict=True))
        del table
        keys = zip(scan.table.column("file").to_pylist(), scan.table.column("bytes").to_pylist(),
                   scan.table.column("mtime").to_pylist(), strict=True)
        todo = sum(key not in fingerprints for key in keys)
        assert ids
    seconds = time.perf_counter() - started
    return {"mode": mode, "photos": photos, "todo": todo, "seconds": round(seconds, 2),
            "extra_mb": round(_peak_rss_mb() - before_rss, 1), "scan_table_mb": round(scan_mb, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", default="1000000,5000000")
    parser.add_argument("--work", type=Path, default=Path("/tmp/ferbatch-incremental"))
    parser.add_argument("--rows-per-part", type=int, default=500)
    parser.add_argument("--new", type=int, default=1000)
    parser.add_argument("--old", action="store_true", help="also measure the set-based check it replaced")
    parser.add_argument("--commit", action="store_true",
                        help="also measure building a nightly's current version (--new photos, 10 deleted)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, folder, photos = args.child.split(":")
        print(json.dumps(_child(mode, Path(folder), int(photos), args.new)))
        return
    print(f"{'check':6} {'photos':>9} {'to score':>9} {'seconds':>8} {'s/million':>9} {'extra MB':>9} "
          f"{'scan MB':>8}")
    for photos in (int(n) for n in args.photos.split(",")):
        out = args.work / f"{photos}-{args.rows_per_part}"
        if not (out / "done").exists():
            started = time.perf_counter()
            _write_folder(out, photos, args.rows_per_part)
            print(f"(wrote {out} in {time.perf_counter() - started:.0f} s)", file=sys.stderr)
        _empty_faces(out)  # folders written by earlier versions of this script
        for mode in ["new", *(["old"] if args.old else []), *(["commit"] if args.commit else [])]:
            done = subprocess.run([sys.executable, __file__, "--child", f"{mode}:{out}:{photos}", "--new",
                                   str(args.new)], capture_output=True, text=True, check=True)
            result = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"{mode:6} {photos:>9} {result['todo']:>9} {result['seconds']:>8.2f} "
                  f"{result['seconds'] / photos * 1e6:>9.2f} {result['extra_mb']:>9.1f} "
                  f"{result['scan_table_mb']:>8.1f}", flush=True)
            if mode == "commit":
                print(f"       the new version: {result['files']} files, {result['written']} written "
                      f"({result['written_mb']} MB), the rest hard links", flush=True)


if __name__ == "__main__":
    main()
