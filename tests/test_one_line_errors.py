"""Every failure a user sees is one clear line, with no traceback and no data lost; and the smaller holes: true
for a number, unknown FERBATCH_* names, the labelled folder's digest of huge files, the nightly's work folder,
`analyze` when every image failed, and the Python API's pixel cap and start-up chatter."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from fakes import FakeComponents
from imagefactory import encode, synthetic

from ferbatch.cli import cli
from ferbatch.config import ScoreSettings
from ferbatch.errors import FerbatchError
from ferbatch.scoring import PipelineSettings, run_scoring

FULL = OSError(errno.ENOSPC, "No space left on device")


def _photos(folder: Path, n: int = 3) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"p{i}.jpg").write_bytes(encode(synthetic(250, 120, seed=i), "JPEG"))
    return folder


def _score(folder: Path, out: Path):
    settings = ScoreSettings(folders=[folder], out=out)
    return run_scoring(settings, FakeComponents(), pipeline=PipelineSettings.from_settings(settings, chunk_images=4))


def _invoke(*args: str, env: dict | None = None):
    return CliRunner(env=env).invoke(cli, list(args))


def _one_line(result, code: int = 1) -> str:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    return lines[0]


# A full disk ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("where", ["write_table", "close"])
def test_a_full_disk_while_parts_are_written_is_one_line_naming_the_file(tmp_path, monkeypatch, where):
    folder, out = _photos(tmp_path / "in"), tmp_path / "out"
    real = getattr(pq.ParquetWriter, where)

    def full(self, *args, **kwargs):
        real(self, *args, **kwargs)
        raise FULL

    monkeypatch.setattr(pq.ParquetWriter, where, full)
    with pytest.raises(FerbatchError) as raised:
        _score(folder, out)
    message = str(raised.value)
    assert message.startswith(str(out / ".ferbatch-staging" / "images")) and ".parquet.tmp: cannot write the " \
        "reports (No space left on device); nothing of run" in message
    assert not list(out.rglob("*.tmp"))  # the unfinished files are gone
    monkeypatch.undo()
    assert _score(folder, out).n_scored == 3  # space again: every image is scored, none lost


def test_label_export_on_a_full_disk_is_one_line_and_keeps_what_it_wrote(tmp_path, monkeypatch):
    from ferbatch import labelling

    _score(_photos(tmp_path / "in"), tmp_path / "out")
    real, written = labelling.create_new, []

    def fills_up(path, data, mode=0o666):
        if written:
            raise FULL
        written.append(path)
        return real(path, data, mode)

    monkeypatch.setattr(labelling, "create_new", fills_up)
    line = _one_line(_invoke("label", "export", str(tmp_path / "out"), "--to", str(tmp_path / "labels")))
    assert "cannot write (No space left on device); 1 crop(s) were written before it" in line
    assert [p.name for p in (tmp_path / "labels" / "_unsorted").iterdir()] == [written[0].name]


# Options, configuration and the services a run needs ---------------------------------------------------------

@pytest.mark.parametrize(("address", "says"), [
    ("http://x", "is not a Dask scheduler address"), ("tcp://127.0.0.1:1", "no Dask scheduler answers there"),
    ("tcp://nohost", "is not a Dask scheduler address"),
])
def test_a_dask_address_that_is_wrong_or_dead_is_one_line_at_once(tmp_path, address, says):
    started = time.monotonic()
    line = _one_line(_invoke("score", str(_photos(tmp_path / "in")), "--out", str(tmp_path / "out"), "--runner",
                             "dask", "--dask-address", address, "--models-dir", str(tmp_path / "none")))
    assert says in line and address in line and time.monotonic() - started < 15
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("args", [["--score-threshold", "nan"], ["--score-threshold", "inf"],
                                  ["--score-threshold", "-nan"]])
def test_a_number_that_is_not_finite_is_a_one_line_usage_error(tmp_path, args):
    line = _one_line(_invoke("score", str(tmp_path), "--out", str(tmp_path / "out"), *args), code=2)
    assert "--score-threshold" in line and ("is not a finite number" in line or "not in the range" in line)


def test_promote_tolerance_nan_is_refused(tmp_path):
    line = _one_line(_invoke("models", "promote", "v", "--tolerance", "nan", "--models-dir", str(tmp_path)), code=2)
    assert "--tolerance" in line


def test_usage_errors_are_one_line(tmp_path):
    assert "No such option '--bogus' (see `" in _one_line(_invoke("report", str(tmp_path), "--bogus"), code=2)
    assert "No such command" in _one_line(_invoke("bogus"), code=2)


def test_a_configuration_file_that_is_not_utf8_is_one_line(tmp_path):
    bad = tmp_path / "ferbatch.toml"
    bad.write_bytes(b'models_dir = "\xff\xfe"\n')
    line = _one_line(_invoke("--config", str(bad), "config", "show"))
    assert line == f"Error: {bad}: not UTF-8 text (byte 14); a TOML file is UTF-8"


@pytest.mark.parametrize(("variable", "value", "says"), [
    ("FERBATCH_SCORE__FOLDERS", "notalist", "FERBATCH_SCORE__FOLDERS: 'notalist' is not JSON"),
    ("FERBATCH_SENTIMENT", "happy", "FERBATCH_SENTIMENT: 'happy' is not JSON"),
    ("FERBATCH_MODEL_DIR", "/x", "FERBATCH_MODEL_DIR: not a configuration key"),
    ("FERBATCH_SCORE_OUT", "/x", "FERBATCH_SCORE_OUT: not a configuration key"),
    ("FERBATCH_SCORE__BATCH_SIZE", "true", "score.batch_size"),
    ("FERBATCH_SCORE__SCORE_THRESHOLD", "nan", "score.score_threshold"),
])
def test_a_bad_environment_variable_is_one_line_naming_it(variable, value, says):
    assert says in _one_line(_invoke("config", "show", env={variable: value}))


def test_variables_that_are_not_configuration_are_let_by():
    result = _invoke("config", "show", env={"FERBATCH_JAX_PYTHON": "/x", "FERBATCH_TEST_IMAGE": "y",
                                            "FERBATCH_PHOTOS_DIR": "/p"})
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize(("line", "key"), [("batch_size = true", "batch_size"), ("workers = false", "workers"),
                                            ("score_threshold = nan", "score_threshold"),
                                            ("batch_size = 99999999999999999999", "batch_size")])
def test_true_false_nan_or_a_huge_number_in_the_file_is_refused_by_its_key(tmp_path, line, key):
    config = tmp_path / "ferbatch.toml"
    config.write_text(f"[score]\n{line}\n")
    assert f"score.{key}" in _one_line(_invoke("--config", str(config), "config", "show"))


def test_a_dead_prefect_api_url_is_one_line_before_any_flow(monkeypatch):
    from ferbatch.runtime.prefect_api import prefect_api

    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")
    started = time.monotonic()
    with pytest.raises(FerbatchError, match=r"^PREFECT_API_URL http://127.0.0.1:9/api: no Prefect server answers "
                                            r"there \(.*\); start it"), prefect_api():
        pytest.fail("the flow must not start")
    assert time.monotonic() - started < 15


def test_a_limit_of_any_size_shows_every_row(tmp_path):
    _score(_photos(tmp_path / "in"), tmp_path / "out")
    result = _invoke("report", str(tmp_path / "out"), "--images", "--limit", "99999999999999999999")
    assert result.exit_code == 0, result.output
    assert "3 images" in result.output


# The smaller holes -------------------------------------------------------------------------------------------

def test_the_labelled_folder_digest_never_reads_a_huge_file(tmp_path):
    from ferbatch.models._registry import file_sha256
    from ferbatch.training import source_digests
    from ferbatch.training._data import folder_digest

    folder = tmp_path / "labelled"
    (folder / "Happy").mkdir(parents=True)
    face = folder / "Happy" / "a.png"
    face.write_bytes(encode(synthetic(96, 96), "PNG"))
    huge = folder / "Happy" / "huge.png"
    with open(huge, "wb") as handle:
        handle.truncate(20 * 2**30)  # 20 GB, sparse
    started = time.monotonic()
    first = folder_digest(folder)
    assert time.monotonic() - started < 5
    with open(huge, "r+b") as handle:
        handle.truncate(21 * 2**30)
    assert folder_digest(folder) != first  # its size still counts
    huge.unlink()
    import hashlib

    expected = hashlib.sha256(b"Happy/a.png\0" + bytes.fromhex(file_sha256(face))).hexdigest()
    assert folder_digest(folder) == expected  # unchanged for ordinary files: cards keep matching
    assert source_digests(face, None, folder)["labelled/"] == expected


def test_the_nightly_work_folder_is_removed_and_a_killed_runs_folder_is_found(tmp_path):
    from ferbatch.models._workdirs import PREFIX, nightly_work_dir, release_work_dir

    mine = nightly_work_dir(tmp_path)
    assert mine.is_dir() and mine.name.startswith(PREFIX)
    assert nightly_work_dir(tmp_path) != mine and mine.is_dir()  # a run in progress is left alone
    for folder in list(tmp_path.glob(f"{PREFIX}*")):
        release_work_dir(folder)
    assert not list(tmp_path.iterdir())
    script = f"from ferbatch.models._workdirs import nightly_work_dir\nprint(nightly_work_dir({str(tmp_path)!r}))\n"
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    left = Path(killed.stdout.strip())
    assert left.is_dir()  # the process ended without removing it (as a SIGKILL would)
    release_work_dir(nightly_work_dir(tmp_path))
    assert not left.exists() and not list(tmp_path.iterdir())


def test_sigterm_inside_tensorflow_ends_at_once_and_removes_the_work_folder(tmp_path):
    """Not unwound through TensorFlow (a crash once in twelve): the process ends from the handler, work folder
    removed, with the usual one line and exit code."""
    library = tmp_path / "site" / "tensorflow"
    library.mkdir(parents=True)
    (library / "__init__.py").write_text("import time\ndef fit():\n    while True:\n        time.sleep(0.05)\n")
    script = textwrap.dedent(f"""
        import os, signal, sys, threading
        sys.path.insert(0, {str(tmp_path / "site")!r})
        import tensorflow
        from ferbatch.runtime.interrupts import add_cleanup, handled
        from ferbatch.models._workdirs import nightly_work_dir
        with handled():
            print(nightly_work_dir({str(tmp_path / "models")!r}, add_cleanup), flush=True)
            threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM)).start()
            tensorflow.fit()
        """)
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 143, done.stderr
    assert done.stderr.strip().splitlines() == ["ferbatch: interrupted by SIGTERM; nothing was committed; the next "
                                                "run scores those images"]
    assert not Path(done.stdout.strip()).exists() and time.monotonic() - started < 30


def test_analyze_exits_1_when_every_image_failed(tmp_path, models_dir):
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    (tmp_path / "empty.jpg").write_bytes(b"")
    result = _invoke("analyze", str(tmp_path), "--models-dir", str(models_dir))
    assert result.exit_code == 1, result.output
    assert result.output.strip().splitlines()[-1] == ("Error: none of the 2 image(s) could be read or decoded (see "
                                                      "the errors above)")
    good = tmp_path / "good"
    good.mkdir()
    (good / "a.jpg").write_bytes(encode(synthetic(120, 90), "JPEG"))
    assert _invoke("analyze", str(tmp_path), str(good), "--models-dir", str(models_dir)).exit_code == 0


def test_the_python_api_caps_array_pixels_as_the_command_does():
    from ferbatch.analysis import Analyzer

    huge = np.broadcast_to(np.zeros((1, 1, 3), np.uint8), (20000, 20000, 3))  # 400 MP, no memory used
    started = time.monotonic()
    with pytest.raises(FerbatchError, match="an image array of 20000x20000 pixels is over the limit of 80,000,000"):
        Analyzer(components=FakeComponents()).faces(huge)
    assert time.monotonic() - started < 5


def test_the_python_api_keeps_native_start_up_lines_off_stderr(capfd):
    from ferbatch.analysis import Analyzer

    class Noisy(FakeComponents):
        def classifier(self):  # as TensorFlow on its first load
            if not self.loads:
                os.write(2, b"E0000 00:00:1795805697.957117    7821 cuda_platform.cc:52] failed call to cuInit\n")
                os.write(2, b"WARNING: All log messages before absl::InitializeLog() is called are written to "
                            b"STDERR\n")
                os.write(2, b"a line of the user's own\n")
            return super().classifier()

    Analyzer(components=Noisy()).faces(np.zeros((60, 120, 3), np.uint8))
    err = capfd.readouterr().err
    assert "cuInit" not in err and "absl" not in err and "a line of the user's own" in err
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "after\n"  # stderr is the process's own again
