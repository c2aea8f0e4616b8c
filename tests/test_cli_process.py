"""The inputs that used to end in tracebacks or reach a terminal raw, each through the real `ferbatch` process: its
exit code, one `Error:` line, no traceback; and names escaped in every view and format.

Each command runs in a process of its own, forked from one that imported `ferbatch.cli` once (a fresh Python per
command would cost seconds each): the child runs `ferbatch.cli.main()` with its own argv, environment and file
descriptors, as `ferbatch` does. One command also runs as a plain `python -m ferbatch`, where Python's own exit
flushes stdout."""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
from fakes import FakeComponents
from imagefactory import encode, synthetic

from ferbatch.config import ScoreSettings
from ferbatch.scoring import PipelineSettings, run_scoring

PHOTOS = Path(__file__).parent / "photos"
HOSTILE_NAMES = ["\x1b]0;pwned\x07.jpg", "\x1b[2Jclear.jpg", "\u202egnp.exe.jpg", "[bold]b[red].jpg",
                 '=HYPERLINK("http:x","y").jpg', "+cmd|calc.jpg", "@SUM(1+1).jpg", "a|b.jpg", "<img src=x>.jpg"]
RAW = ("\x1b", "\x07", "\u202e")
FORMULA = ("=", "+", "-", "@", "\t", "\r")

_ZYGOTE = textwrap.dedent("""
    import atexit, json, os, sys
    import ferbatch.cli
    reply = os.fdopen(os.dup(1), "w")
    for line in sys.stdin:
        job = json.loads(line)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.chdir(job["cwd"])
                os.environ.clear()
                os.environ.update(job["env"])
                for fd, path, flags in ((0, os.devnull, os.O_RDONLY), (1, job["stdout"], os.O_WRONLY | os.O_CREAT),
                                        (2, job["stderr"], os.O_WRONLY | os.O_CREAT)):
                    opened = os.open(path, flags, 0o644)
                    os.dup2(opened, fd)
                    os.close(opened)
                sys.argv = ["ferbatch", *job["args"]]
                try:
                    ferbatch.cli.main()
                    code = 0
                except SystemExit as done:
                    code = done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
                except BaseException:  # as Python would show it
                    import traceback
                    traceback.print_exc()
                atexit._run_exitfuncs()
                for stream in (sys.stdout, sys.stderr):
                    try:
                        stream.flush()
                    except Exception:
                        pass
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        reply.write(json.dumps(os.waitstatus_to_exitcode(status)) + "\\n")
        reply.flush()
    """)


@dataclass
class Done:
    returncode: int
    stdout: str
    stderr: str


class Ferbatch:
    """Runs `ferbatch ARGS` in a process forked from a warm one."""

    def __init__(self, env: dict[str, str], scratch: Path) -> None:
        self.env, self.scratch, self.count = env, scratch, 0
        self.process = subprocess.Popen([sys.executable, "-c", _ZYGOTE], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True, env=env)

    def __call__(self, *args: object, env: dict[str, str] | None = None, stdout: str | None = None) -> Done:
        self.count += 1
        out = stdout or str(self.scratch / f"{self.count}.out")
        err = str(self.scratch / f"{self.count}.err")
        for path in (out, err):
            if not path.startswith("/dev/"):
                Path(path).write_bytes(b"")
        job = {"args": [str(a) for a in args], "env": {**self.env, **(env or {})}, "cwd": str(self.scratch),
               "stdout": out, "stderr": err}
        self.process.stdin.write(json.dumps(job) + "\n")
        self.process.stdin.flush()
        code = json.loads(self.process.stdout.readline())
        text = "" if out.startswith("/dev/") else Path(out).read_text(errors="replace")
        return Done(code, text, Path(err).read_text(errors="replace"))

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=60)


@pytest.fixture(scope="module")
def world(tmp_path_factory, prefect_harness, models_dir):
    """Photos with hostile names scored into a report folder, a real model, and a nearly full disk (root only)."""
    from prefect.settings import get_current_settings

    base = tmp_path_factory.mktemp("process")
    photos = base / "in"
    photos.mkdir()
    for i, name in enumerate(HOSTILE_NAMES):
        (photos / name).write_bytes(encode(synthetic(250, 120, seed=i), "JPEG"))
    out = base / "out"
    settings = ScoreSettings(folders=[photos], out=out)
    run_scoring(settings, FakeComponents(), pipeline=PipelineSettings.from_settings(settings, chunk_images=4))
    full = base / "full"
    full.mkdir()
    mounted = os.geteuid() == 0 and subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(full)],
                                                   capture_output=True).returncode == 0
    if mounted:
        with open(full / "filler", "wb") as handle:
            handle.write(b"\0" * 60 * 1024)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FERBATCH_", "PREFECT_API_URL"))}
    env.update(PREFECT_API_URL=str(get_current_settings().api.url), COLUMNS="200")
    scratch = Path(tempfile.mkdtemp(prefix="ferbatch-process-", dir=base))
    ferbatch = Ferbatch(env, scratch)
    try:
        yield {"photos": photos, "out": out, "full": full if mounted else None, "models": models_dir, "run": ferbatch,
               "base": base}
    finally:
        ferbatch.close()
        if mounted:
            subprocess.run(["umount", "-l", str(full)], capture_output=True)


def _error_line(done: Done, code: int = 1) -> str:
    """The one line a failure prints: exit code, no traceback, one `Error:` line (a flow's progress lines aside)."""
    assert done.returncode == code, (done.returncode, done.stderr[-2000:])
    assert "Traceback" not in done.stderr + done.stdout, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if "Error" in line or "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("Error: "), done.stderr[-3000:]
    return errors[0]


def test_configuration_and_option_mistakes(world, tmp_path):
    run, photos = world["run"], world["photos"]
    bad = tmp_path / "ferbatch.toml"
    bad.write_bytes(b'[score]\nout = "\xff"\n')
    cases = [
        (("--config", bad, "config", "show"), {}, 1, "not UTF-8 text"),
        (("score", photos, "--out", tmp_path / "o", "--score-threshold", "nan"), {}, 2, "not a finite number"),
        (("score", photos, "--out", tmp_path / "o"), {"FERBATCH_SCORE__FOLDERS": "notalist"}, 1, "is not JSON"),
        (("score", photos, "--out", tmp_path / "o", "--runner", "dask", "--dask-address", "http://x"), {}, 1,
         "not a Dask scheduler address"),
        (("score", photos, "--out", tmp_path / "o", "--runner", "dask", "--dask-address", "tcp://127.0.0.1:1"), {},
         1, "no Dask scheduler answers there"),
        (("score", photos, "--out", tmp_path / "o", "--models-dir", world["models"]),
         {"PREFECT_API_URL": "http://127.0.0.1:9/api"}, 1, "no Prefect server answers there"),
        (("score", photos, "--out", tmp_path / "o", "--annotate", photos), {}, 1, "--annotate is the scanned"),
    ]
    for args, env, code, says in cases:
        done = run(*args, env=env)
        assert done.stderr.strip().splitlines() == [_error_line(done, code)], (args, done.stderr)
        assert says in done.stderr, (args, done.stderr)
    assert not (tmp_path / "o").exists()


def test_a_full_output_and_a_full_disk(world, tmp_path):
    run, out = world["run"], world["out"]
    done = run("report", out, stdout="/dev/full")
    assert _error_line(done) == "Error: cannot write the output (No space left on device)"
    huge = run("report", out, "--images", "--limit", "99999999999999999999")
    assert huge.returncode == 0 and f"{len(HOSTILE_NAMES)} images" in huge.stdout, huge.stderr
    if world["full"] is None:
        pytest.skip("a nearly full disk needs root to mount a small tmpfs")
    full = world["full"]
    html = run("report", out, "--html", full / "report.html")
    assert "cannot write the HTML report (No space left on device); nothing was replaced" in _error_line(html)
    assert sorted(p.name for p in full.iterdir()) == ["filler"]
    crops = run("label", "export", out, "--to", full / "labels")
    assert "No space left on device" in _error_line(crops)
    shutil.rmtree(full / "labels", ignore_errors=True)
    scored = run("score", PHOTOS, "--out", full / "reports", "--models-dir", world["models"])
    line = _error_line(scored)
    assert ".parquet.tmp: cannot write the reports (No space left on device)" in line and str(full) in line
    assert not list((full / "reports").rglob("*.tmp"))


def test_names_are_escaped_in_every_row_view_and_format(world):
    run, out = world["run"], world["out"]
    for rows in ("--images", "--faces"):
        table = run("report", out, rows)
        assert table.returncode == 0 and not any(raw in table.stdout for raw in RAW), table.stdout[:500]
        assert "[bold]b[red].jpg" in table.stdout
        spreadsheet = run("report", out, rows, "--format", "csv")
        assert spreadsheet.returncode == 0, spreadsheet.stderr
        for row in csv.DictReader(io.StringIO(spreadsheet.stdout)):
            assert not any((row.get(c) or "").startswith(FORMULA) for c in ("root", "path", "folder", "error")), row
            assert not any(raw in value for value in row.values() for raw in RAW), row
        markdown = run("report", out, rows, "--format", "markdown")
        lines = markdown.stdout.strip().splitlines()
        assert all(line.replace("\\|", "").count("|") == lines[0].count("|") for line in lines[2:]), markdown.stdout
        assert "<img" not in markdown.stdout and not any(raw in markdown.stdout for raw in RAW)
    analysed = run("analyze", world["photos"], "--models-dir", world["models"])
    assert analysed.returncode == 0 and "Traceback" not in analysed.stderr, analysed.stderr[-2000:]
    assert not any(raw in analysed.stdout for raw in RAW) and "\\u202egnp.exe.jpg" in analysed.stdout


def test_python_m_ferbatch_into_a_full_output_is_one_line(world):
    """The plain process: Python's own flush of stdout at exit must not add a second complaint."""
    with open("/dev/full", "w") as full:
        done = subprocess.run([sys.executable, "-m", "ferbatch", "report", str(world["out"])], env=world["run"].env,
                              stdout=full, stderr=subprocess.PIPE, text=True, timeout=300)
    assert done.returncode == 1
    assert done.stderr.splitlines() == ["Error: cannot write the output (No space left on device)"], done.stderr
