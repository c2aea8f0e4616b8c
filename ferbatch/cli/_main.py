"""The `ferbatch` console script: the process's environment and quiet start, then the group, with a failed
write to the output said in one line."""

from __future__ import annotations

import errno
import os
import sys

from ferbatch.cli._app import cli

# Defaults for the `ferbatch` process, set before TensorFlow or Prefect load (importing ferbatch changes nothing).
_ENVIRONMENT = {
    "PREFECT_LOGGING_EXTRA_LOGGERS": "ferbatch",  # ferbatch's own log lines go to Prefect's run logs too
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",  # keep Prefect quiet on offline machines
    "DO_NOT_TRACK": "1",  # and without its telemetry notice on a first run
    "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",  # progress lines from worker threads: no warning
}


def _verbose(argv: list[str]) -> bool:
    """`-v`/`--verbose` among the group's options, i.e. before the command name."""
    args = iter(argv)
    for arg in args:
        if arg in ("-v", "--verbose"):
            return True
        if arg == "--config":
            next(args, None)  # its value
        elif not arg.startswith("-"):
            return False
    return False


_OUTPUT_ERRORS = {errno.ENOSPC, errno.EPIPE, errno.EIO, errno.EDQUOT, errno.EFBIG, errno.EBADF, errno.ECONNRESET}


def _output_failed(exc: OSError) -> None:
    """The output cannot be written (`> /dev/full`, a closed pipe): one line on stderr, exit code 1, and no second
    complaint from Python as it flushes stdout on its way out."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
    if exc.errno != errno.EPIPE:  # a reader that went away needs no message
        sys.stderr.write(f"Error: cannot write the output ({exc.strerror or exc})\n")
        sys.stderr.flush()
    sys.exit(1)


def main() -> None:
    from ferbatch.runtime.quiet import quiet_environment, silence_native_stderr

    for name, value in _ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    if not _verbose(sys.argv[1:]):  # -v shows TensorFlow's, absl's, CUDA's and OpenCV's own lines
        quiet_environment()
        silence_native_stderr()
    code: object = 0
    try:
        cli()
    except SystemExit as done:
        code = done.code
    except OSError as exc:
        # A write to stdout that failed (a full disk, a closed pipe) carries no file name; every other OSError the
        # commands meet names its file in a FerbatchError. Said in one line; anything else here is a bug.
        if exc.filename is None and exc.errno in _OUTPUT_ERRORS:
            _output_failed(exc)
        raise
    try:
        sys.stdout.flush()
    except OSError as exc:
        _output_failed(exc)
    sys.exit(code)
