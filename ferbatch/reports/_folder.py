"""An output folder's layout, its lock and its datasets: what the store, its readers and the migration share."""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.dataset as ds

from ferbatch.errors import FerbatchError
from ferbatch.reports._schemas import SCHEMAS

LOCK_FILE = ".ferbatch.lock"
STAGING_DIR = ".ferbatch-staging"  # OUT/.ferbatch-staging/<table>/run_date=.../part-*.parquet.tmp
RUN_DATE_PARTITIONING = ds.partitioning(pa.schema([("run_date", pa.date32())]), flavor="hive")  # run_date=YYYY-MM-DD


def _os_reason(exc: OSError) -> str:
    """An OSError's reason, naming the path it is about when that is not the one the message names."""
    reason = exc.strerror or type(exc).__name__
    return f"{reason}: {exc.filename}" if exc.filename else reason


def _busy(out_dir: Path) -> FerbatchError:
    return FerbatchError(f"{out_dir}: another ferbatch run is writing into this folder; "
                         "wait for it to finish or use another --out")


class _OutDirLock:
    """An exclusive lock on an output folder for one run, so two runs never write into it at once.

    The operating system releases it when the process ends, however it ends.
    """

    def __init__(self, out_dir: str | Path) -> None:
        self.path = Path(out_dir) / LOCK_FILE
        self._handle = None

    def __enter__(self) -> _OutDirLock:
        while True:
            handle = self._open()
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                raise _busy(self.path.parent) from None
            # A run that created the folder and found nothing removes it with its lock file (`remove`): a
            # lock taken on that file meanwhile is on a name that is gone, so take it again on the new one.
            if self._still_named(handle):
                break
            handle.close()
        self._handle = handle
        return self

    def _open(self):
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:  # a read-only or forbidden parent, or a file where a folder should be
            raise FerbatchError(f"{self.path.parent}: cannot create the report folder "
                                f"({_os_reason(exc)})") from None
        try:
            return open(self.path, "a+")
        except IsADirectoryError:
            raise FerbatchError(f"{self.path}: is a folder, not ferbatch's lock file; remove it") from None
        except OSError as exc:
            raise FerbatchError(f"{self.path}: cannot open the lock file ({exc.strerror or exc})") from None

    def _still_named(self, handle) -> bool:
        try:
            named, held = os.stat(self.path), os.fstat(handle.fileno())
        except FileNotFoundError:
            return False
        return (named.st_dev, named.st_ino) == (held.st_dev, held.st_ino)

    def remove(self, folder_too: bool) -> None:
        """Delete the lock file (and its folder, when it is empty then) while still holding the lock."""
        if self._handle is None:
            return
        self.path.unlink(missing_ok=True)
        if folder_too:
            with contextlib.suppress(OSError):
                self.path.parent.rmdir()

    @staticmethod
    def check_free(out_dir: str | Path) -> None:
        """Fail now, with the same message as a run would, if another run holds the folder; creates nothing."""
        try:
            with open(Path(out_dir) / LOCK_FILE, "rb") as handle:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)  # released as the file closes
        except BlockingIOError:
            raise _busy(Path(out_dir)) from None
        except OSError:  # no lock file (or none readable): taking the lock later says what is wrong
            return

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
