"""Keep TensorFlow's, absl's, CUDA's and OpenCV's native start-up chatter off a user's terminal.

TensorFlow 2.21 writes "All log messages before absl::InitializeLog()", the oneDNN notice and the
CUDA stub lines from C++ straight to file descriptor 2, before Python logging exists and whatever
TF_CPP_MIN_LOG_LEVEL says; OpenCV writes `[ WARN:...]` lines the same way. Environment variables
alone do not silence them, so `silence_native_stderr()` puts a filter on fd 2: Python keeps writing
to the real stderr (so `isatty()` and progress bars are unchanged) while native writes, of this
process and of every subprocess it starts (Prefect's temporary server, Dask workers), pass through
a thread that drops the known noise lines and forwards everything else. `ferbatch -v` skips it.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import os
import re
import sys
import threading
from collections.abc import Iterator

# The environment every ferbatch process and its subprocesses get, set before TensorFlow, OpenCV or
# Prefect load (the variables a user set win).
QUIET_ENVIRONMENT = {
    "TF_CPP_MIN_LOG_LEVEL": "3",  # TensorFlow's own C++ INFO/WARNING lines (older versions honour it)
    "OPENCV_LOG_LEVEL": "ERROR",  # OpenCV's `[ WARN:...]` lines, e.g. "setPreferableTarget Targets ..."
    "GRPC_VERBOSITY": "ERROR",
    "ABSL_MIN_LOG_LEVEL": "3",
}

# absl/glog line prefix: severity, MMDD, time, thread id, file:line]
_NOISE = re.compile(
    rb"^(?:"
    rb"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    rb"|[IWEF]\d{4} \d\d:\d\d:\d+\.\d+\s+\d+ [\w./-]+:\d+\]"
    rb"|\[ ?(?:WARN|INFO|DEBUG|VERBOSE):\d+@[\d.]+\]"  # OpenCV's logger
    rb"|To enable the following instructions: .* rebuild TensorFlow"  # cpu_feature_guard's second line
    rb")"
)


def is_noise(line: bytes) -> bool:
    """Whether a line written to fd 2 is native library chatter (TensorFlow, absl, CUDA, OpenCV)."""
    return bool(_NOISE.match(line.lstrip(b"\r")))


def quiet_environment() -> None:
    """Set `QUIET_ENVIRONMENT` in os.environ where unset; subprocesses inherit it."""
    for name, value in QUIET_ENVIRONMENT.items():
        os.environ.setdefault(name, value)


def _forward(read_fd: int, out_fd: int) -> None:
    """Copy fd 2's pipe to the real stderr without the noise. Once the real stderr is gone (a closed pipe,
    as in `ferbatch ... 2>&1 | head`), keep reading and drop it all: a writer to a full pipe would block."""
    open_out = [True]

    def write(data: bytes) -> None:
        if data and open_out[0]:
            try:
                os.write(out_fd, data)
            except OSError:
                open_out[0] = False

    with open(read_fd, "rb", buffering=0) as pipe:
        pending = b""
        while chunk := pipe.read(65536):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            write(b"".join(line + b"\n" for line in lines if not is_noise(line)))
        if pending and not is_noise(pending):
            write(pending)


_installed: list[int] = []


def silence_native_stderr() -> None:
    """Filter native noise out of fd 2 for the rest of this process (and its subprocesses); idempotent."""
    if _installed:
        return
    try:
        sys.stderr.flush()
        real_fd = os.dup(2)
    except (OSError, AttributeError, ValueError):
        return  # no usable fd 2 (an embedding host): nothing to filter
    read_fd, write_fd = os.pipe()
    os.set_inheritable(real_fd, False)
    # Python's own writes go to the real stderr, unfiltered; the text layer keeps isatty() truthful.
    sys.stderr = io.TextIOWrapper(io.FileIO(real_fd, "w", closefd=False), encoding=sys.stderr.encoding,
                                  errors="backslashreplace", line_buffering=True, write_through=True)
    os.dup2(write_fd, 2)
    os.close(write_fd)
    thread = threading.Thread(target=_forward, args=(read_fd, real_fd), name="ferbatch-stderr-filter", daemon=True)
    thread.start()
    _installed.append(real_fd)

    def restore() -> None:
        # Give fd 2 back so the pipe closes (subprocesses that still hold it end with this process).
        try:
            sys.stderr.flush()
            os.dup2(real_fd, 2)
        except (OSError, ValueError):
            return
        thread.join(timeout=1.0)

    atexit.register(restore)


@contextlib.contextmanager
def native_stderr_filtered() -> Iterator[None]:
    """Native noise kept off fd 2 for the duration only (the Python API's first model and detector load), then fd
    2 as it was: a library does not keep a process's stderr. A no-op where the command's filter is installed."""
    quiet_environment()
    if _installed:
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, AttributeError, ValueError):
        yield
        return
    read_fd, write_fd = os.pipe()
    os.dup2(write_fd, 2)
    os.close(write_fd)
    thread = threading.Thread(target=_forward, args=(read_fd, saved), name="ferbatch-stderr-window", daemon=True)
    thread.start()
    try:
        yield
    finally:
        with contextlib.suppress(OSError, ValueError):
            sys.stderr.flush()
        os.dup2(saved, 2)  # the pipe's last writer closes: the forwarder reads to its end and stops
        thread.join(timeout=2.0)
        os.close(saved)
