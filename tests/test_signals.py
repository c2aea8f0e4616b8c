"""Issue 12, case 10: SIGTERM and SIGINT end `ferbatch score` within 10 s, leave no process behind (Prefect's
temporary server included) and exit with a code that says whether the run committed."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest
from imagefactory import PHOTOS

TESTS = Path(__file__).parent


def _slow_folder(folder: Path, copies: int = 40) -> Path:
    """Real photos with faces, each copy with distinct bytes (a tail after the JPEG's end), slow enough to signal."""
    folder.mkdir(parents=True)
    for photo in sorted(PHOTOS.glob("*.jpg")):
        data = photo.read_bytes()
        for i in range(copies):
            (folder / f"{photo.stem}_{i:03d}.jpg").write_bytes(data + i.to_bytes(4, "big"))
    return folder


def _drain(lines: queue.Queue, seen: list[str]) -> list[str]:
    while not lines.empty() and (line := lines.get()) is not None:
        seen.append(line)
    return seen


def _lines(stream, into: queue.Queue) -> None:
    for line in stream:
        into.put(line)
    into.put(None)


@pytest.mark.parametrize("how", ["SIGTERM to the process", "SIGINT to the process group"])
def test_a_signal_ends_the_run_within_10_seconds_with_no_process_left_and_nothing_committed(
    tmp_path, prefect_home, how
):
    folder, out = _slow_folder(tmp_path / "in"), tmp_path / "out"
    env = {**os.environ, "PREFECT_HOME": str(prefect_home), "PYTHONUNBUFFERED": "1"}
    env.pop("PREFECT_API_URL", None)  # Prefect starts its temporary server, as for a user without one
    child = subprocess.Popen([sys.executable, "-m", "ferbatch", "score", str(folder), "--out", str(out)],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             start_new_session=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_lines, args=(child.stdout, lines), daemon=True).start()
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 240
        while not (out / ".ferbatch.lock").exists():  # the run has begun: it holds the folder's lock
            assert child.poll() is None and time.monotonic() < deadline, "".join(_drain(lines, seen))
            time.sleep(0.2)
        time.sleep(3)  # into the scan and the shard: detector and model at work, far from the commit
        descendants = psutil.Process(child.pid).children(recursive=True)
        assert descendants, "expected Prefect's temporary server as a child process"
        before = len(_drain(lines, seen))
        started = time.monotonic()
        if how.startswith("SIGTERM"):
            child.send_signal(signal.SIGTERM)
        else:
            os.killpg(child.pid, signal.SIGINT)
        code = child.wait(timeout=30)
        elapsed = time.monotonic() - started
        _, alive = psutil.wait_procs(descendants, timeout=5)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
    while (line := lines.get(timeout=10)) is not None:
        seen.append(line)
    after = "".join(seen[before:])
    assert elapsed <= 10, (elapsed, after)
    assert not alive, [p.cmdline() for p in alive]
    assert code == (143 if how.startswith("SIGTERM") else 130), after
    assert "nothing was committed" in after and "Traceback" not in after, after
    assert not list((out / "images").glob("run_date=*/*.parquet"))  # the interrupted run left no rows


_EXIT_CODE_SCRIPT = """
import os, signal, sys
sys.path.insert(0, {tests!r})
from fakes import FakeComponents
from ferbatch.runtime.interrupts import deferred, handled
from ferbatch.scoring import ScoreSettings, run_scoring

import ferbatch.reports._store as store
renames = store._roll_forward


def signalled_between_renames(manifest):
    os.kill(os.getpid(), signal.SIGTERM)  # lands while the run is committing
    return renames(manifest)


store._roll_forward = signalled_between_renames
with handled():
    if {commit!r}:
        run_scoring(ScoreSettings(folders=[{folder!r}], out={out!r}), FakeComponents(), defer_signals=deferred)
        print("not interrupted", flush=True)
    os.kill(os.getpid(), signal.SIGTERM)
    signal.pause()
"""


@pytest.mark.parametrize("commit", [True, False])
def test_the_exit_code_after_a_signal_says_whether_the_run_committed(tmp_path, commit):
    """A signal during the commit takes effect once it is done: exit 0, the reports complete."""
    from imagefactory import encode, synthetic

    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(encode(synthetic(150, 120), "JPEG"))
    script = _EXIT_CODE_SCRIPT.format(tests=str(TESTS), commit=commit, folder=str(folder), out=str(tmp_path / "out"))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == (0 if commit else 143), done.stderr
    expected = "its reports were committed" if commit else "nothing was committed"
    assert f"ferbatch: interrupted by SIGTERM; {expected}" in done.stderr and "Traceback" not in done.stderr
    assert "not interrupted" not in done.stdout  # the signal did end the run, right after the commit
    parts = list((tmp_path / "out").glob("*/run_date=*/*.parquet"))
    assert len(parts) == (3 if commit else 0) and not list((tmp_path / "out").glob(".ferbatch-commit-*"))


def test_the_score_flow_gives_the_commit_the_processs_signal_deferral(tmp_path, monkeypatch):
    """The store knows nothing of signals: the flow hands it `deferred`, which the test above relies on."""
    import ferbatch_flows.score as flow_module
    from fakes import FakeComponents

    from ferbatch.runtime.interrupts import deferred
    from ferbatch.scoring import ScoreSettings

    received = {}

    class Stop(Exception):
        pass

    def run_scoring(settings, components, **kwargs):
        received.update(kwargs)
        raise Stop

    monkeypatch.setattr(flow_module.scoring, "run_scoring", run_scoring)
    monkeypatch.setattr(flow_module.scoring.Components, "for_run", classmethod(lambda cls, *a, **k: FakeComponents()))
    with pytest.raises(Stop):
        flow_module.score.fn(ScoreSettings(folders=[tmp_path], out=tmp_path / "out"))
    assert received["defer_signals"] is deferred


def test_a_run_that_committed_and_then_lost_its_prefect_server_exits_0_with_a_warning(tmp_path, monkeypatch):
    import ferbatch_flows.score
    import httpx
    from click.testing import CliRunner
    from fakes import FakeComponents
    from imagefactory import encode, synthetic

    from ferbatch.cli import cli
    from ferbatch.scoring import run_scoring

    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(encode(synthetic(150, 120), "JPEG"))

    def commits_then_loses_the_server(settings, sentiment, **kwargs):
        run_scoring(settings, FakeComponents())
        raise httpx.ConnectError("All connection attempts failed")

    monkeypatch.setattr(ferbatch_flows.score, "score", commits_then_loses_the_server)
    result = CliRunner().invoke(cli, ["score", str(folder), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "committed its reports, but Prefect could not record the end of the run (All connection attempts" \
        in result.output
    assert len(list((tmp_path / "out" / "images").glob("run_date=*/*.parquet"))) == 1
