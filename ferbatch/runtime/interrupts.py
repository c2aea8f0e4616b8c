"""SIGTERM and SIGINT end `ferbatch score` and `ferbatch nightly` within seconds and leave no process behind.

Prefect starts its temporary API server (and a Dask LocalCluster its workers) as child processes of
the `ferbatch` process. Python's default SIGTERM action kills the process without running the atexit
hooks that stop them, so they outlived it; on Ctrl-C the server died with the process group and Prefect
spent minutes retrying to report the interrupted run to it. Here the first signal lets the run unwind
(so Prefect can record it as crashed), the children are terminated, and the process exits within `GRACE_S`
seconds of the signal, at once at a second one, with a code that says whether the run committed. Meanwhile
nothing more is logged to the terminal (Prefect's API still gets the run's record): the line `finish`
writes is the one the user sees. The codes:

- 0: the run committed its reports (the signal came later, e.g. while Prefect recorded the run);
- 130 (SIGINT) or 143 (SIGTERM): interrupted before its commit; nothing of it is in the reports, and
  the next run scores those images (the report folder's protocol is safe against any interruption).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator

GRACE_S = 5.0  # from the first signal to the end of the process, children included
CHILD_GRACE_S = 2.0  # how long children get to stop after SIGTERM before SIGKILL
SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Interrupted(BaseException):  # like KeyboardInterrupt: `except Exception` lets it by
    """Raised in the main thread by the first SIGTERM or SIGINT."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"interrupted by {signal.Signals(signum).name}")
        self.signum = signum


def exit_code(signum: int) -> int:
    """0 when a run committed in this process, else 128 + the signal number."""
    from ferbatch.reports import committed_runs

    return 0 if committed_runs() else 128 + signum


def _children(pid: int) -> list[int]:
    """Every descendant of `pid` (Linux /proc; psutil elsewhere when it is installed)."""
    try:
        import psutil

        return [child.pid for child in psutil.Process(pid).children(recursive=True)]
    except ImportError:
        pass
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        parents.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        waited, _ = os.waitpid(pid, os.WNOHANG)  # reap our own children, else they stay zombies
        if waited:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def terminate_children() -> None:
    """SIGTERM every descendant process, then SIGKILL those still there after CHILD_GRACE_S."""
    children = _children(os.getpid())
    for pid in children:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + CHILD_GRACE_S
    while (left := [pid for pid in children if _alive(pid)]) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in left:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    for pid in left:
        with contextlib.suppress(OSError):
            os.waitpid(pid, 0)


_cleanups: list[Callable[[], None]] = []


def add_cleanup(callback: Callable[[], None]) -> Callable[[], None]:
    """Run `callback` (a work folder removed) when an interruption ends the process at once (`finish`); returns
    the call that takes it back."""
    _cleanups.append(callback)
    return functools.partial(remove_cleanup, callback)


def remove_cleanup(callback: Callable[[], None]) -> None:
    with contextlib.suppress(ValueError):
        _cleanups.remove(callback)


def _hard_deadline(seconds: float) -> None:
    """A last resort that needs no Python thread: faulthandler's watchdog ends the process (exit code 1) even when
    native code holds the interpreter lock past the deadline (TensorFlow starting up)."""
    import faulthandler

    try:
        sink = open(os.devnull, "w")  # noqa: SIM115 -- kept open for the watchdog until the process ends
        _keep.append(sink)
        faulthandler.dump_traceback_later(seconds, exit=True, file=sink)
    except (OSError, ValueError, RuntimeError):
        pass


_keep: list = []


def finish(signum: int) -> None:
    """End the process now: children first, then a one-line message and the exit code."""
    code = exit_code(signum)
    for callback in list(_cleanups):
        with contextlib.suppress(Exception):
            callback()
    terminate_children()
    outcome = "its reports were committed" if code == 0 else "nothing was committed; the next run scores those images"
    with contextlib.suppress(Exception):
        sys.stderr.write(f"ferbatch: interrupted by {signal.Signals(signum).name}; {outcome}\n")
        sys.stderr.flush()
    os._exit(code)


_received: list[int] = []
_active: list[bool] = []


def _arm(signum: int) -> None:
    """Note the signal; a second one ends the process now, the first in GRACE_S seconds at the latest."""
    if _received:  # a second signal: stop waiting for the run to unwind
        finish(_received[0])
    _received.append(signum)
    _hard_deadline(GRACE_S + 3 * CHILD_GRACE_S)
    _quiet_terminal_logging()

    def deadline() -> None:
        time.sleep(GRACE_S - CHILD_GRACE_S)  # the children's grace comes out of the same budget
        finish(signum)

    threading.Thread(target=deadline, name="ferbatch-interrupt-deadline", daemon=True).start()


def _quiet_terminal_logging() -> None:
    """Raise every console log handler above CRITICAL: an interrupted run's crash records (Prefect's, as it
    unwinds) are for its API and log files, not a terminal that gets `finish`'s one line."""
    loggers = [logging.getLogger(), *(logger for logger in logging.root.manager.loggerDict.values()
                                      if isinstance(logger, logging.Logger))]
    for logger in loggers:
        for handler in logger.handlers:
            if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
                handler.setLevel(logging.CRITICAL + 1)


_deferring: list[bool] = []
_pending: list[int] = []


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """No interruption inside (a run's commit renames): a signal that arrives is raised right after."""
    _deferring.append(True)
    try:
        yield
    finally:
        _deferring.pop()
        if _pending and not _deferring:
            raise Interrupted(_pending.pop())


_NATIVE_LIBRARIES = ("/tensorflow/", "/keras/", "/tf_keras/")


def _inside_tensorflow(frame: object) -> bool:
    """Whether the main thread is running TensorFlow or Keras code: unwinding an exception through it while its own
    threads still run (a starting fine-tune's input pipeline) crashed the process once in twelve (SIGSEGV)."""
    depth = 0
    while frame is not None and depth < 500:
        filename = getattr(getattr(frame, "f_code", None), "co_filename", "")
        if any(part in filename for part in _NATIVE_LIBRARIES):
            return True
        frame, depth = getattr(frame, "f_back", None), depth + 1
    return False


def _on_signal(signum: int, frame: object) -> None:
    _arm(signum)
    if _deferring:
        _pending.append(signum)
        return
    if _inside_tensorflow(frame):  # never unwound through TensorFlow: the process ends here, children first
        finish(signum)
    raise Interrupted(signum)


def keep_deadline() -> None:
    """Call inside a flow (main thread): Prefect's flow engine replaces the SIGTERM handler with its own, which
    unwinds the flow but may then wait for running tasks; wrap it so the deadline still holds."""
    if not _active or threading.current_thread() is not threading.main_thread():
        return
    prefect_handler = signal.getsignal(signal.SIGTERM)
    if prefect_handler is _on_signal or not callable(prefect_handler):
        return

    def deadline_then_prefect(signum: int, frame: object) -> None:
        _arm(signum)
        if _deferring:
            _pending.append(signum)
            return
        if _inside_tensorflow(frame):
            finish(signum)
        prefect_handler(signum, frame)

    signal.signal(signal.SIGTERM, deadline_then_prefect)


def interruptible(function: Callable) -> Callable:
    """Run a command under `handled()` (the `score` and `nightly` commands)."""

    @functools.wraps(function)
    def wrapper(*args: object, **kwargs: object) -> object:
        with handled():
            return function(*args, **kwargs)

    return wrapper


@contextlib.contextmanager
def handled() -> Iterator[None]:
    """Run a command under the handlers (main thread only); an interruption ends the process here."""
    if threading.current_thread() is not threading.main_thread():  # signal handlers live in the main thread
        yield
        return
    previous = {signum: signal.signal(signum, _on_signal) for signum in SIGNALS}
    _active.append(True)
    try:
        yield
    except Interrupted as exc:
        finish(exc.signum)
    except BaseException:
        if _received:  # the signal surfaced as another exception (e.g. Prefect's own on SIGTERM)
            finish(_received[0])
        raise
    finally:
        _active.pop()
        for signum, handler in previous.items():
            signal.signal(signum, handler)
