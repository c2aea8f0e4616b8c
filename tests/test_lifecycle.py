"""Runs and processes: no process outlives `ferbatch`, a run with nothing to do skips Prefect, the output folder's
lock is checked before anything starts, and the temporary server's start-up is bounded with one clear error."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from click.testing import CliRunner
from imagefactory import PHOTOS, encode, synthetic

from ferbatch.cli import cli
from ferbatch.errors import FerbatchError
from ferbatch.reports import ReportStore
from ferbatch.reports._store import LOCK_FILE
from ferbatch.scoring import ScoreSettings, preview_run, run_scoring

TESTS = Path(__file__).parent


def _photo_folder(folder: Path, n: int = 1) -> Path:
    folder.mkdir(parents=True)
    for i in range(n):
        (folder / f"{i}.jpg").write_bytes(encode(synthetic(150, 120, seed=i), "JPEG"))
    return folder


def _bare_environment(tmp_path: Path) -> dict[str, str]:
    """A user with no Prefect API configured anywhere: no PREFECT_API_URL, a Prefect home without profiles."""
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PREFECT_PROFILES_PATH")}
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")
    env["PYTHONUNBUFFERED"] = "1"
    return env


# `ferbatch` in a subprocess with the fakes' model, and a temporary server that must not start: if anything
# asks for one, the process says so and exits 99. At exit it reports whether Prefect was imported at all.
_CLI_WITHOUT_SERVER = """
import atexit, sys
sys.path.insert(0, {tests!r})
import ferbatch.runtime.prefect_api as api
import ferbatch.scoring
from fakes import FakeComponents

def no_server(*args, **kwargs):
    print("TEMPORARY SERVER REQUESTED", flush=True)
    raise SystemExit(99)

api.start_temporary_server = no_server
ferbatch.scoring.Components.for_run = classmethod(lambda cls, *args, **kwargs: FakeComponents())
atexit.register(lambda: print("prefect imported:", "prefect" in sys.modules, flush=True))
sys.argv = ["ferbatch", *{argv!r}]
from ferbatch.cli import main
main()
"""


def _ferbatch_without_server(tmp_path: Path, *argv: str | Path) -> subprocess.CompletedProcess:
    script = _CLI_WITHOUT_SERVER.format(tests=str(TESTS), argv=[str(a) for a in argv])
    return subprocess.run([sys.executable, "-c", script], env=_bare_environment(tmp_path), cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)


def test_a_run_with_nothing_new_says_so_without_prefect(tmp_path):
    from fakes import FakeComponents

    folder, out = _photo_folder(tmp_path / "in", 2), tmp_path / "out"
    run_scoring(ScoreSettings(folders=[folder], out=out), FakeComponents())
    before = sorted(p.relative_to(out) for p in out.rglob("*"))

    done = _ferbatch_without_server(tmp_path, "score", folder, "--out", out, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "TEMPORARY SERVER REQUESTED" not in done.stdout and "prefect imported: False" in done.stdout
    summary = json.loads(done.stdout[: done.stdout.rindex("}") + 1])
    assert (summary["images_found"], summary["already_scored"], summary["scored"]) == (2, 2, 0)
    assert "2 image(s) found, all already scored" in done.stderr
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before  # nothing written


def test_a_run_that_finds_no_images_creates_no_output_folder(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "notes.txt").write_text("no photos here")
    done = _ferbatch_without_server(tmp_path, "score", folder, "--out", tmp_path / "out")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "TEMPORARY SERVER REQUESTED" not in done.stdout and "prefect imported: False" in done.stdout
    assert "no images found" in done.stdout and f"no images found under {folder}" in done.stderr
    assert not (tmp_path / "out").exists()

    strict = _ferbatch_without_server(tmp_path, "score", folder, "--out", tmp_path / "out", "--fail-on-empty")
    assert strict.returncode == 4 and strict.stderr.splitlines()[-1].startswith("Error: no images found under")
    assert not (tmp_path / "out").exists()


def test_new_images_do_ask_for_the_server(tmp_path):
    """The other side of the two tests above: the injected server is what a run with work starts."""
    done = _ferbatch_without_server(tmp_path, "score", _photo_folder(tmp_path / "in"), "--out", tmp_path / "out")
    assert done.returncode == 99 and "TEMPORARY SERVER REQUESTED" in done.stdout
    assert not (tmp_path / "out").exists()  # the preview wrote nothing


def test_a_folder_another_run_holds_is_refused_before_any_server_starts(tmp_path):
    folder, out = _photo_folder(tmp_path / "in"), tmp_path / "out"
    out.mkdir()
    with open(out / LOCK_FILE, "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another run's lock
        done = _ferbatch_without_server(tmp_path, "score", folder, "--out", out)
    assert done.returncode == 1
    assert "TEMPORARY SERVER REQUESTED" not in done.stdout
    assert done.stderr.splitlines() == [f"Error: {out}: another ferbatch run is writing into this folder; "
                                        "wait for it to finish or use another --out"]


def test_with_a_configured_api_a_run_with_nothing_new_is_recorded_as_usual(tmp_path, monkeypatch):
    import ferbatch_flows.score
    from fakes import FakeComponents

    import ferbatch.runtime.prefect_api
    import ferbatch.scoring

    folder, out = _photo_folder(tmp_path / "in"), tmp_path / "out"
    run_scoring(ScoreSettings(folders=[folder], out=out), FakeComponents())
    flow_calls = []

    def recorded_flow(settings, sentiment, **kwargs):
        flow_calls.append(settings)
        return run_scoring(settings, FakeComponents()).to_dict()

    def no_server(*args, **kwargs):
        raise AssertionError("a configured API needs no temporary server")

    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    monkeypatch.setattr(ferbatch.runtime.prefect_api, "check_api", lambda url: None)  # as if a server answered there
    monkeypatch.setattr(ferbatch.runtime.prefect_api, "start_temporary_server", no_server)
    monkeypatch.setattr(ferbatch.scoring.Components, "for_run", classmethod(lambda cls, *a, **k: FakeComponents()))
    monkeypatch.setattr(ferbatch_flows.score, "score", recorded_flow)
    result = CliRunner().invoke(cli, ["score", str(folder), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert len(flow_calls) == 1 and "nothing new to score" in result.output


def test_preview_reads_without_writing_and_stops_at_the_first_new_image(tmp_path):
    from fakes import FakeComponents

    folder, out = _photo_folder(tmp_path / "in", 3), tmp_path / "out"
    settings = ScoreSettings(folders=[folder], out=out)
    first = preview_run(settings, "fake-1")
    assert first.has_new and first.n_found == 1 and not out.exists()
    model = FakeComponents().model_version
    run_scoring(settings, FakeComponents())
    assert preview_run(settings, model).has_new is False and preview_run(settings, model).n_found == 3
    assert preview_run(settings, model, rescore=True).has_new
    assert preview_run(settings, "another-model").has_new
    (folder / "new.jpg").write_bytes(encode(synthetic(160, 120, seed=9), "JPEG"))
    assert preview_run(settings, model).has_new
    with pytest.raises(FerbatchError, match="no such file or folder"):
        preview_run(ScoreSettings(folders=[tmp_path / "missing"], out=out), model)


def test_a_deleted_or_moved_photo_is_work_for_a_run_though_nothing_is_new(tmp_path):
    """The current table must drop a deleted photo and follow a moved one, so such a run still commits."""
    from fakes import FakeComponents

    folder, out = _photo_folder(tmp_path / "in", 3), tmp_path / "out"
    settings = ScoreSettings(folders=[folder], out=out)
    model = FakeComponents().model_version
    run_scoring(settings, FakeComponents())
    assert preview_run(settings, model).has_new is False
    photos = sorted(folder.glob("*.jpg"))
    photos[0].unlink()
    assert preview_run(settings, model).has_new
    run_scoring(settings, FakeComponents())
    assert preview_run(settings, model).has_new is False
    (folder / "moved").mkdir()
    photos[1].rename(folder / "moved" / photos[1].name)
    assert preview_run(settings, model).has_new
    run_scoring(settings, FakeComponents())
    assert preview_run(settings, model).has_new is False


def test_the_preview_reads_no_photo_the_run_will_read(tmp_path, monkeypatch):
    """New photos are found by their fingerprint: hashing them in the preview would read each one twice."""
    from fakes import FakeComponents

    import ferbatch.scoring._run as run_module

    folder, out = _photo_folder(tmp_path / "in", 3), tmp_path / "out"
    settings = ScoreSettings(folders=[folder], out=out)
    run_scoring(settings, FakeComponents())
    (folder / "new.jpg").write_bytes(encode(synthetic(160, 120, seed=9), "JPEG"))
    reads = []
    monkeypatch.setattr(run_module, "file_id", lambda file, *a: reads.append(file) or pytest.fail("read"))
    assert preview_run(settings, FakeComponents().model_version).has_new and reads == []


def test_the_lock_check_creates_nothing_and_sees_another_holder(tmp_path):
    out = tmp_path / "out"
    ReportStore(out).check_free()
    assert not out.exists()
    # a run holding the folder, as another process would
    with ReportStore(out).open_run(), pytest.raises(FerbatchError, match="another ferbatch run is writing"):
        ReportStore(out).check_free()
    ReportStore(out).check_free()


def test_a_run_that_scores_nothing_leaves_no_lone_lock_file(tmp_path):
    from fakes import FakeComponents

    empty = tmp_path / "empty"
    empty.mkdir()
    run_scoring(ScoreSettings(folders=[empty], out=tmp_path / "new"), FakeComponents())
    assert not (tmp_path / "new").exists()
    (tmp_path / "mine").mkdir()  # a folder the user made: kept, without a lock file in it
    run_scoring(ScoreSettings(folders=[empty], out=tmp_path / "mine"), FakeComponents())
    assert list((tmp_path / "mine").iterdir()) == []
    scored = tmp_path / "scored"
    run_scoring(ScoreSettings(folders=[_photo_folder(tmp_path / "in")], out=scored), FakeComponents())
    run_scoring(ScoreSettings(folders=[empty], out=scored), FakeComponents())
    assert (scored / LOCK_FILE).exists() and list((scored / "images").rglob("*.parquet"))


def test_a_lock_taken_on_a_lock_file_its_holder_removed_is_taken_again(tmp_path, monkeypatch):
    """Run A removes its folder's lock file (it scored nothing) while run B had opened that name: B's lock on
    the removed file would not exclude a third run, so B takes it again on the folder's new lock file."""
    from ferbatch.reports._store import _OutDirLock

    out = tmp_path / "out"
    first = _OutDirLock(out)
    first.__enter__()
    stale = open(first.path, "a+")  # noqa: SIM115 -- B opened the name before A removed it
    first.remove(folder_too=True)
    first.__exit__(None, None, None)
    opened = []
    real_open = _OutDirLock._open

    def open_stale_first(self):
        opened.append(stale if not opened else real_open(self))
        return opened[-1]

    monkeypatch.setattr(_OutDirLock, "_open", open_stale_first)
    with _OutDirLock(out) as second:
        assert len(opened) == 2 and second._handle is opened[1] and stale.closed
        assert second._still_named(second._handle) and out.is_dir()


@pytest.mark.parametrize("contents", [None, "lock"])
def test_report_on_a_folder_without_a_scored_run_is_one_line(tmp_path, contents):
    folder = tmp_path / "out"
    folder.mkdir()
    if contents:
        (folder / LOCK_FILE).write_text("")
    result = CliRunner().invoke(cli, ["report", str(folder)])
    assert result.exit_code == 1
    expected = "no scored run yet" if contents else "not a ferbatch --out folder (no scored run)"
    assert result.output.splitlines() == [f"Error: {folder}: {expected}" + (
        " (a run with nothing new writes no report)" if contents else "")]


def test_a_server_that_does_not_start_is_one_error_line_after_a_retry(tmp_path, monkeypatch):
    from fakes import FakeComponents

    import ferbatch.runtime.prefect_api as api
    import ferbatch.scoring

    launched: list[subprocess.Popen] = []

    def never_ready(cls, port=None):
        process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        launched.append(process)
        return cls(process, 9)

    monkeypatch.setattr(api, "configured_api_url", lambda: None)
    monkeypatch.setattr(api.TemporaryServer, "launch", classmethod(never_ready))
    monkeypatch.setattr(api.TemporaryServer, "wait_until_ready", lambda self, timeout_s: False)
    monkeypatch.setattr(ferbatch.scoring.Components, "for_run", classmethod(lambda cls, *a, **k: FakeComponents()))
    monkeypatch.setenv("FERBATCH_PREFECT__STARTUP_TIMEOUT", "0.5")
    result = CliRunner().invoke(cli, ["score", str(_photo_folder(tmp_path / "in")), "--out", str(tmp_path / "o")])
    assert result.exit_code == 1
    assert result.output.splitlines() == [
        "Error: Prefect's temporary server did not start in 0.5 s (2 tries); raise prefect.startup_timeout or "
        "set PREFECT_API_URL to a running server"]
    assert len(launched) == 2 and all(process.poll() is not None for process in launched)


def test_the_wait_for_the_server_ends_when_its_process_does(tmp_path):
    from ferbatch.runtime.prefect_api import TemporaryServer

    exited = TemporaryServer(subprocess.Popen([sys.executable, "-c", "pass"]), 9)
    started = time.monotonic()
    assert exited.wait_until_ready(60) is False
    assert time.monotonic() - started < 30  # not the whole wait: it saw the process end


# A parent that starts the real server process the way `ferbatch` does and then waits to be killed.
_PARENT = """
import sys, time
from ferbatch.runtime.prefect_api import TemporaryServer
server = TemporaryServer.launch()
print(server.process.pid, flush=True)
time.sleep(120)
"""


def _threads(pid: int) -> int:
    try:
        return psutil.Process(pid).num_threads()
    except psutil.NoSuchProcess:
        return 0


def _gone(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_the_temporary_server_dies_with_a_parent_killed_by_sigkill(tmp_path):
    parent = subprocess.Popen([sys.executable, "-c", _PARENT], env=_bare_environment(tmp_path),
                              stdout=subprocess.PIPE, text=True)
    try:
        server = psutil.Process(int(parent.stdout.readline()))
        assert server.ppid() == parent.pid
        assert server.pid == os.getsid(server.pid)  # its own session: a signal to the terminal's group misses it
        deadline = time.monotonic() + 60
        while _threads(server.pid) < 2:  # the watchdog thread is up, so the parent-death signal is armed too
            assert time.monotonic() < deadline and server.is_running()
            time.sleep(0.05)
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 5
        while not _gone(server) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _gone(server), server.cmdline()
    finally:
        parent.kill()
        parent.wait()


def _descendants_until(child: subprocess.Popen, ready, timeout: float = 240) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    while True:
        assert child.poll() is None and time.monotonic() < deadline
        found = psutil.Process(child.pid).children(recursive=True)
        if ready(found):
            return found
        time.sleep(0.2)


def _api_answers(processes: list[psutil.Process]) -> bool:
    from ferbatch.runtime.prefect_api import _healthy

    servers = [p for p in processes if "ferbatch.runtime.prefect_api" in " ".join(p.cmdline())]
    return bool(servers) and _healthy(f"http://127.0.0.1:{servers[0].cmdline()[-1]}/api")


@pytest.mark.slow
@pytest.mark.parametrize("runner", ["local", "dask"])
def test_kill_9_of_a_running_score_leaves_no_process_of_the_run(tmp_path, runner):
    """The real command on real photos with its temporary server (and Dask workers), killed mid-run."""
    folder = tmp_path / "in"
    folder.mkdir()
    for photo in sorted(PHOTOS.glob("*.jpg")):
        for i in range(10):
            (folder / f"{photo.stem}_{i}.jpg").write_bytes(photo.read_bytes() + bytes([i]))
    args = ["--runner", "dask", "--dask-workers", "2"] if runner == "dask" else []
    child = subprocess.Popen([sys.executable, "-m", "ferbatch", "score", str(folder), "--out", str(tmp_path / "o"),
                              *args], env=_bare_environment(tmp_path), stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        if runner == "dask":  # the two worker processes are up
            processes = _descendants_until(child, lambda found: _api_answers(found) and sum(
                "spawn_main" in " ".join(p.cmdline()) for p in found) >= 2)
            # every worker reports to the parent's API, none to a Prefect server of its own
            server = next(p for p in processes if "ferbatch.runtime.prefect_api" in " ".join(p.cmdline()))
            api_url = f"http://127.0.0.1:{server.cmdline()[-1]}/api"
            assert {p.environ().get("PREFECT_API_URL") for p in processes if p != server} == {api_url}
            assert not [p.cmdline() for p in processes if "uvicorn" in " ".join(p.cmdline())]
        else:
            processes = _descendants_until(child, _api_answers)
        child.send_signal(signal.SIGKILL)
        child.wait()
        deadline = time.monotonic() + 5
        while not all(_gone(p) for p in processes) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert all(_gone(p) for p in processes), [p.cmdline() for p in processes if not _gone(p)]
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


# `ferbatch nightly` whose retrain trains for ever (a Python loop, as Keras' fit is between steps).
_ENDLESS_TRAINING = """
import sys, time
import ferbatch.training as training

def endless_fit(*args, **kwargs):
    print("training", file=sys.__stderr__, flush=True)  # not print(): the flow would log it
    while True:
        time.sleep(0.05)

training.fit = endless_fit
sys.argv = ["ferbatch", "--config", {config!r}, "nightly"]
from ferbatch.cli import main
main()
"""


@pytest.mark.slow
def test_sigterm_during_the_nightly_retrain_ends_the_process_at_once_in_one_line(tmp_path):
    """As `timeout 300 ferbatch --config night.toml nightly` does: SIGTERM to the process group, mid-training."""
    import queue
    import threading

    from conftest import SAMPLE_CSV

    photos = tmp_path / "photos"
    photos.mkdir()
    config = tmp_path / "night.toml"
    config.write_text(f'models_dir = "models"\n[train]\ndata = "{SAMPLE_CSV}"\npreset = "smoke"\n'
                      '[score]\nfolders = ["photos"]\nout = "reports"\n')
    child = subprocess.Popen([sys.executable, "-c", _ENDLESS_TRAINING.format(config=str(config))],
                             env=_bare_environment(tmp_path), cwd=tmp_path, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, start_new_session=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in child.stdout] + [lines.put(None)],
                     daemon=True).start()
    seen: list[str] = []
    try:
        while not seen or seen[-1] != "training\n":  # the model trains
            line = lines.get(timeout=300)
            assert line is not None, "".join(seen)
            seen.append(line)
        descendants = psutil.Process(child.pid).children(recursive=True)
        assert descendants, "expected the temporary server"
        started = time.monotonic()
        os.killpg(child.pid, signal.SIGTERM)
        code = child.wait(timeout=60)
        elapsed = time.monotonic() - started
        _, alive = psutil.wait_procs(descendants, timeout=5)
    finally:
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
    after = []
    while (line := lines.get(timeout=10)) is not None:
        after.append(line)
    assert code == 143, "".join(after)
    assert after == ["ferbatch: interrupted by SIGTERM; nothing was committed; the next run scores those images\n"]
    assert elapsed <= 6, elapsed  # interrupts.GRACE_S, and a second for a busy machine to schedule the exit
    assert not alive, [p.cmdline() for p in alive]
