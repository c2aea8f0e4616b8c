"""The output folder's files: streaming writers, the commit protocol, recovery, the lock and the scored index."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import date
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from ferbatch.errors import FerbatchError
from ferbatch.reports._current import (
    CURRENT_LINK,
    VERSIONS_DIR,
    CurrentBase,
    CurrentUpdate,
    build_version,
    current_aggregates,
    prune_versions,
    read_base,
    switch,
)
from ferbatch.reports._folder import LOCK_FILE, STAGING_DIR, _dataset, _OutDirLock
from ferbatch.reports._migrate import add_face_columns
from ferbatch.reports._read import read_rows
from ferbatch.reports._rows import FaceRow, ImageRow
from ferbatch.reports._schemas import SCHEMAS, TABLES

log = logging.getLogger(__name__)

COMMIT_ORDER = ("faces", "aggregates", "images")  # images last: its file marks a run as committed
MANIFEST_PREFIX = ".ferbatch-commit-"
TMP_SUFFIX = ".parquet.tmp"
DAMAGED_DIR = ".ferbatch-damaged"  # unreadable report files set aside: OUT/.ferbatch-damaged/<table>/run_date=.../
ROW_GROUP = 4096
_PART_NAME = re.compile(r"^part-(\d{8}T\d{6}Z-[0-9a-f]+)(?:-[a-z0-9]+)?\.parquet$")


class ReportWriter:
    """Streams rows into `.tmp` files, one per table, named `part-<run_id>[-<part>].parquet` once committed.

    A run may have several writers (one per shard, possibly in other processes); `close()` hands back
    the (tmp, final) pairs and `ReportStore.commit` makes all of a run's files visible together.
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

    def write(self, table: str, rows: Sequence[ImageRow | FaceRow | dict]) -> None:
        """Buffer rows; they reach the file in row groups of ROW_GROUP rows."""
        buffer = self._buffers[table]
        buffer.extend(row if isinstance(row, dict) else row.record() for row in rows)
        if len(buffer) >= ROW_GROUP:
            self._flush(table)

    def _flush(self, table: str) -> None:
        rows, self._buffers[table] = self._buffers[table], []
        if not rows:
            return
        if table not in self._writers:
            self._open(table)
        with self._writing(table):
            self._writers[table].write_table(pa.Table.from_pylist(rows, schema=self._writers[table].schema))

    def _open(self, table: str) -> None:
        tmp = self._tmp_path(table)
        # run_date lives in the folder name only (as Spark and pyarrow write hive partitions), so every reader
        # opens the folder with no options; snappy is the codec every BI reader (Power BI, Tableau, Spark) knows.
        schema = SCHEMAS[table].remove(SCHEMAS[table].get_field_index("run_date")).with_metadata(self.metadata)
        with self._writing(table):
            tmp.parent.mkdir(parents=True, exist_ok=True)
            self._writers[table] = pq.ParquetWriter(tmp, schema, compression="snappy")

    @contextmanager
    def _writing(self, table: str) -> Iterator[None]:
        """A write that fails (a full disk, a folder gone read-only) is one line naming the file; the run's
        unfinished files are removed and nothing of it is committed."""
        try:
            yield
        except (OSError, pa.ArrowException) as exc:
            path = self._tmp_path(table)
            self.abort()
            with contextlib.suppress(OSError):
                path.unlink(missing_ok=True)  # created before its writer failed to start: abort does not know it
            raise FerbatchError(f"{path}: cannot write the reports ({_write_reason(exc)}); nothing of run "
                                f"{self.run_id} was committed, its images are scored again next run") from None

    def close(self, tables: tuple[str, ...] = ()) -> list[tuple[str, str]]:
        """Finish the files; `tables` get a file even when empty. Returns (tmp, final) path pairs."""
        for table in tables:
            if table not in self._writers:
                self._open(table)
        for table in list(self._buffers):
            self._flush(table)
        moves = []
        for table, writer in list(self._writers.items()):
            with self._writing(table):
                writer.close()
            moves.append((str(self._tmp_path(table)), str(self.final_path(table))))
        self._writers.clear()
        return moves

    def abort(self) -> None:
        """Close and delete the unfinished files; never raises (it runs while another error is on its way)."""
        for table, writer in self._writers.items():
            with contextlib.suppress(OSError, pa.ArrowException):
                writer.close()  # fails again on a full disk: the file goes anyway
            with contextlib.suppress(OSError):
                self._tmp_path(table).unlink(missing_ok=True)
        self._writers.clear()
        self._buffers.clear()


def _write_reason(exc: BaseException) -> str:
    """A short reason: the OS's words for its error number ("No space left on device"), else the first line."""
    number = getattr(exc, "errno", None)
    if isinstance(number, int) and number > 0:
        return os.strerror(number)
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _manifest_path(out_dir: Path, run_id: str) -> Path:
    return out_dir / f"{MANIFEST_PREFIX}{run_id}.json"


def _commit_order(move: tuple[str, str]) -> int:
    return COMMIT_ORDER.index(Path(move[1]).parent.parent.name)


def _commit_parts(out_dir: str | Path, run_id: str, moves: list[tuple[str, str]],
                  version: Path | None = None) -> list[Path]:
    """Rename a run's finished `.tmp` files into place, `images` parts last, then switch the current table to
    `version` (built beforehand, not yet live).

    The plan is written to a manifest first, so if the process dies between renames the next run finishes
    them (`_recover_interrupted_runs`); until the switch, `OUT/current` is the previous version. A rename
    that fails (a folder that cannot be written) undoes the renames before it: readers see all of the run or
    none of it, and the error is one line.
    """
    out_dir = Path(out_dir)
    moves = sorted(moves, key=_commit_order)
    for tmp, _ in moves:  # the data must be on disk before the manifest promises it
        try:
            with open(tmp, "rb") as handle:
                os.fsync(handle.fileno())
        except OSError as exc:
            raise _commit_error(Path(tmp), exc, run_id) from None
    for _, final in moves:  # every target folder first: a failure here has made nothing visible
        try:
            Path(final).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _commit_error(Path(final).parent, exc, run_id) from None
    manifest = _manifest_path(out_dir, run_id)
    staging = manifest.with_name(manifest.name + ".tmp")
    try:
        with open(staging, "w") as handle:
            json.dump({"moves": moves, "current": version.name if version else None}, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(staging, manifest)
    except OSError as exc:
        staging.unlink(missing_ok=True)
        raise _commit_error(manifest, exc, run_id) from None
    try:
        return _roll_forward(manifest)
    except _RenameFailed as failed:
        if failed.undone:
            manifest.unlink(missing_ok=True)
            raise _commit_error(failed.path, failed.error, run_id) from None
        raise FerbatchError(f"{failed.path}: cannot write the reports ({_reason(failed.error)}) and the renames "
                            f"before it could not be undone; the next run finishes run {run_id}") from None


class _RenameFailed(Exception):
    def __init__(self, path: Path, error: OSError, undone: bool) -> None:
        super().__init__(str(path))
        self.path, self.error, self.undone = path, error, undone


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


def _commit_error(path: Path, exc: OSError, run_id: str) -> FerbatchError:
    return FerbatchError(f"{path}: cannot write the reports ({_reason(exc)}); nothing of run {run_id} was "
                         "committed, its images are scored again next run")


def _roll_forward(manifest: Path) -> list[Path]:
    """Do a manifest's renames and its current-table switch; on a failure, undo the renames done."""
    plan = json.loads(manifest.read_text())
    if isinstance(plan, list):  # manifests written before the current table
        plan = {"moves": plan, "current": None}
    out_dir = manifest.parent
    finals, done = [], []
    target = out_dir
    try:
        for tmp, final in plan["moves"]:
            target = Path(final)
            if Path(tmp).exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp, final)
                done.append((tmp, final))
            finals.append(target)
        if plan.get("current"):
            version = out_dir / VERSIONS_DIR / plan["current"]
            target = out_dir / CURRENT_LINK
            if version.is_dir():
                switch(out_dir, version)
    except OSError as exc:
        try:
            for tmp, final in reversed(done):
                os.replace(final, tmp)
        except OSError:
            raise _RenameFailed(target, exc, undone=False) from None
        raise _RenameFailed(target, exc, undone=True) from None
    manifest.unlink()
    return finals


def _abort_parts(moves: list[tuple[str, str]]) -> None:
    """Delete the `.tmp` files of a run that will not be committed."""
    for tmp, _ in moves:
        Path(tmp).unlink(missing_ok=True)


def _run_id_of(part: Path) -> str | None:
    match = _PART_NAME.match(part.name)
    return match.group(1) if match else None


def _recover_interrupted_runs(out_dir: str | Path) -> list[Path]:
    """Tidy what killed runs left: finish commits that had begun, delete everything else unfinished.

    A run whose manifest exists had all its files written; its renames and its current-table switch are
    completed. Then `.tmp` files, parts of runs without an `images` part and current-table versions no one
    points at are removed. Call only while holding `_OutDirLock`, so no live run's files are mistaken for
    leftovers.
    """
    out_dir = Path(out_dir)
    for manifest in sorted(out_dir.glob(f"{MANIFEST_PREFIX}*.json")):
        try:
            _roll_forward(manifest)
        except _RenameFailed as failed:
            raise FerbatchError(f"{failed.path}: cannot finish the commit of an interrupted run "
                                f"({_reason(failed.error)}); make the folder writable and run again") from None
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
    prune_versions(out_dir)
    return leftovers


def _move_aside(out_dir: Path, file: Path) -> Path:
    """Move `file` to the same place under OUT/.ferbatch-damaged/, never over an earlier one."""
    target = out_dir / DAMAGED_DIR / file.relative_to(out_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    n = 1
    while target.exists():
        target = target.with_name(f"{file.name}.{n}")
        n += 1
    os.replace(file, target)
    return target


def _set_aside_damaged(out_dir: str | Path) -> list[Path]:
    """Move every report file whose Parquet footer cannot be read to OUT/.ferbatch-damaged/, with a warning.

    Readers point at OUT/<table>/, so the moved files no longer break them (or the next run's scored
    index). A damaged ferbatch part takes its sibling in the other table (`images` and `faces` parts of
    the same run and shard) with it: those images are then no longer in the scored index and are scored
    again by this run, so no row is lost and no face is counted twice. Call only while holding the lock.
    """
    out_dir = Path(out_dir)
    damaged: list[Path] = []
    for table in TABLES:
        for path in sorted((out_dir / table).glob("run_date=*/*.parquet")):
            try:
                pq.read_metadata(path)
            except (pa.ArrowException, OSError) as exc:
                damaged.append(path)
                log.debug("%s: %s", path, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    moved: list[Path] = []
    for path in damaged:
        table, ours = path.parent.parent.name, _run_id_of(path) is not None
        siblings = [path]
        if ours and table in ("images", "faces"):
            siblings.append(out_dir / ("faces" if table == "images" else "images") / path.parent.name / path.name)
        for file in siblings:
            if file in moved or not file.exists():
                continue
            target = _move_aside(out_dir, file)
            moved.append(file)
            if file != path:
                log.warning("%s: moved to %s with its damaged sibling %s", file, target, path.name)
            elif not ours:
                log.warning("%s: not a readable Parquet file, moved to %s", file, target)
            elif table == "aggregates":
                log.warning("%s: not a readable Parquet file, moved to %s (a ferbatch part: that run's "
                            "aggregates are no longer in the reports)", file, target)
            else:
                log.warning("%s: not a readable Parquet file, moved to %s (a ferbatch part: its images are "
                            "scored again)", file, target)
    # A run left with no `images` part would count as uncommitted, and recovery would delete its
    # aggregates: they go aside too, named, so nothing is removed that was not ferbatch's to remove.
    runs_left = {_run_id_of(p) for p in (out_dir / "images").glob("run_date=*/part-*.parquet")}
    for file in list(moved):
        run = _run_id_of(file)
        if run is None or run in runs_left or file.parent.parent.name == "aggregates":
            continue
        for aggregate in (out_dir / "aggregates").glob(f"run_date=*/part-{run}*.parquet"):
            if _run_id_of(aggregate) == run:
                target = _move_aside(out_dir, aggregate)
                moved.append(aggregate)
                log.warning("%s: moved to %s: its run has no readable images part left", aggregate, target)
    return moved


def _read_error(out_dir: str | Path, table: str, exc: BaseException) -> FerbatchError:
    """A one-line error naming the file a dataset read failed on (found by reading each file alone)."""
    culprit = Path(out_dir) / table
    for path in sorted(culprit.glob("run_date=*/*.parquet")):
        try:
            pq.read_table(path, partitioning=None)
        except (pa.ArrowException, OSError) as error:
            culprit, exc = path, error
            break
    first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return FerbatchError(f"{culprit}: a report file cannot be read ({first}); "
                         f"move it out of the folder (see README, Reports)")


def _latest_aggregates(out_dir: str | Path) -> pa.Table | None:
    """The aggregates of the most recent run that scored images (else of the most recent run)."""
    dataset = _dataset(out_dir, "aggregates")
    if dataset is None:
        return None
    table = dataset.to_table()
    with_images = table.filter(pc.greater(table.column("n_images"), 0))
    runs = (with_images if with_images.num_rows else table).column("run_id").to_pylist()
    return table.filter(pc.equal(table.column("run_id"), max(runs)))


def _upgrade_parts(out_dir: Path) -> None:
    """Give parts written by earlier versions today's columns, so a folder's parts share one schema. A part
    that cannot be upgraded stays as it is (readers fill its columns in), and the run goes on."""
    try:
        upgraded = add_face_columns(out_dir, locked=True)
    except (FerbatchError, pa.ArrowException, OSError) as exc:
        log.warning("%s: faces parts of earlier versions not upgraded (%s)", out_dir, str(exc).splitlines()[0])
        return
    if upgraded:
        log.info("%d faces part(s) given their images' root, folder and taken_at", len(upgraded))


_COMMITTED: list[str] = []  # run ids committed by this process (the exit code on a signal says so)


def committed_runs() -> tuple[str, ...]:
    """The runs this process has committed, oldest first."""
    return tuple(_COMMITTED)


def metadata_json(**values: object) -> dict[str, str]:
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in values.items()}


def _holds_only_the_lock(out_dir: Path) -> bool:
    try:
        return [p.name for p in out_dir.iterdir()] == [LOCK_FILE]
    except OSError:
        return False


class ReportStore:
    """The output folder and its protocol, so callers never sequence the steps themselves.

    `open_run()` takes the folder's lock and tidies what killed runs left; inside it a run reads the
    `current_base`, streams each shard through its own `writer` (in any process: a store is just a
    path), then `commit`s every finished file at once, or `abort`s them. Readers see whole runs only.

    `defer_signals` is the process's way to hold a signal back while the commit renames its files (the `score`
    flow passes `ferbatch.runtime.interrupts.deferred`, so a SIGTERM then ends the run with "committed"); the store
    itself knows nothing of signals, and by default defers nothing.
    """

    def __init__(self, out_dir: str | Path,
                 defer_signals: Callable[[], AbstractContextManager[object]] = contextlib.nullcontext) -> None:
        self.out_dir = Path(out_dir)
        self.defer_signals = defer_signals

    def __repr__(self) -> str:
        return f"ReportStore({str(self.out_dir)!r})"

    @contextmanager
    def open_run(self) -> Iterator[ReportStore]:
        """One run at a time per folder, from scan to commit; refused with a clear message when taken.

        A run that leaves nothing but the lock file it created removes it, and the folder if it created that.
        """
        created_folder = not self.out_dir.exists()
        created_lock = created_folder or not (self.out_dir / LOCK_FILE).exists()
        with _OutDirLock(self.out_dir) as lock:
            try:
                leftovers = _recover_interrupted_runs(self.out_dir)
                if leftovers:
                    log.info("removed %d file(s) left by an interrupted run", len(leftovers))
                moved = _set_aside_damaged(self.out_dir)
                # Current rows whose history parts are gone (set aside, or of a run that never committed) go
                # too: their photos are scored again, as the history's are.
                self._dropped_runs = {run for p in leftovers if (run := _run_id_of(p)) is not None}
                self._dropped_parts = {p.relative_to(self.out_dir / p.parent.parent.name).as_posix() for p in moved
                                       if p.parent.parent.name in ("images", "faces")}
                _upgrade_parts(self.out_dir)
                yield self
            finally:
                if created_lock and _holds_only_the_lock(self.out_dir):
                    lock.remove(folder_too=created_folder)

    def check_free(self) -> None:
        """Raise the "another run is writing" error now if a run holds the folder (reads only)."""
        _OutDirLock.check_free(self.out_dir)

    def check_writable(self) -> None:
        """Raise now, in one line, the error a run would meet creating or writing the folder (reads only): a
        file where a folder should be, or a folder this user may not write into."""
        existing = self.out_dir
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        if not existing.is_dir():
            raise FerbatchError(f"{self.out_dir}: cannot create the report folder (Not a directory: {existing})")
        if not os.access(existing, os.W_OK | os.X_OK):
            what = "write into the report folder" if existing == self.out_dir else "create the report folder"
            raise FerbatchError(f"{self.out_dir}: cannot {what} (Permission denied: {existing})")

    def is_report_folder(self) -> bool:
        """Whether a run has used the folder (its lock file or a table folder is there)."""
        return any((self.out_dir / name).exists() for name in (LOCK_FILE, *TABLES))

    def has_committed_runs(self) -> bool:
        """Whether any run's images are in the folder (else the scored index is empty)."""
        return any((self.out_dir / "images").glob("run_date=*/*.parquet"))

    def current_base(self, model_version: str, keep_old_models: bool = False) -> CurrentBase:
        """The current table as this run finds it, indexed in columns (call inside `open_run`)."""
        try:
            return read_base(self.out_dir, model_version, keep_old_models,
                             dropped_runs=getattr(self, "_dropped_runs", ()),
                             dropped_parts=getattr(self, "_dropped_parts", ()))
        except (pa.ArrowException, OSError) as exc:  # damage past the footer, which open_run checks
            raise _read_error(self.out_dir, "images", exc) from None

    def writer(self, run_id: str, run_date: date, metadata: dict[str, str], part: str | None = None) -> ReportWriter:
        return ReportWriter(self.out_dir, run_id, run_date, metadata, part=part)

    def commit(self, run_id: str, moves: list[tuple[str, str]], update: CurrentUpdate | None = None,
               run_date: date | None = None, metadata: dict[str, str] | None = None) -> list[Path]:
        """Make a run's finished files visible together, and with them the current table's next version
        (built from `update` and this run's new parts); returns the history files' final paths."""
        version = None
        if update is not None:
            tmp_of = dict((final, tmp) for tmp, final in moves)
            new_parts = []
            for tmp, final in moves:
                final_path = Path(final)
                if final_path.parent.parent.name != "images":
                    continue
                relative = final_path.relative_to(self.out_dir / "images").as_posix()
                faces = tmp_of.get(str(self.out_dir / "faces" / relative))
                new_parts.append((Path(tmp), Path(faces) if faces else None, relative))
            try:
                version = build_version(self.out_dir, run_id, run_date or date.today(), update, new_parts,
                                        metadata or {})
            except (pa.ArrowException, OSError) as exc:
                shutil.rmtree(self.out_dir / VERSIONS_DIR / run_id, ignore_errors=True)
                self.abort(moves)
                first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                raise FerbatchError(f"{self.out_dir / CURRENT_LINK}: cannot write the current table ({first}); "
                                    f"nothing of run {run_id} was committed") from None
        if not moves and version is None:
            return []
        try:
            with self.defer_signals():  # a signal during the renames acts after them: the exit code says so
                finals = _commit_parts(self.out_dir, run_id, moves, version)
                _COMMITTED.append(run_id)
        except FerbatchError:
            if not _manifest_path(self.out_dir, run_id).exists():  # undone: the run leaves nothing behind
                if version is not None:
                    shutil.rmtree(version, ignore_errors=True)
                self.abort(moves)
            raise
        prune_versions(self.out_dir)
        return finals

    def abort(self, moves: list[tuple[str, str]]) -> None:
        """Delete the finished but uncommitted files of a run that will not be committed."""
        _abort_parts(moves)

    def history(self, table: str, columns: list[str] | None = None) -> pa.Table | None:
        """One history table (images, faces or aggregates), every run's rows; None before a run wrote it."""
        try:
            dataset = _dataset(self.out_dir, table)
            return None if dataset is None else dataset.to_table(columns=columns)
        except (pa.ArrowException, OSError) as exc:
            raise _read_error(self.out_dir, table, exc) from None

    def rows(self, table: str, *, folder: str | None = None, emotion: str | None = None,
             limit: int | None = None) -> pa.Table:
        """The images or faces rows of each image's latest scoring run (see `read_rows`)."""
        try:
            return read_rows(self.out_dir, table, folder=folder, emotion=emotion, limit=limit)
        except (pa.ArrowException, OSError) as exc:
            raise _read_error(self.out_dir, table, exc) from None

    def measured_rate(self) -> float | None:
        """Images per second of the most recent run that measured one (kept in its aggregates' metadata)."""
        for part in sorted((self.out_dir / "aggregates").glob("run_date=*/part-*.parquet"),
                           key=lambda p: p.name, reverse=True)[:50]:
            try:
                metadata = pq.read_schema(part).metadata or {}
                scored = int(metadata[b"ferbatch.images_scored"])
                seconds = float(metadata[b"ferbatch.seconds"])
            except (KeyError, ValueError, pa.ArrowException, OSError):
                continue
            if scored > 0 and seconds > 0:
                return scored / seconds
        return None

    def current_aggregates(self) -> pa.Table | None:
        """Aggregates over the current table (one row per photo that exists); None before it has one."""
        try:
            return current_aggregates(self.out_dir)
        except (pa.ArrowException, OSError) as exc:
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise FerbatchError(f"{self.out_dir / CURRENT_LINK}: the current table cannot be read ({first})") from None

    def run_aggregates(self, run_id: str) -> pa.Table:
        """One run's aggregates from the history; a one-line error naming the latest when there is no such run."""
        try:
            dataset = _dataset(self.out_dir, "aggregates")
            table = dataset.to_table(filter=ds.field("run_id") == run_id) if dataset is not None else None
        except (pa.ArrowException, OSError) as exc:
            raise _read_error(self.out_dir, "aggregates", exc) from None
        if table is None or not table.num_rows:
            latest = self.latest_aggregates()
            hint = f" (latest: {latest.column('run_id')[0].as_py()})" if latest is not None else ""
            raise FerbatchError(f"{self.out_dir}: no run {run_id!r}{hint}")
        return table

    def latest_aggregates(self) -> pa.Table | None:
        try:
            return _latest_aggregates(self.out_dir)
        except (pa.ArrowException, OSError) as exc:
            raise _read_error(self.out_dir, "aggregates", exc) from None
