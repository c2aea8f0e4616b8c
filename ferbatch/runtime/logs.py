"""Logging for the command line: ferbatch's own lines on stderr, Prefect's run logs without noise."""

from __future__ import annotations

import logging
import sys

from ferbatch.errors import FerbatchError
from ferbatch.safe.text import printable


class _UserErrorsWithoutTraceback(logging.Filter):
    """Prefect logs a failed task's traceback; for a FerbatchError the message alone says it all."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], FerbatchError):
            record.exc_info, record.exc_text = None, None
        return True


def _quiet_user_errors_in_prefect_logs() -> None:
    for name in ("prefect.flow_runs", "prefect.task_runs"):
        run_logger = logging.getLogger(name)
        if not any(isinstance(f, _UserErrorsWithoutTraceback) for f in run_logger.filters):
            run_logger.addFilter(_UserErrorsWithoutTraceback())


class _PrintableMessages(logging.Filter):
    """ferbatch's log lines name files and folders: shown with control and bidirectional characters escaped, as
    every other view shows names, so a hostile name in a warning never acts on the terminal."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("ferbatch") and not getattr(record, "_ferbatch_printable", False):
            record.msg, record.args = printable(record.getMessage()), None
            record._ferbatch_printable = True
        return True


def _user_error_names() -> set[str]:
    names, todo = set(), [FerbatchError]
    while todo:
        cls = todo.pop()
        names.add(cls.__name__)
        todo.extend(cls.__subclasses__())
    return names


class _UserErrorsOnceOnTheTerminal(logging.Filter):
    """Prefect reports a run that failed on a user error four times (task failed, task state, flow failed, flow
    state); the command prints that error as its one `Error:` line, so the terminal does not repeat it. Prefect's
    API still records every line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith("prefect"):
            return True
        if record.exc_info and isinstance(record.exc_info[1], FerbatchError):
            return False
        message = record.getMessage()
        return not any(f"{name}(" in message or f"{name}:" in message for name in _user_error_names())


def _quiet_user_errors_on_prefect_consoles() -> None:
    try:
        from prefect.logging.handlers import PrefectConsoleHandler
    except ImportError:
        return
    loggers = [logging.getLogger(), *(logger for logger in logging.root.manager.loggerDict.values()
                                      if isinstance(logger, logging.Logger))]
    for logger in loggers:
        for handler in logger.handlers:
            if isinstance(handler, PrefectConsoleHandler) and not any(
                    isinstance(f, _UserErrorsOnceOnTheTerminal) for f in handler.filters):
                handler.addFilter(_UserErrorsOnceOnTheTerminal())
                handler.addFilter(_PrintableMessages())


def hand_logging_to_prefect() -> None:
    """Inside a flow, Prefect's console handler prints ferbatch's lines (an extra logger); ours would double them."""
    package_logger = logging.getLogger("ferbatch")
    for handler in [h for h in package_logger.handlers if isinstance(h, _CurrentStderr)]:
        package_logger.removeHandler(handler)
    _quiet_user_errors_on_prefect_consoles()


class _CurrentStderr(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time (click's test runner swaps it per invocation)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def configure_logging(verbose: bool = False) -> None:
    """Only ferbatch's own logger: third-party INFO lines (HTTP requests and the like) are noise here."""
    package_logger = logging.getLogger("ferbatch")
    if not any(isinstance(h, _CurrentStderr) for h in package_logger.handlers):
        handler = _CurrentStderr()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
        handler.addFilter(_PrintableMessages())
        package_logger.addHandler(handler)
    package_logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    _quiet_user_errors_in_prefect_logs()
