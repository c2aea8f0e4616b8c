"""The current table: `OUT/current/images/` and `OUT/current/faces/`, one row per photo that exists.

The history (`OUT/images/`, `OUT/faces/`) keeps every row a run wrote; the current table keeps, for each file
(its absolute `root/path`), the newest row only, and drops files that are gone from the scanned folders. Its
schemas are the history's: a current row is a history row (or, for a file recognised by its content at a new
path or with a new mtime, a copy of one with the file's path, size and mtime as found).

Each committing run builds a new *version* of it under `OUT/.ferbatch-current/<run_id>/` and switches the
`OUT/current` symlink to it with one rename, so a reader opening `OUT/current/images` sees the old version or
the new one, never a mix. A version's part files are named like the history parts they come from
(`run_date=YYYY-MM-DD/part-<run_id>[-<shard>].parquet`): a part whose rows all stay is hard-linked from the
previous version (no data written), a part that lost rows is rewritten without them under a name of its own
(`part-<run_id>[-<shard>].r<this run's id>.parquet`), and a run's new parts are linked from its history parts. A
name therefore always holds the same rows in every version: a reader that listed `OUT/current/images` before a
switch and opens the files after it finds each file it listed unchanged or gone, never changed. A nightly run
with a few new photos writes a few small files.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from ferbatch.errors import FerbatchError
from ferbatch.reports._schemas import FACES_SCHEMA, SCHEMAS

log = logging.getLogger(__name__)

CURRENT_LINK = "current"  # OUT/current -> .ferbatch-current/<run_id>
VERSIONS_DIR = ".ferbatch-current"
CURRENT_TABLES = ("images", "faces")
FILE_KEY = "file"  # root/path: a photo's identity in the current table
CARRIED = "carried"  # part name suffix of rows recognised by content at a new path or mtime
# Columns that say where a file is: a carried row takes them from the file as found. Faces get those of them
# their schema has, so the rule follows the schemas as columns are added.
FILE_COLUMNS = ("root", "path", "folder", "bytes", "mtime")
_INDEX_COLUMNS = ["root", "path", "bytes", "mtime", "model_version", "scored_at", "image_id"]


REVISION = ".r"  # a rewritten part: part-<run_id>[-<shard>].r<rewriting run_id>.parquet


def origin_part(part: str) -> str:
    """The history part a current part comes from: its name without a rewrite's `.r<run_id>`."""
    folder, _, name = part.rpartition("/")
    stem = name.removesuffix(".parquet")
    if REVISION in stem:
        stem = stem[: stem.index(REVISION)]
    return f"{folder}/{stem}.parquet" if folder else f"{stem}.parquet"


def revised_part(part: str, run_id: str) -> str:
    """The name a part rewritten by run `run_id` takes: never the name of a part a reader may have listed."""
    origin = origin_part(part)
    return f"{origin.removesuffix('.parquet')}{REVISION}{run_id}.parquet"


def file_keys(root: pa.Array | pa.ChunkedArray, path: pa.Array | pa.ChunkedArray) -> pa.Array:
    """`root/path` as the scan spells a file's absolute path (`as_text(root / path)`)."""
    return pc.binary_join_element_wise(pc.utf8_rtrim(root, characters="/"), path, "/")


def live_version(out_dir: str | Path) -> Path | None:
    """The version folder `OUT/current` points at, or None before the first current version."""
    link = Path(out_dir) / CURRENT_LINK
    if not link.is_symlink():
        if link.exists():
            raise FerbatchError(f"{link}: not the current-table link ferbatch keeps there; move it out of the way")
        return None
    target = Path(os.readlink(link))
    return (link.parent / target) if not target.is_absolute() else target


def face_identity(faces: pa.Table) -> list[str]:
    """Columns tying a face row to its image row within one part (one run): run_id, path and image_id, and
    root where these faces have it (faces written before the column was added have none)."""
    root = "root" in faces.column_names and faces.column("root").null_count == 0
    return ["run_id", *(["root"] if root else []), "path", "image_id"]


@dataclass
class CurrentBase:
    """What a run's new current version starts from: the live version's parts, or, for a folder without a
    current table yet, the history's (newest row per file).

    `index` has one row per file: `file`, `bytes`, `mtime` (int64 microseconds), `eligible` (may skip scoring:
    scored by this model, or any model when old rows are kept) and `part` (index into `parts`). It is all a
    run needs to decide what to score, in columns, without a Python object per photo.
    """

    out_dir: Path
    folder: Path | None  # holds images/ and faces/ parts: a version folder, OUT itself (history), or None
    parts: list[str]  # paths relative to images/ (and faces/): run_date=YYYY-MM-DD/part-....parquet
    from_history: bool
    index: pa.Table
    dropped_parts: list[str] = field(default_factory=list)  # left out: damaged, or their run was removed
    model_counts: dict[str, int] = field(default_factory=dict)  # photos per model version

    @property
    def n_eligible(self) -> int:
        return int(pc.sum(self.index.column("eligible")).as_py() or 0) if self.index.num_rows else 0

    def models(self) -> dict[str, int]:
        """Photos per model version in the current table."""
        return dict(self.model_counts)


_EMPTY_INDEX = pa.schema([(FILE_KEY, pa.string()), ("bytes", pa.int64()), ("mtime", pa.int64()),
                          ("eligible", pa.bool_()), ("part", pa.int32())])


def _parts(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder / "images").as_posix()
                  for p in (folder / "images").glob("run_date=*/part-*.parquet"))


def read_base(out_dir: str | Path, model_version: str, keep_old_models: bool,
              dropped_runs: Iterable[str] = (), dropped_parts: Iterable[str] = ()) -> CurrentBase:
    """The base of this run's current version and its index (call inside `ReportStore.open_run`).

    `dropped_runs` / `dropped_parts` (paths relative to a table folder): history parts that recovery removed or
    set aside as damaged; the current rows from them are left out too, so their photos are scored again.
    """
    out_dir = Path(out_dir)
    version = live_version(out_dir)
    from_history = version is None or not version.is_dir()
    folder = out_dir if from_history else version
    dropped_runs, dropped_parts = set(dropped_runs), set(dropped_parts)
    parts, left_out = [], []
    for part in _parts(folder):
        origin = origin_part(part)  # a rewritten part's rows come from this history part
        run = origin.rsplit("/", 1)[-1].removeprefix("part-").removesuffix(".parquet")
        if origin in dropped_parts or any(run == r or run.startswith(f"{r}-") for r in dropped_runs):
            left_out.append(part)
        else:
            parts.append(part)
    try:  # every part at once, in parallel
        tables, models = _read_index(folder, parts, model_version, keep_old_models, from_history)
    except (pa.ArrowException, OSError):  # one by one, to name or leave out the damaged ones
        readable = []
        for part in parts:
            own, history = folder / "images" / part, out_dir / "images" / origin_part(part)
            try:
                pq.read_table(own, columns=_INDEX_COLUMNS, partitioning=None)
            except (pa.ArrowException, OSError) as exc:
                first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                # The history's damage (a current part is a hard link to it): the user decides, as for any reader.
                if from_history or (history.exists() and not _readable(history)):
                    raise FerbatchError(f"{own if from_history else history}: a report file cannot be read "
                                        f"({first}); move it out of the folder (see README, Reports)") from None
                log.warning("%s: not readable (%s); its photos are scored again", own, first)
                left_out.append(part)
                continue
            readable.append(part)
        parts = readable
        tables, models = _read_index(folder, parts, model_version, keep_old_models, from_history)
    schema = (_EMPTY_INDEX.append(SCHEMAS["images"].field("model_version")).append(
        SCHEMAS["images"].field("scored_at")) if from_history else _EMPTY_INDEX)
    index = pa.concat_tables(tables) if tables else schema.empty_table()
    del tables
    columns = {}
    for name in index.column_names:  # one chunk per column, for fast `take`; a column at a time, to keep the peak low
        columns[name] = index.column(name).combine_chunks()
        index = index.drop_columns([name])
    index = pa.table(columns)
    if from_history:
        index = _newest_per_file(index).drop_columns(["scored_at"])
        counts = index.column("model_version").value_counts().to_pylist()
        models = {str(v["values"]): int(v["counts"]) for v in counts}
        index = index.drop_columns(["model_version"])
    return CurrentBase(out_dir, folder if parts else None, parts, from_history, index, left_out, models)


def _read_index(folder: Path, parts: list[str], model_version: str, keep_old_models: bool,
                from_history: bool) -> tuple[list[pa.Table], dict[str, int]]:
    """The index's columns, batch by batch, and the photos per model version."""
    if not parts:
        return [], {}
    files = [str(folder / "images" / part) for part in parts]
    position = {path: i for i, path in enumerate(files)}
    schema = pa.schema([SCHEMAS["images"].field(name) for name in _INDEX_COLUMNS])
    scanner = ds.dataset(files, schema=schema, format="parquet").scanner(columns=_INDEX_COLUMNS)
    tables, models = [], Counter()
    for tagged in scanner.scan_batches():
        batch = tagged.record_batch
        if not batch.num_rows:
            continue
        model = batch.column("model_version")
        columns = {FILE_KEY: file_keys(batch.column("root"), batch.column("path")),
                   "bytes": batch.column("bytes"), "mtime": batch.column("mtime").cast(pa.int64()),
                   # a row whose file could not be read holds no content: it is tried again every run
                   "eligible": pc.and_(pa.array(np.ones(batch.num_rows, bool)) if keep_old_models
                                       else pc.equal(model, model_version),
                                       pc.is_valid(batch.column("image_id"))),
                   "part": pa.array(np.full(batch.num_rows, position[tagged.fragment.path], np.int32))}
        if from_history:  # older rows are dropped afterwards: the model counts come from what is left
            columns["model_version"] = model
            columns["scored_at"] = batch.column("scored_at")
        else:
            models.update({str(v["values"]): int(v["counts"]) for v in model.value_counts().to_pylist()})
        tables.append(pa.table(columns))
    return tables, dict(models)


def _readable(path: Path) -> bool:
    try:
        pq.read_table(path, columns=_INDEX_COLUMNS, partitioning=None)
    except (pa.ArrowException, OSError):
        return False
    return True


def _newest_per_file(index: pa.Table) -> pa.Table:
    """The history's newest row per file (by scored_at: run ids of one second do not sort by time).

    Rows of relative roots (runs before roots were resolved) are never a current row: those files are
    recognised by content and carried to their real path."""
    index = index.filter(pc.starts_with(index.column(FILE_KEY), "/"))
    if not index.num_rows:
        return index
    order = pc.sort_indices(index, [(FILE_KEY, "ascending"), ("scored_at", "descending")])
    keys = index.column(FILE_KEY).take(order)
    first = np.ones(len(keys), bool)
    if len(keys) > 1:
        first[1:] = pc.not_equal(keys.slice(1), keys.slice(0, len(keys) - 1)).to_numpy(zero_copy_only=False)
    return index.take(order.filter(pa.array(first)))


@dataclass
class ScanTable:
    """A scan in columns: every file found, as few bytes per file as the check needs."""

    roots: list[Path]
    table: pa.Table  # file (str), bytes, mtime (int64 us, nullable), root (int32 into roots), relative (binary)
    follow: bytearray = field(default_factory=bytearray)  # per row: 1 where reading may follow a link
    refused: dict[int, str] = field(default_factory=dict)  # row -> why the scan will not let it be read (rare)

    @classmethod
    def from_columns(cls, roots: Sequence[Path], keys: list[str], sizes: list[int | None], mtimes: list[int | None],
                     root_index: list[int], relative: list[bytes]) -> ScanTable:
        return cls(list(roots), pa.table({FILE_KEY: pa.array(keys, pa.string()), "bytes": pa.array(sizes, pa.int64()),
                                          "mtime": pa.array(mtimes, pa.int64()),
                                          "root": pa.array(root_index, pa.int32()),
                                          "relative": pa.array(relative, pa.binary())}))

    @property
    def keys(self) -> pa.Array:
        return self.table.column(FILE_KEY)


_HASH_MULTIPLIER = np.uint64(0x100000001B3)  # odd: the polynomial hash below works modulo 2**64
_HASH_SLICE = 1 << 14  # strings hashed at a time: their bytes are widened to 64 bits meanwhile
_CONFIRM_SLICE = 1 << 16


def _string_hashes(strings: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A 64-bit polynomial hash of each (non-null) string, computed on the Arrow buffers with numpy.

    Eight bytes per photo to look up instead of its path: collisions are possible (rare, or made on purpose
    with crafted names), so a match by hash is always confirmed on the strings themselves."""
    chunks = strings.chunks if isinstance(strings, pa.ChunkedArray) else [strings]
    out, powers = [], np.ones(1, np.uint64)
    for chunk in chunks:
        for start in range(0, len(chunk), _HASH_SLICE):
            piece = chunk.slice(start, _HASH_SLICE)
            offsets = np.frombuffer(piece.buffers()[1], np.int32)[piece.offset: piece.offset + len(piece) + 1]
            lo, hi = int(offsets[0]), int(offsets[-1])
            data = np.frombuffer(piece.buffers()[2], np.uint8)[lo:hi].astype(np.uint64)
            lengths = np.diff(offsets)
            if lengths.max(initial=0) >= len(powers):  # multiplier ** k, k = 0 .. the longest string
                powers = np.ones(int(lengths.max()) + 1, np.uint64)
                with np.errstate(over="ignore"):
                    powers[1:] = np.cumprod(np.full(len(powers) - 1, _HASH_MULTIPLIER, np.uint64))
            # each byte times multiplier ** (its distance from its string's end); the sums per string
            from_end = np.repeat(offsets[1:] - lo, lengths) - 1 - np.arange(hi - lo)
            with np.errstate(over="ignore"):
                weighted = data * powers[from_end]
            sums = np.zeros(len(piece), np.uint64)
            nonempty = lengths > 0
            if nonempty.any():
                sums[nonempty] = np.add.reduceat(weighted, (offsets[:-1] - lo)[nonempty])
            out.append(sums ^ lengths.astype(np.uint64))
    return np.concatenate(out) if out else np.zeros(0, np.uint64)


def _single(array: pa.Array | pa.ChunkedArray) -> pa.Array:
    if isinstance(array, pa.ChunkedArray):
        return array.combine_chunks() if array.num_chunks != 1 else array.chunk(0)
    return array


def lookup(needles: pa.Array | pa.ChunkedArray, haystack: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """For each needle (a file key), its position in `haystack`, or -1: strings hashed to 64 bits and looked up
    with Arrow's `index_in`, every hit confirmed on the strings, a slice at a time; bytes per key in all."""
    positions = np.full(len(needles), -1, np.int64)
    if not len(needles) or not len(haystack):
        return positions
    needles, haystack = _single(needles), _single(haystack)
    found = pc.index_in(pa.array(_string_hashes(needles)), value_set=pa.array(_string_hashes(haystack)))
    candidates = np.flatnonzero(found.is_valid().to_numpy(zero_copy_only=False))
    at = found.drop_null().to_numpy().astype(np.int64)
    for start in range(0, len(candidates), _CONFIRM_SLICE):
        rows, there = candidates[start: start + _CONFIRM_SLICE], at[start: start + _CONFIRM_SLICE]
        same = pc.equal(haystack.take(pa.array(there)), needles.take(pa.array(rows)))
        confirmed = pc.fill_null(same, False).to_numpy(zero_copy_only=False)
        positions[rows[confirmed]] = there[confirmed]
    return positions


def unmatched(scan: pa.Table, index: pa.Table) -> pa.Array:
    """Row numbers of the scanned files whose (file, bytes, mtime) no eligible current row has.

    The paths are looked up in columns (`lookup`), then the sizes and mtimes of the hits compared in columns:
    bytes per photo, never a Python object per photo."""
    everything = np.arange(scan.num_rows, dtype=np.int64)
    if not scan.num_rows or not index.num_rows:
        return pa.array(everything)
    eligible = index.column("eligible")
    if not pc.all(eligible).as_py():
        index = index.filter(eligible)
    positions = lookup(scan.column(FILE_KEY), index.column(FILE_KEY))
    hits = np.flatnonzero(positions >= 0)
    matched = np.zeros(scan.num_rows, bool)
    for start in range(0, len(hits), _CONFIRM_SLICE):
        rows = pa.array(hits[start: start + _CONFIRM_SLICE])
        there = pa.array(positions[hits[start: start + _CONFIRM_SLICE]])
        same = pc.and_(pc.equal(_single(index.column("bytes")).take(there), _single(scan.column("bytes")).take(rows)),
                       pc.equal(_single(index.column("mtime")).take(there), _single(scan.column("mtime")).take(rows)))
        matched[hits[start: start + _CONFIRM_SLICE]] = pc.fill_null(same, False).to_numpy(zero_copy_only=False)
    return pa.array(everything[~matched])


def content_matches(base: CurrentBase, image_ids: Sequence[str]) -> pa.Table:
    """The eligible current images rows scored without error (newest per content) whose image_id is in
    `image_ids`."""
    empty = SCHEMAS["images"].remove(SCHEMAS["images"].get_field_index("run_date")).empty_table()
    if base.folder is None or not image_ids:
        return empty
    wanted = pa.array(sorted(set(image_ids)), pa.string())
    files = [str(base.folder / "images" / p) for p in base.parts]
    only_ids = ds.dataset(files, format="parquet", schema=pa.schema([empty.schema.field("image_id")]))
    if not only_ids.count_rows(filter=pc.field("image_id").isin(wanted)):  # new photos: one narrow column read
        return empty
    # only contents scored without error: a file changed to content that failed elsewhere is scored itself
    rows = ds.dataset(files, format="parquet", schema=empty.schema).to_table(
        filter=pc.field("image_id").isin(wanted) & (pc.field("status") != "error"))
    if base.index.num_rows and rows.num_rows:  # only rows still current (the history holds older ones too)
        current = base.index.filter(base.index.column("eligible")).column(FILE_KEY)
        rows = rows.filter(pa.array(lookup(file_keys(rows.column("root"), rows.column("path")), current) >= 0))
    if not rows.num_rows:
        return empty
    order = pc.sort_indices(rows, [("image_id", "ascending"), ("scored_at", "descending")])
    rows = rows.take(order)
    ids = rows.column("image_id")
    first = np.ones(rows.num_rows, bool)
    if rows.num_rows > 1:
        first[1:] = pc.not_equal(ids.slice(1), ids.slice(0, rows.num_rows - 1)).to_numpy(zero_copy_only=False)
    return rows.filter(pa.array(first))


def carried_faces(base: CurrentBase, sources: pa.Table) -> pa.Table:
    """The current faces rows of `sources` (images rows), matched on the columns that tie a face to its image."""
    empty = FACES_SCHEMA.remove(FACES_SCHEMA.get_field_index("run_date")).empty_table()
    if base.folder is None or not sources.num_rows:
        return empty
    files = [str(base.folder / "faces" / p) for p in base.parts if (base.folder / "faces" / p).exists()]
    if not files:
        return empty
    wanted = pa.array(sorted(set(sources.column("image_id").to_pylist())), pa.string())
    faces = ds.dataset(files, format="parquet", schema=empty.schema).to_table(
        filter=pc.field("image_id").isin(wanted))
    identity = face_identity(faces)
    return faces.join(sources.select(identity), keys=identity, join_type="left semi").select(empty.schema.names)


@dataclass
class CurrentUpdate:
    """What a committing run changes in the current table, besides adding its own new rows."""

    base: CurrentBase
    found: pa.Array  # file keys of every file the scan found
    scope: list[str]  # the scanned roots as text: files under them that were not found and are gone leave
    carried_images: pa.Table | None = None
    carried_faces: pa.Table | None = None


def _in_scope(keys: pa.Array, scope: Sequence[str]) -> np.ndarray:
    inside = np.zeros(len(keys), bool)
    for root in scope:
        prefix = root.rstrip("/") + "/"
        inside |= pc.starts_with(keys, prefix).to_numpy(zero_copy_only=False)
        inside |= pc.equal(keys, root).to_numpy(zero_copy_only=False)
    return inside


def _kept_rows(update: CurrentUpdate, replaced: pa.Array) -> np.ndarray:
    """Per base row: does it stay? Found and not replaced by a newer row; or outside this run's folders; or not
    found but still there (left out by --include / --exclude)."""
    keys = update.base.index.column(FILE_KEY)
    if not len(keys):
        return np.zeros(0, bool)
    found = lookup(keys, update.found) >= 0
    newer = lookup(keys, replaced) >= 0
    keep = found & ~newer
    missing = np.flatnonzero(~found & _in_scope(keys, update.scope))
    unscoped = ~found & ~_in_scope(keys, update.scope)
    keep |= unscoped & ~newer
    for i in missing:  # usually the few photos deleted since the last run
        keep[i] = not newer[i] and os.path.lexists(keys[int(i)].as_py())
    return keep


def changes_current(update: CurrentUpdate) -> bool:
    """Whether a commit of `update` with no newly scored rows would change the current table: photos deleted
    or moved, damaged parts left out, or a folder whose current table is still to be built from its history."""
    base = update.base
    if base.from_history:
        return bool(base.parts)
    if (update.carried_images is not None and update.carried_images.num_rows) or base.dropped_parts:
        return True
    return not bool(np.all(_kept_rows(update, pa.array([], pa.string()))))


def _link(source: Path, target: Path) -> None:
    """A hard link (no data written); a copy where the file system has none."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _write(table: pa.Table, target: Path, metadata: dict | None = None) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if "run_date" in table.column_names:  # parts written before run_date left the files
        table = table.drop_columns(["run_date"])
    if metadata is not None:
        table = table.replace_schema_metadata(metadata)
    pq.write_table(table, target, compression="snappy")
    with open(target, "rb") as handle:
        os.fsync(handle.fileno())


def _empty(table: str) -> pa.Table:
    schema = SCHEMAS[table]
    return schema.remove(schema.get_field_index("run_date")).empty_table()


def _has_partition_column(path: Path) -> bool:
    return "run_date" in pq.read_schema(path).names


def build_version(
    out_dir: str | Path,
    run_id: str,
    run_date: date,
    update: CurrentUpdate,
    new_parts: Sequence[tuple[Path, Path | None, str]],
    metadata: dict[str, str],
) -> Path | None:
    """Write the next current version (not yet live) and return its folder; None when nothing would change.

    `new_parts`: this run's (images tmp, faces tmp or None, part path relative to a table folder).
    """
    out_dir, base = Path(out_dir), update.base
    new_keys = [file_keys(t.column("root"), t.column("path"))
                for t in (pq.read_table(images, columns=["root", "path"]) for images, _, _ in new_parts)]
    if update.carried_images is not None and update.carried_images.num_rows:
        new_keys.append(file_keys(update.carried_images.column("root"), update.carried_images.column("path")))
    replaced = pa.chunked_array(new_keys, pa.string()).combine_chunks() if new_keys else pa.array([], pa.string())
    keep = _kept_rows(update, replaced)
    part_ids = base.index.column("part").to_numpy()
    kept_per_part = np.bincount(part_ids[keep], minlength=len(base.parts))
    total_per_part = np.bincount(part_ids, minlength=len(base.parts))
    carried = update.carried_images is not None and update.carried_images.num_rows > 0
    unchanged = (not base.from_history and not new_parts and not carried and not base.dropped_parts
                 and bool(np.all(kept_per_part == total_per_part)))
    if unchanged or (base.from_history and not base.parts and not new_parts):
        return None
    version = out_dir / VERSIONS_DIR / run_id
    if version.exists():
        shutil.rmtree(version)
    for table in CURRENT_TABLES:
        (version / table).mkdir(parents=True)
    by_part = np.argsort(part_ids, kind="stable")  # the index's rows of part i: by_part[starts[i]:starts[i + 1]]
    starts = np.concatenate([[0], np.cumsum(total_per_part)])
    for i, part in enumerate(base.parts):
        images, faces = base.folder / "images" / part, base.folder / "faces" / part
        kept = int(kept_per_part[i])
        # history parts may also hold rows a newer run replaced, which the index left out
        total = pq.ParquetFile(images).metadata.num_rows if base.from_history else int(total_per_part[i])
        if kept == 0:
            continue
        if kept == total and not (base.from_history and _has_partition_column(images)):
            _link(images, version / "images" / part)
            if faces.exists():
                _link(faces, version / "faces" / part)
            else:
                _write(_empty("faces"), version / "faces" / part)
            continue
        # By key: a part holds one row per file (one run's), and the history's parts also older rows of files
        # that a newer run scored again, which the index left out.
        image_rows = pq.read_table(images, partitioning=None)
        keys = file_keys(image_rows.column("root"), image_rows.column("path"))
        rows = by_part[starts[i]: starts[i + 1]]
        wanted = base.index.column(FILE_KEY).take(pa.array(rows[keep[rows]]))
        image_rows = image_rows.filter(pc.is_in(keys, value_set=wanted))
        rewritten = revised_part(part, run_id)  # never the old name: a reader may have listed it
        _write(image_rows, version / "images" / rewritten, image_rows.schema.metadata)
        face_rows = pq.read_table(faces, partitioning=None) if faces.exists() else _empty("faces")
        identity = face_identity(face_rows)
        if face_rows.num_rows:
            face_rows = face_rows.join(image_rows.select(identity), keys=identity, join_type="left semi")
            face_rows = face_rows.select([c for c in pq.read_schema(faces).names if c in face_rows.column_names])
        _write(face_rows, version / "faces" / rewritten, face_rows.schema.metadata)
    for images, faces, part in new_parts:
        _link(images, version / "images" / part)
        if faces is not None and Path(faces).exists():
            _link(faces, version / "faces" / part)
        else:
            _write(_empty("faces"), version / "faces" / part)
    encoded = {f"ferbatch.{k}".encode(): v.encode() for k, v in metadata.items()}
    partition = f"run_date={run_date.isoformat()}"
    if carried:
        name = f"{partition}/part-{run_id}-{CARRIED}.parquet"
        _write(update.carried_images, version / "images" / name, encoded)
        _write(update.carried_faces if update.carried_faces is not None else _empty("faces"),
               version / "faces" / name, encoded)
    if not any((version / "images").glob("run_date=*/*.parquet")):  # every photo gone: readers still find a table
        for table in CURRENT_TABLES:
            _write(_empty(table), version / table / f"{partition}/part-{run_id}.parquet", encoded)
    return version


def switch(out_dir: str | Path, version: Path) -> None:
    """Make `version` the live current table: one atomic rename of a symlink."""
    out_dir = Path(out_dir)
    link = out_dir / CURRENT_LINK
    staging = out_dir / f".{CURRENT_LINK}.link"
    if staging.is_symlink() or staging.exists():
        staging.unlink()
    os.symlink(os.path.relpath(version, out_dir), staging, target_is_directory=True)
    os.replace(staging, link)
    directory = os.open(out_dir, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)


def prune_versions(out_dir: str | Path, keep: Iterable[str] = ()) -> None:
    """Delete version folders other than the live one, the one before it (a reader may still be reading it),
    and `keep` (a version a pending commit will switch to)."""
    root = Path(out_dir) / VERSIONS_DIR
    if not root.is_dir():
        return
    live = live_version(out_dir)
    # by creation time: run ids started in the same second do not sort by time
    names = [p.name for p in sorted((p for p in root.iterdir() if p.is_dir()),
                                    key=lambda p: (p.stat().st_mtime_ns, p.name))]
    keep = set(keep)
    if live is not None and live.name in names:
        keep.add(live.name)
        older = names[: names.index(live.name)]
        if older:
            keep.add(older[-1])
    for name in names:
        if name not in keep:
            shutil.rmtree(root / name, ignore_errors=True)
    for stray in (Path(out_dir) / f".{CURRENT_LINK}.link",):
        if stray.is_symlink():
            stray.unlink()


CURRENT_RUN_ID = "current"  # the run_id of aggregates computed over the current table


def current_aggregates(out_dir: str | Path) -> pa.Table | None:
    """The aggregates table's rows computed over the current table (one row per photo), or None before the first
    current version: what `ferbatch report` shows by default. `run_id` is "current", `run_date` the newest run
    date in the table, `model_version` the models that scored its rows."""
    import pandas as pd

    from ferbatch.classes import CLASS_NAMES
    from ferbatch.reports._rows import sentiment_shares
    from ferbatch.reports._schemas import AGGREGATES_SCHEMA, GROUP_BYS

    version = live_version(out_dir)
    if version is None or not (version / "images").is_dir():
        return None
    images = ds.dataset(str(version / "images"), format="parquet", partitioning="hive").to_table(
        columns=["folder", "taken_at", "status", "n_faces", "sentiment", "sentiment_score", "emotion",
                 "model_version", "run_id"]).to_pandas()
    dates = sorted({p.name.removeprefix("run_date=") for p in (version / "images").glob("run_date=*")})
    run_date = date.fromisoformat(dates[-1]) if dates else date.today()
    models = ", ".join(sorted(images.model_version.unique())) or "-"
    taken = pd.to_datetime(images.taken_at, utc=True)
    keys = {"all": pd.Series("all", index=images.index), "folder": images.folder,
            "taken_date": taken.dt.strftime("%Y-%m-%d").where(taken.notna(), None)}
    rows = []
    for group_by in GROUP_BYS:
        frame = images.assign(_group=keys[group_by].astype(object))
        groups = frame.groupby("_group", dropna=False, sort=False)
        for value, group in sorted(groups, key=lambda item: (pd.isna(item[0]), "" if pd.isna(item[0]) else item[0])):
            ok = group[group.status == "ok"]
            counts = ok.sentiment.value_counts().to_dict()
            emotions = ok.emotion.value_counts().to_dict()
            rows.append({
                "run_id": CURRENT_RUN_ID, "run_date": run_date, "group_by": group_by,
                "group_value": None if pd.isna(value) else str(value),
                "n_images": len(group), "n_ok": len(ok), "n_no_face": int((group.status == "no_face").sum()),
                "n_error": int((group.status == "error").sum()), "n_faces": int(group.n_faces.sum()),
                **{f"share_{s}": share for s, share in sentiment_shares(counts, len(ok)).items()},
                "mean_sentiment_score": float(ok.sentiment_score.astype(float).mean()) if len(ok) else None,
                **{f"n_{name.lower()}": int(emotions.get(name, 0)) for name in CLASS_NAMES},
                "model_version": models,
            })
    return pa.Table.from_pylist(rows, schema=AGGREGATES_SCHEMA)
