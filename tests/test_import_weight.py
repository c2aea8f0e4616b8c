"""Commands that need no model never import Keras or TensorFlow (seconds of start-up and a GiB of memory).

Each command runs in a fresh interpreter with an import hook that records where Keras or TensorFlow
was first imported from, so a failure names the culprit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT = Path(__file__).resolve().parents[1]

_PROBE = """
import json, sys, traceback
from importlib.abc import MetaPathFinder

first = []

class Watch(MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("tensorflow", "keras") and not first:
            first.append((name, "".join(traceback.format_stack(limit=25))))
        return None

sys.meta_path.insert(0, Watch())
from click.testing import CliRunner
from ferbatch.cli import cli

result = CliRunner().invoke(cli, json.loads(sys.argv[1]))
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras"))
print(json.dumps({"exit_code": result.exit_code, "output": result.output[-8000:], "heavy": heavy[:5],
                  "first": first[0] if first else None}))
"""


def _run(*args: str, env: dict[str, str] | None = None) -> dict:
    completed = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(list(args))], capture_output=True,
                               text=True, timeout=120, cwd=PROJECT, env={**os.environ, **(env or {})})
    assert completed.returncode == 0, completed.stderr
    return json.loads(completed.stdout.strip().splitlines()[-1])


def _assert_light(result: dict, exit_code: int = 0) -> None:
    assert result["exit_code"] == exit_code, result["output"]
    assert not result["heavy"], f"imported {result['first'][0]} from:\n{result['first'][1]}"


@pytest.fixture(scope="module")
def report_folder(tmp_path_factory):
    from fakes import FakeComponents
    from imagefactory import encode, synthetic

    from ferbatch.config import ScoreSettings
    from ferbatch.scoring import run_scoring

    folder = tmp_path_factory.mktemp("photos")
    (folder / "a.jpg").write_bytes(encode(synthetic(250, 120, seed=1), "JPEG"))
    out = tmp_path_factory.mktemp("out")
    run_scoring(ScoreSettings(folders=[folder], out=out), FakeComponents())
    return out


def test_config_show_imports_no_tensorflow():
    _assert_light(_run("config", "show"))


def test_models_list_imports_no_tensorflow():
    result = _run("models", "list", "--models-dir", str(PROJECT / "models"))
    _assert_light(result)
    assert "fer_cnn" in result["output"]


def test_report_imports_no_tensorflow(report_folder):
    result = _run("report", str(report_folder), "--json")
    _assert_light(result)
    assert json.loads(result["output"])[0]["n_images"] == 1


@pytest.mark.parametrize(("args", "exit_code"), [
    (("score",), 1),  # no folders configured
    (("score", "--batch-size", "0", "."), 2),  # click's usage error
    (("--help",), 0),
])
def test_argument_errors_and_help_import_no_tensorflow(args, exit_code):
    _assert_light(_run(*args), exit_code)


def test_presets_imports_no_tensorflow():
    result = _run("presets")
    _assert_light(result)
    assert "crop_cnn_100_x3" in result["output"]


def test_a_configured_preset_is_checked_without_tensorflow():
    _assert_light(_run("config", "show", env={"FERBATCH_TRAIN__PRESET": "crop_cnn_100_x3"}))
    result = _run("config", "show", env={"FERBATCH_TRAIN__PRESET": "huge"})
    _assert_light(result, exit_code=1)
    assert "unknown preset 'huge'" in result["output"]


@pytest.mark.parametrize("package", ["ferbatch.training", "ferbatch.models"])
def test_every_public_name_resolves(package):
    """The lazy names (PEP 562) are only looked up when asked for: ask for each one."""
    import importlib

    module = importlib.import_module(package)
    assert set(module.__all__) <= set(dir(module))
    for name in module.__all__:
        assert getattr(module, name) is not None, name
