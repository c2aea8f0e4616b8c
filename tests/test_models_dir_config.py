"""Every command takes the model registry from one configuration loader: ferbatch.toml's models_dir (or
FERBATCH_MODELS_DIR) for `models list / promote / calibrate / register-unfinished` and `evaluate` as for `score`,
`analyze`, `train` and `nightly`; --models-dir still wins."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import SAMPLE_CSV

from ferbatch.cli import cli
from ferbatch.models import default_models_dir


def _version(root: Path, name: str, accuracy: float) -> None:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "model.keras").write_bytes(b"not loaded by these commands")
    card = {"version": name, "architecture": "tiny", "parameters": 1000, "label_source": "fer2013",
            "metrics": {"PublicTest": {"plain": {"accuracy": accuracy}}}}
    (folder / "card.json").write_text(json.dumps(card))


@pytest.fixture
def project(tmp_path, monkeypatch) -> Path:
    """A working folder whose ferbatch.toml names a registry of two versions, v1 current."""
    registry = tmp_path / "registry"
    _version(registry, "20250101-000000-tiny", 0.5)
    _version(registry, "20250102-000000-tiny", 0.4)
    (registry / "current.json").write_text(json.dumps({"version": "20250101-000000-tiny"}))
    (tmp_path / "ferbatch.toml").write_text('models_dir = "registry"\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("FERBATCH_MODELS_DIR", raising=False)
    monkeypatch.delenv("FERBATCH_CONFIG", raising=False)
    return tmp_path


def _invoke(*args: str, env: dict | None = None):
    return CliRunner(env={"COLUMNS": "80", **(env or {})}).invoke(cli, list(args))


@pytest.fixture
def shipped_pointer():
    """The project's own models/current.json, which none of these commands may touch."""
    pointer = default_models_dir() / "current.json"
    before = pointer.read_bytes() if pointer.is_file() else None
    yield
    assert (pointer.read_bytes() if pointer.is_file() else None) == before


def test_models_list_shows_the_configured_registry(project, shipped_pointer):
    result = _invoke("models", "list")
    assert result.exit_code == 0, result.output
    assert "* 20250101-000000-tiny" in result.output and "20250102-000000-tiny" in result.output


def test_models_promote_changes_the_configured_pointer_only(project, shipped_pointer):
    result = _invoke("models", "promote", "20250102-000000-tiny", "--force")
    assert result.exit_code == 0, result.output
    pointer = json.loads((project / "registry" / "current.json").read_text())
    assert pointer["version"] == "20250102-000000-tiny"


def test_the_environment_and_the_option_choose_the_registry_too(project, shipped_pointer, tmp_path):
    other = tmp_path / "other"
    _version(other, "20250103-000000-tiny", 0.6)
    by_env = _invoke("models", "list", env={"FERBATCH_MODELS_DIR": str(other)})
    assert by_env.exit_code == 0 and "20250103-000000-tiny" in by_env.output and "20250101" not in by_env.output
    by_option = _invoke("models", "list", "--models-dir", str(other))
    assert by_option.exit_code == 0 and "20250103-000000-tiny" in by_option.output


@pytest.mark.parametrize("args", [
    ["models", "calibrate", "no-such-version", "--data", str(SAMPLE_CSV)],
    ["models", "promote", "no-such-version"],
    ["evaluate", "--model", "no-such-version", "--real-photos", "."],
])
def test_calibrate_promote_and_evaluate_look_in_the_configured_registry(project, shipped_pointer, args):
    result = _invoke(*args)
    assert result.exit_code == 1, result.output
    assert result.output.startswith(f"Error: {project / 'registry'}: no model version 'no-such-version'"), \
        result.output
    assert "20250102-000000-tiny" in result.output  # the configured registry's versions are listed
