"""Writing only ferbatch's own files: a new file never goes through a link or over what is there, and a report
target is replaced only when it is a regular file (or nothing), through a temporary file of a random name beside it.

A path named by a user (`report --html PATH`) may be anything: a device, a FIFO, a link planted where a
predictable temporary name would be, a folder that does not exist. Each is refused in one line naming the path.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

from ferbatch.errors import FerbatchError
from ferbatch.safe.text import printable

_KINDS = ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO (named pipe)"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"))


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def os_reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


def create_new(path: str | Path, data: bytes, mode: int = 0o666) -> bool:
    """Write `data` to a new file at `path` (O_EXCL | O_NOFOLLOW: never through a link, never over a file);
    False when something is there already. Other OS errors are raised."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
    except FileExistsError:
        return False
    try:
        with open(descriptor, "wb", closefd=True) as handle:
            handle.write(data)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(path)  # a half-written file of ours (a full disk) is not left behind
        raise
    return True


def replace_atomically(path: str | Path, data: bytes, before_replace: Callable[[], object] | None = None) -> None:
    """Write `data` under a random temporary name in `path`'s folder, then rename it over `path` (which the caller
    has checked may be replaced; `before_replace` checks it once more, just before). The temporary file is removed
    on any failure."""
    path = Path(path)
    descriptor, tmp = tempfile.mkstemp(prefix=f".{path.name[:100]}.", suffix=".tmp", dir=path.parent)
    try:
        with open(descriptor, "wb", closefd=True) as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # as an ordinary new file would be (mkstemp makes it private)
        if before_replace is not None:
            before_replace()
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def check_target(path: str | Path, what: str = "file") -> Path:
    """Refuse, in one line, a target that must not be written: a missing folder (never created silently), or
    something there that is not a regular file (a device, a FIFO, a link, a folder)."""
    path = Path(path)
    shown = printable(str(path))
    parent = path.parent
    try:
        folder = os.stat(parent)
    except FileNotFoundError:
        raise FerbatchError(f"{shown}: the folder {printable(str(parent))} does not exist; create it first") from None
    except OSError as exc:
        raise FerbatchError(f"{shown}: cannot write the {what} ({os_reason(exc)})") from None
    if not stat.S_ISDIR(folder.st_mode):
        raise FerbatchError(f"{shown}: {printable(str(parent))} is not a folder")
    try:
        status = os.lstat(path)
    except FileNotFoundError:
        return path
    except OSError as exc:
        raise FerbatchError(f"{shown}: cannot write the {what} ({os_reason(exc)})") from None
    if not stat.S_ISREG(status.st_mode):
        raise FerbatchError(f"{shown}: {_kind(status.st_mode)}, not a regular file; not replaced (name a new file "
                            f"or a {what} to replace)")
    return path


def write_report_file(path: str | Path, data: bytes, what: str = "file") -> Path:
    """Write a report a user named: refused unless the target is missing or a regular file in an existing folder;
    written through a random temporary name in that folder, then renamed over it. One line on any failure."""
    path = check_target(path, what)
    try:
        replace_atomically(path, data, before_replace=lambda: check_target(path, what))
    except OSError as exc:
        raise FerbatchError(f"{printable(str(path))}: cannot write the {what} ({os_reason(exc)}); "
                            "nothing was replaced") from None
    return path
