"""Quiet by default: no TensorFlow, absl, CUDA or OpenCV chatter around ferbatch's own output."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ferbatch.runtime.quiet import QUIET_ENVIRONMENT, is_noise

PHOTOS = Path(__file__).parent / "photos"
# What a line from TensorFlow, absl, CUDA or OpenCV looks like, independent of ferbatch.runtime.quiet's own pattern.
THIRD_PARTY = re.compile(r"absl|oneDNN|cuda|cuInit|setPreferableTarget|\[ ?WARN:|^[IWEF]\d{4} |tensorflow",
                         re.IGNORECASE)


def _bare_environment(prefect_home: Path) -> dict[str, str]:
    """The environment of a user who set none of the quieting variables (unlike tests/conftest.py)."""
    drop = {*QUIET_ENVIRONMENT, "TF_CPP_MIN_LOG_LEVEL", "OPENCV_LOG_LEVEL", "PREFECT_API_URL", "PREFECT_HOME"}
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["PREFECT_HOME"] = str(prefect_home)  # the temporary server's database
    return env


def _ferbatch(tmp_path: Path, prefect_home: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ferbatch", *args], env=_bare_environment(prefect_home),
                          capture_output=True, text=True, timeout=600, cwd=tmp_path)


@pytest.mark.parametrize("line", [
    b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
    b"I0000 00:00:1795805694.732726    7821 port.cc:153] oneDNN custom operations are on.",
    b"I0000 00:00:1795805694.733851    7821 cudart_stub.cc:31] Could not find cuda drivers on your machine",
    b"E0000 00:00:1795805697.957117    7821 cuda_platform.cc:52] failed call to cuInit: INTERNAL",
    b"W1127 18:56:04.123456  123 foo.cc:1] anything",
    b"To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow with the flags.",
    b"[ WARN:0@15.183] global net_impl_backend.cpp:345 setPreferableTarget Targets are not supported",
])
def test_native_chatter_is_recognised(line):
    assert is_noise(line)


@pytest.mark.parametrize("line", [
    b"Error: sentiment map: 'happy' is not a sentiment",
    b"18:56:04.893 | INFO    | prefect - Starting temporary server on http://127.0.0.1:8163",
    b"Traceback (most recent call last):",
    b"I think 0000 is fine",
])
def test_other_lines_pass(line):
    assert not is_noise(line)


def test_readme_first_command_prints_no_third_party_chatter(tmp_path, prefect_home):
    """`ferbatch score tests/photos --out OUT` loads TensorFlow, the model and YuNet, with a temporary server."""
    done = _ferbatch(tmp_path, prefect_home, "score", str(PHOTOS), "--out", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr
    noisy = [line for line in (done.stdout + done.stderr).splitlines() if THIRD_PARTY.search(line)]
    assert noisy == []
    assert "reports in" in done.stdout


def test_silenced_import_of_tensorflow_prints_nothing(tmp_path):
    code = "import tensorflow"
    plain = subprocess.run([sys.executable, "-c", code], env=_bare_environment(tmp_path), capture_output=True,
                           text=True, timeout=300)
    silenced = f"from ferbatch.runtime.quiet import silence_native_stderr; silence_native_stderr(); {code}"
    quiet = subprocess.run([sys.executable, "-c", silenced], env=_bare_environment(tmp_path), capture_output=True,
                           text=True, timeout=300)
    assert plain.returncode == quiet.returncode == 0
    if not any(THIRD_PARTY.search(line) for line in plain.stderr.splitlines()):
        pytest.skip("this TensorFlow build prints nothing on import")
    assert not any(THIRD_PARTY.search(line) for line in quiet.stderr.splitlines()), quiet.stderr


def test_user_error_is_one_line(tmp_path):
    done = _ferbatch(tmp_path, tmp_path / "prefect", "score", str(PHOTOS), "--out", str(tmp_path / "out"),
                     "--sentiment-map", "Surprise=happy")
    assert done.returncode == 1
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        "Error: sentiment map: Surprise=happy: 'happy' is not a sentiment (use positive, negative or neutral)"]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(("argv", "verbose"), [
    (["-v", "score", "x"], True), (["--verbose", "report", "o"], True), (["--config", "f.toml", "-v", "score"], True),
    (["score", "x", "-v"], False), (["score", "x"], False), ([], False),
])
def test_only_the_group_option_makes_it_verbose(argv, verbose):
    from ferbatch.cli._main import _verbose

    assert _verbose(argv) is verbose
