"""The Prefect API a `ferbatch` command's flows report to: the configured one, or a temporary server of its own.

Without PREFECT_API_URL, Prefect starts a temporary API server on the first flow call and stops it from
an atexit hook. That server outlived a `ferbatch` that was SIGKILLed or OOM-killed, died first on a
signal to the terminal's process group (so Prefect retried for minutes to record the interrupted run),
was started once more by every Dask worker, and got a fixed 20 s to start. So ferbatch starts that
server itself, before the first flow, and:

- it ends when the `ferbatch` process ends, however it ends: on Linux the kernel sends it SIGKILL when
  its parent dies (PR_SET_PDEATHSIG), and elsewhere a watchdog thread in it exits once its parent is gone;
- it runs in its own session, so Ctrl-C or `timeout` reach `ferbatch` alone, which records the
  interrupted run and then stops the server (ferbatch.runtime.interrupts);
- PREFECT_API_URL points at it, in this process and in the environment its subprocesses inherit, so
  Dask workers report to it instead of starting servers of their own;
- the start-up wait is `prefect.startup_timeout` seconds (ferbatch.toml or
  FERBATCH_PREFECT__STARTUP_TIMEOUT), with one retry on a fresh port; then one `Error:` line.

Run as `python -m ferbatch.runtime.prefect_api PARENT_PID PORT`, this module is that server.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from ferbatch.errors import FerbatchError

DEFAULT_STARTUP_TIMEOUT_S = 120.0
STOP_GRACE_S = 5.0
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
_running: list[TemporaryServer] = []


def _prefect_settings_files() -> bool:
    """Whether a file Prefect reads its settings from is there: a profiles file, or prefect.toml, .env or
    pyproject.toml's [tool.prefect] in the working folder. Without one, only the environment can set the API,
    and importing Prefect (seconds on a busy machine) to ask is not needed."""
    home = Path(os.environ.get("PREFECT_HOME") or Path.home() / ".prefect").expanduser()
    profiles = Path(os.environ.get("PREFECT_PROFILES_PATH") or home / "profiles.toml").expanduser()
    if profiles.exists() or Path("prefect.toml").exists() or Path(".env").exists():
        return True
    try:
        return "tool.prefect" in Path("pyproject.toml").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False


def configured_api_url() -> str | None:
    """The Prefect API a user configured (environment, Prefect profile or settings files), if any."""
    if os.environ.get("PREFECT_API_URL"):
        return os.environ["PREFECT_API_URL"]
    if "prefect.settings" not in sys.modules and not _prefect_settings_files():
        return None
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    return str(url) if url else None


def temporary_server_running() -> bool:
    """Whether the API this process reports to is ferbatch's temporary server (which fires no schedules)."""
    return bool(_running)


def _free_port() -> int:
    with contextlib.closing(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except (OSError, ValueError):  # refused, reset, timed out, HTTP errors (URLError is an OSError)
        return False


class TemporaryServer:
    """Prefect's API server as a child process of this one that cannot outlive it."""

    def __init__(self, process: subprocess.Popen, port: int) -> None:
        self.process, self.port = process, port

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @classmethod
    def launch(cls, port: int | None = None) -> TemporaryServer:
        """Start the server process (not waiting for it to answer)."""
        from prefect.settings import get_current_settings

        port = port or _free_port()
        env = {
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",  # no telemetry unless asked for
            **os.environ,
            # What Prefect's own temporary server sets: no UI, the ephemeral app's settings.
            "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1",
            # Settings changed in this process (e.g. PREFECT_HOME in a test) reach the server too.
            **get_current_settings().to_environment_variables(exclude_unset=True),
        }
        env.pop("PREFECT_API_URL", None)
        process = subprocess.Popen(
            [sys.executable, "-m", "ferbatch.runtime.prefect_api", str(os.getpid()), str(port)],
            env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True,
        )
        return cls(process, port)

    def wait_until_ready(self, timeout_s: float) -> bool:
        """Poll the health endpoint until it answers, the process ends or `timeout_s` passes."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            if _healthy(self.api_url):
                return True
            time.sleep(0.1)
        return False

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after STOP_GRACE_S; reaps the process."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_temporary_server(startup_timeout_s: float, attempts: int = 2) -> TemporaryServer:
    """Start the server and wait for it; a second attempt on a fresh port, then a FerbatchError."""
    for _ in range(attempts):
        server = TemporaryServer.launch()
        if server.wait_until_ready(startup_timeout_s):
            return server
        server.stop()
    raise FerbatchError(
        f"Prefect's temporary server did not start in {startup_timeout_s:g} s ({attempts} tries); "
        "raise prefect.startup_timeout or set PREFECT_API_URL to a running server")


def _unreachable(url: str, attempts: int = 2, timeout_s: float = 3.0) -> str | None:
    """Why nothing answers at a configured API URL (refused, no such host, timed out), or None when a server does:
    any HTTP answer counts, an authentication error too (Prefect Cloud)."""
    reason = "no answer"
    for attempt in range(attempts):
        try:
            with urllib.request.urlopen(f"{url.rstrip('/')}/health", timeout=timeout_s):
                return None
        except urllib.error.HTTPError:
            return None
        except urllib.error.URLError as exc:
            inner = exc.reason
            reason = getattr(inner, "strerror", None) or str(inner)
        except (OSError, ValueError) as exc:  # a timeout, a reset, a URL that is not one
            reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
        if attempt + 1 < attempts:
            time.sleep(0.5)
    return reason


def check_api(url: str) -> None:
    """Fail in one line, before a flow starts, when nothing answers at the configured Prefect API (else every
    Prefect call would retry for a minute and end in tracebacks)."""
    reason = _unreachable(url)
    if reason is not None:
        raise FerbatchError(f"PREFECT_API_URL {url}: no Prefect server answers there ({reason}); start it "
                            "(`prefect server start`) or unset PREFECT_API_URL for a temporary one")


@contextlib.contextmanager
def prefect_api(startup_timeout_s: float = DEFAULT_STARTUP_TIMEOUT_S) -> Iterator[str]:
    """Inside, flows report to the configured Prefect API, or to a temporary server stopped on the way out."""
    configured = configured_api_url()
    if configured:
        check_api(configured)
        yield configured
        return
    from prefect.settings import PREFECT_API_URL, PREFECT_UI_URL, temporary_settings

    server = start_temporary_server(startup_timeout_s)
    _running.append(server)
    os.environ["PREFECT_API_URL"] = server.api_url  # subprocesses (Dask workers) report here too
    try:
        # No UI runs there: an empty UI URL keeps Prefect from printing "View at" links to it.
        with temporary_settings(updates={PREFECT_API_URL: server.api_url, PREFECT_UI_URL: ""}):
            try:
                yield server.api_url
            finally:
                _drain_prefect_workers()  # a failed run's logs too
    finally:
        os.environ.pop("PREFECT_API_URL", None)
        _running.remove(server)
        server.stop()


def _drain_prefect_workers(timeout_s: float = 10.0) -> None:
    """Let Prefect send its queued run logs and events while the server is still there (else they fail at
    exit); bounded, in case the server is gone."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    workers = [w for cls in (APILogWorker, EventsWorker) for w in list(getattr(cls, "_instances", {}).values())]
    waiters = [threading.Thread(target=w.wait_until_empty, daemon=True) for w in workers]
    for waiter in waiters:
        waiter.start()
    deadline = time.monotonic() + timeout_s
    for waiter in waiters:
        waiter.join(max(0.0, deadline - time.monotonic()))


# --- the server process -------------------------------------------------------------------------------------


def _die_with(parent: int) -> None:
    """End this process when `parent` ends: the kernel's parent-death signal where there is one, and a
    watchdog thread in any case (a parent that died before prctl ran is caught by both checks)."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    if os.getppid() != parent:
        os._exit(0)
    threading.Thread(target=watch, name="ferbatch-parent-watchdog", daemon=True).start()


def _serve(parent: int, port: int) -> None:
    _die_with(parent)
    import uvicorn

    uvicorn.run("prefect.server.api.server:create_app", factory=True, host="127.0.0.1", port=port,
                log_level="error", lifespan="on")


if __name__ == "__main__":
    _serve(int(sys.argv[1]), int(sys.argv[2]))
