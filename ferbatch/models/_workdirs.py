"""Work folders of the nightly fine-tune: one of its own per run inside the registry, removed when the run ends,
also when it is interrupted (a SIGTERM), and found and removed by the next run when the process was killed.

The fine-tune used the registry's `.work/` folder, which `ferbatch train --resume` keeps for a resumable run: an
interrupted night left it there, and a night could overwrite a user's resumable checkpoint.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

PREFIX = ".work-nightly-"
_LOCK = ".lock"
Cleanup = Callable[[], None]
_held: dict[Path, tuple[int, Cleanup]] = {}  # work folder -> (its lock's descriptor, what takes its cleanup back)


def _remove_stale(root: Path) -> None:
    """Remove the work folders of runs that ended without removing theirs (no process holds their lock)."""
    for folder in root.glob(f"{PREFIX}*"):
        try:
            descriptor = os.open(folder / _LOCK, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            shutil.rmtree(folder, ignore_errors=True)
            continue
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # a run in progress
        finally:
            os.close(descriptor)
        shutil.rmtree(folder, ignore_errors=True)


def _nothing(cleanup: Cleanup) -> Cleanup:
    return lambda: None


def nightly_work_dir(root: str | Path, on_interrupt: Callable[[Cleanup], Cleanup] = _nothing) -> Path:
    """A new work folder for one fine-tune, locked by this process until `release_work_dir`.

    `on_interrupt` registers the folder's removal with whatever ends the process on a signal and returns how to
    take it back (the flows pass `ferbatch.runtime.interrupts.add_cleanup`); by default nothing is registered.
    """
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale(root)
    folder = Path(tempfile.mkdtemp(prefix=PREFIX, dir=root))
    descriptor = os.open(folder / _LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fcntl.flock(descriptor, fcntl.LOCK_EX)

    def remove() -> None:
        shutil.rmtree(folder, ignore_errors=True)

    forget = on_interrupt(remove)  # an interruption that ends the process at once removes it too
    _held[folder] = (descriptor, forget)
    return folder


def release_work_dir(folder: str | Path) -> None:
    """Remove a work folder from `nightly_work_dir` and its lock."""
    folder = Path(folder)
    descriptor, forget = _held.pop(folder, (None, None))
    shutil.rmtree(folder, ignore_errors=True)
    if forget is not None:
        forget()
    if descriptor is not None:
        with contextlib.suppress(OSError):
            os.close(descriptor)
