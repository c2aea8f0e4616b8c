"""Parquet reports: `faces/`, `images/` and `aggregates/` datasets, hive-partitioned by run_date.

Each run writes one file per table and shard, `run_date=YYYY-MM-DD/part-<run_id>[-<shard>].parquet`,
streamed to a `.tmp` name and renamed at commit, so readers (DuckDB, Spark, Power BI) never see a
half-written file or a half-committed run.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from ferbatch.classes import CLASS_NAMES
from ferbatch.errors import FerbatchError

TABLES = ("images", "faces", "aggregates")
COMMIT_ORDER = ("faces", "aggregates", "images")  # images last: its file marks a run as committed
LOCK_FILE = ".ferbatch.lock"
MANIFEST_PREFIX = ".ferbatch-commit-"
TMP_SUFFIX = ".parquet.tmp"
STAGING_DIR = ".ferbatch-staging"  # OUT/.ferbatch-staging/<table>/run_date=.../part-*.parquet.tmp
ROW_GROUP = 4096
PROBABILITY_COLUMNS = [f"p_{name.lower()}" for name in CLASS_NAMES]
UTC_US = pa.timestamp("us", tz="UTC")
_PART_NAME = re.compile(r"^part-(\d{8}T\d{6}Z-[0-9a-f]+)(?:-[a-z0-9]+)?\.parquet$")

_PROBABILITIES = [pa.field(name, pa.float32()) for name in PROBABILITY_COLUMNS]

IMAGES_SCHEMA = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("run_date", pa.date32(), nullable=False),
        pa.field("scored_at", UTC_US, nullable=False),
        pa.field("root", pa.string(), nullable=False),
        pa.field("path", pa.string(), nullable=False),
        pa.field("folder", pa.string(), nullable=False),
        pa.field("image_id", pa.string()),  # null only when the file could not be read at all
        pa.field("bytes", pa.int64()),
        pa.field("mtime", UTC_US),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("taken_at", UTC_US),
        pa.field("status", pa.string(), nullable=False),  # ok | no_face | error
        pa.field("error", pa.string()),
        pa.field("n_faces", pa.int32(), nullable=False),
        pa.field("emotion", pa.string()),
        pa.field("sentiment", pa.string()),
        pa.field("sentiment_score", pa.float32()),
        *_PROBABILITIES,
        pa.field("model_version", pa.string(), nullable=False),
        pa.field("detector", pa.string(), nullable=False),
    ]
)

FACES_SCHEMA = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("run_date", pa.date32(), nullable=False),
        pa.field("image_id", pa.string(), nullable=False),
        pa.field("path", pa.string(), nullable=False),
        pa.field("face_index", pa.int32(), nullable=False),
        pa.field("x", pa.int32(), nullable=False),
        pa.field("y", pa.int32(), nullable=False),
        pa.field("w", pa.int32(), nullable=False),
        pa.field("h", pa.int32(), nullable=False),
        pa.field("det_score", pa.float32(), nullable=False),
        *_PROBABILITIES,
        pa.field("emotion", pa.string(), nullable=False),
        pa.field("sentiment", pa.string(), nullable=False),
        pa.field("sentiment_score", pa.float32(), nullable=False),
        pa.field("model_version", pa.string(), nullable=False),
    ]
)

GROUP_BYS = ("all", "folder", "taken_date")
AGGREGATES_SCHEMA = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("run_date", pa.date32(), nullable=False),
        pa.field("group_by", pa.string(), nullable=False),
        pa.field("group_value", pa.string()),  # null taken_date: images without an EXIF date
        pa.field("n_images", pa.int64(), nullable=False),
        pa.field("n_ok", pa.int64(), nullable=False),
        pa.field("n_no_face", pa.int64(), nullable=False),
        pa.field("n_error", pa.int64(), nullable=False),
        pa.field("n_faces", pa.int64(), nullable=False),
        pa.field("share_positive", pa.float64()),
        pa.field("share_negative", pa.float64()),
        pa.field("share_neutral", pa.float64()),
        pa.field("mean_sentiment_score", pa.float64()),
        *[pa.field(f"n_{name.lower()}", pa.int64(), nullable=False) for name in CLASS_NAMES],
        pa.field("model_version", pa.string(), nullable=False),
    ]
)

SCHEMAS = {"images": IMAGES_SCHEMA, "faces": FACES_SCHEMA, "aggregates": AGGREGATES_SCHEMA}
RUN_DATE_PARTITIONING = ds.partitioning(pa.schema([("run_date", pa.date32())]), flavor="hive")  # run_date=YYYY-MM-DD


class Aggregator:
    """Running per-group counts, so aggregates cost nothing per image kept in memory."""

    def __init__(self) -> None:
        self._counts: dict[tuple[str, str | None], Counter] = defaultdict(Counter)
        self._score_sums: dict[tuple[str, str | None], float] = defaultdict(float)

    def add(self, row: dict) -> None:
        taken = row.get("taken_at")
        keys = [("all", "all"), ("folder", row["folder"]), ("taken_date", taken.date().isoformat() if taken else None)]
        for key in keys:
            counts = self._counts[key]
            counts["n_images"] += 1
            counts[f"n_{row['status']}"] += 1
            counts["n_faces"] += row["n_faces"]
            if row["status"] == "ok":
                counts[f"sentiment_{row['sentiment']}"] += 1
                counts[f"n_{row['emotion'].lower()}"] += 1
                self._score_sums[key] += row["sentiment_score"]

    def merge(self, other: Aggregator) -> None:
        for key, counts in other._counts.items():
            self._counts[key].update(counts)
        for key, total in other._score_sums.items():
            self._score_sums[key] += total

    def rows(self, run_id: str, run_date: date, model_version: str) -> list[dict]:
        rows = []
        order = {name: i for i, name in enumerate(GROUP_BYS)}
        for key in sorted(self._counts, key=lambda k: (order[k[0]], k[1] is None, k[1] or "")):
            counts, n_ok = self._counts[key], self._counts[key]["n_ok"]
            rows.append(
                {
                    "run_id": run_id, "run_date": run_date, "group_by": key[0], "group_value": key[1],
                    "n_images": counts["n_images"], "n_ok": n_ok, "n_no_face": counts["n_no_face"],
                    "n_error": counts["n_error"], "n_faces": counts["n_faces"],
                    **{f"share_{s}": (counts[f"sentiment_{s}"] / n_ok if n_ok else None)
                       for s in ("positive", "negative", "neutral")},
                    "mean_sentiment_score": self._score_sums[key] / n_ok if n_ok else None,
                    **{f"n_{name.lower()}": counts[f"n_{name.lower()}"] for name in CLASS_NAMES},
                    "model_version": model_version,
                }
            )
        if not rows:  # a run that scored nothing still leaves its mark
            rows.append({"run_id": run_id, "run_date": run_date, "group_by": "all", "group_value": "all",
                         **dict.fromkeys(("n_images", "n_ok", "n_no_face", "n_error", "n_faces"), 0),
                         **{f"n_{name.lower()}": 0 for name in CLASS_NAMES}, "model_version": model_version})
        return rows


class ReportWriter:
    """Streams rows into `.tmp` files, one per table, named `part-<run_id>[-<part>].parquet` once committed.

    A run may have several writers (one per shard, possibly in other processes); `close()` hands back
    the (tmp, final) pairs and `commit_parts` makes all of a run's files visible together.
    """

    def __init__(
        self, out_dir: str | Path, run_id: str, run_date: date, metadata: dict[str, str], part: str | None = None
    ) -> None:
        self.out_dir, self.run_id, self.run_date, self.part = Path(out_dir), run_id, run_date, part
        self.metadata = {f"ferbatch.{k}": v for k, v in metadata.items()}
        self._writers: dict[str, pq.ParquetWriter] = {}
        self._buffers: dict[str, list[dict]] = defaultdict(list)

    def final_path(self, table: str) -> Path:
        name = f"part-{self.run_id}" + (f"-{self.part}" if self.part else "") + ".parquet"
        return self.out_dir / table / f"run_date={self.run_date.isoformat()}" / name

    def _tmp_path(self, table: str) -> Path:
        # Staged outside the table folders: pandas, pyarrow, polars and Spark read every file under a folder.
        final = self.final_path(table).relative_to(self.out_dir)
        return self.out_dir / STAGING_DIR / final.with_name(final.name.removesuffix(".parquet") + TMP_SUFFIX)

    def write(self, table: str, rows: list[dict]) -> None:
        """Buffer rows; they reach the file in row groups of ROW_GROUP rows."""
        buffer = self._buffers[table]
        buffer.extend(rows)
        if len(buffer) >= ROW_GROUP:
            self._flush(table)

    def _flush(self, table: str) -> None:
        rows, self._buffers[table] = self._buffers[table], []
        if not rows:
            return
        if table not in self._writers:
            self._open(table)
        self._writers[table].write_table(pa.Table.from_pylist(rows, schema=self._writers[table].schema))

    def _open(self, table: str) -> None:
        tmp = self._tmp_path(table)
        tmp.parent.mkdir(parents=True, exist_ok=True)
        # run_date lives in the folder name only (as Spark and pyarrow write hive partitions), so every reader
        # opens the folder with no options; snappy is the codec every BI reader (Power BI, Tableau, Spark) knows.
        schema = SCHEMAS[table].remove(SCHEMAS[table].get_field_index("run_date")).with_metadata(self.metadata)
        self._writers[table] = pq.ParquetWriter(tmp, schema, compression="snappy")

    def close(self, tables: tuple[str, ...] = ()) -> list[tuple[str, str]]:
        """Finish the files; `tables` get a file even when empty. Returns (tmp, final) path pairs."""
        for table in tables:
            if table not in self._writers:
                self._open(table)
        for table in list(self._buffers):
            self._flush(table)
        moves = []
        for table, writer in self._writers.items():
            writer.close()
            moves.append((str(self._tmp_path(table)), str(self.final_path(table))))
        self._writers.clear()
        return moves

    def abort(self) -> None:
        for table, writer in self._writers.items():
            writer.close()
            self._tmp_path(table).unlink(missing_ok=True)
        self._writers.clear()
        self._buffers.clear()


def _manifest_path(out_dir: Path, run_id: str) -> Path:
    return out_dir / f"{MANIFEST_PREFIX}{run_id}.json"


def _commit_order(move: tuple[str, str]) -> int:
    return COMMIT_ORDER.index(Path(move[1]).parent.parent.name)


def commit_parts(out_dir: str | Path, run_id: str, moves: list[tuple[str, str]]) -> list[Path]:
    """Rename a run's finished `.tmp` files into place, `images` parts last.

    The list is written to a manifest first, so if the process dies between renames the next run
    finishes them (`recover_interrupted_runs`): a run is either wholly visible or not at all.
    """
    out_dir = Path(out_dir)
    moves = sorted(moves, key=_commit_order)
    for tmp, _ in moves:  # the data must be on disk before the manifest promises it
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
    manifest = _manifest_path(out_dir, run_id)
    staging = manifest.with_name(manifest.name + ".tmp")
    with open(staging, "w") as handle:
        json.dump(moves, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(staging, manifest)
    return _roll_forward(manifest)


def _roll_forward(manifest: Path) -> list[Path]:
    finals = []
    for tmp, final in json.loads(manifest.read_text()):
        if Path(tmp).exists():
            Path(final).parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, final)
        finals.append(Path(final))
    manifest.unlink()
    return finals


def abort_parts(moves: list[tuple[str, str]]) -> None:
    """Delete the `.tmp` files of a run that will not be committed."""
    for tmp, _ in moves:
        Path(tmp).unlink(missing_ok=True)


def _run_id_of(part: Path) -> str | None:
    match = _PART_NAME.match(part.name)
    return match.group(1) if match else None


def recover_interrupted_runs(out_dir: str | Path) -> list[Path]:
    """Tidy what killed runs left: finish commits that had begun, delete everything else unfinished.

    A run whose manifest exists had all its files written; its renames are completed. Then `.tmp`
    files and parts of runs without an `images` part are removed. Call only while holding
    `OutDirLock`, so no live run's files are mistaken for leftovers.
    """
    out_dir = Path(out_dir)
    for manifest in sorted(out_dir.glob(f"{MANIFEST_PREFIX}*.json")):
        _roll_forward(manifest)
    for staging in out_dir.glob(f"{MANIFEST_PREFIX}*.json.tmp"):
        staging.unlink(missing_ok=True)
    leftovers = [p for table in TABLES for folder in (out_dir / table, out_dir / STAGING_DIR / table)
                 for p in folder.glob(f"run_date=*/*{TMP_SUFFIX}")]
    committed = {_run_id_of(p) for p in (out_dir / "images").glob("run_date=*/part-*.parquet")}
    for table in TABLES:
        if table != "images":
            leftovers += [p for p in (out_dir / table).glob("run_date=*/part-*.parquet")
                          if (run := _run_id_of(p)) is not None and run not in committed]  # only ours
    for path in leftovers:
        path.unlink(missing_ok=True)
    return leftovers


class OutDirLock:
    """An exclusive lock on an output folder for one run, so two runs never write into it at once.

    The operating system releases it when the process ends, however it ends.
    """

    def __init__(self, out_dir: str | Path) -> None:
        self.path = Path(out_dir) / LOCK_FILE
        self._handle = None

    def __enter__(self) -> OutDirLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise FerbatchError(
                f"{self.path.parent}: another ferbatch run is writing into this folder; "
                "wait for it to finish or use another --out"
            ) from None
        self._handle = handle
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None


def _dataset(out_dir: str | Path, table: str) -> ds.Dataset | None:
    folder = Path(out_dir) / table
    files = sorted(str(p) for p in folder.glob("run_date=*/*.parquet"))
    if not files:
        return None
    return ds.dataset(files, schema=SCHEMAS[table], format="parquet", partitioning=RUN_DATE_PARTITIONING,
                      partition_base_dir=str(folder))


@dataclass(frozen=True)
class ScoredIndex:
    """What an output folder already holds for one model version (for incremental runs)."""

    image_ids: frozenset[str]
    fingerprints: frozenset[tuple[str, str, int, int]]  # (root, path, bytes, mtime in microseconds)

    def __contains__(self, image_id: str) -> bool:
        return image_id in self.image_ids


def scored_index(out_dir: str | Path, model_version: str) -> ScoredIndex:
    dataset = _dataset(out_dir, "images")
    if dataset is None:
        return ScoredIndex(frozenset(), frozenset())
    table = dataset.to_table(
        columns=["image_id", "root", "path", "bytes", "mtime"],
        filter=(ds.field("model_version") == model_version) & ds.field("image_id").is_valid(),
    )
    ids = frozenset(table.column("image_id").to_pylist())
    mtimes = table.column("mtime").cast(pa.int64()).to_pylist()
    fingerprints = frozenset(
        zip(table.column("root").to_pylist(), table.column("path").to_pylist(),
            table.column("bytes").to_pylist(), mtimes, strict=True)
    )
    return ScoredIndex(ids, fingerprints)


def latest_aggregates(out_dir: str | Path) -> pa.Table | None:
    """The aggregates of the most recent run that scored images (else of the most recent run)."""
    dataset = _dataset(out_dir, "aggregates")
    if dataset is None:
        return None
    table = dataset.to_table()
    with_images = table.filter(pc.greater(table.column("n_images"), 0))
    runs = (with_images if with_images.num_rows else table).column("run_id").to_pylist()
    return table.filter(pc.equal(table.column("run_id"), max(runs)))


def metadata_json(**values: object) -> dict[str, str]:
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in values.items()}
