"""ferbatch.toml plus FERBATCH_* overrides: precedence, paths, and errors that name the key."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from ferbatch.cli import cli
from ferbatch.config import DEFAULT_SENTIMENT_MAP, load_config
from ferbatch.errors import FerbatchError

CONFIG = """
models_dir = "registry"

[score]
folders = ["photos", "/abs/press"]
out = "reports"
batch_size = 128
runner = "dask"

[train]
data = "data/fer2013.csv.gz"
preset = "smoke"

[schedule]
cron = "30 1 * * *"
timezone = "Europe/Paris"

[sentiment]
surprise = "Positive"
"""


@pytest.fixture
def config_file(tmp_path, monkeypatch):
    for name in ("FERBATCH_CONFIG", "FERBATCH_MODELS_DIR"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "etc" / "ferbatch.toml"
    path.parent.mkdir()
    path.write_text(CONFIG)
    return path


def test_file_values_are_read_and_relative_paths_are_relative_to_the_file(config_file):
    config, source = load_config(config_file)
    base = config_file.parent
    assert source == config_file
    assert config.models_dir == base / "registry"
    assert config.score.folders == [base / "photos", Path("/abs/press")]
    assert (config.score.out, config.score.batch_size, config.score.runner) == (base / "reports", 128, "dask")
    assert (config.train.data, config.train.preset) == (base / "data" / "fer2013.csv.gz", "smoke")
    assert (config.schedule.cron, config.schedule.timezone) == ("30 1 * * *", "Europe/Paris")
    assert config.sentiment == {"Surprise": "positive"}


def test_environment_variables_override_the_file(config_file, monkeypatch):
    monkeypatch.setenv("FERBATCH_SCORE__OUT", "/srv/reports")
    monkeypatch.setenv("FERBATCH_SCHEDULE__TIMEZONE", "America/New_York")
    monkeypatch.setenv("FERBATCH_MODELS_DIR", "/srv/models")
    config, _ = load_config(config_file)
    assert str(config.score.out) == "/srv/reports"
    assert config.schedule.timezone == "America/New_York"
    assert str(config.models_dir) == "/srv/models"
    assert config.score.batch_size == 128  # keys not overridden keep the file's value


def test_the_config_file_is_found_through_the_environment_then_the_working_directory(config_file, monkeypatch):
    monkeypatch.setenv("FERBATCH_CONFIG", str(config_file))
    assert load_config()[1] == config_file
    monkeypatch.delenv("FERBATCH_CONFIG")
    monkeypatch.chdir(config_file.parent)
    assert load_config()[0].score.batch_size == 128
    monkeypatch.chdir(config_file.parent.parent)
    config, source = load_config()
    assert source is None and config.score.batch_size == 256 and config.schedule.cron == "0 2 * * *"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[score]\noutt = 'x'\n", "unknown key 'score.outt'"),
        ("[scores]\nout = 'x'\n", "unknown key 'scores'"),
        ("[score]\nbatch_size = 'big'\n", "score.batch_size: Input should be a valid integer"),
        ("[score]\nbatch_size = 0\n", "score.batch_size: Input should be greater than or equal to 1"),
        ("[score]\nrunner = 'spark'\n", "score.runner: Input should be 'local' or 'dask'"),
        ("[schedule]\ntimezone = 'Mars/Olympus'\n", "schedule.timezone: unknown time zone 'Mars/Olympus'"),
        ("[schedule]\ncron = '0 2 * *'\n", "schedule.cron: '0 2 * *' is not a 5-field cron expression"),
        ("[train]\npreset = 'huge'\n", "train.preset: unknown preset 'huge'"),
        ("[sentiment]\nJoy = 'positive'\n", "sentiment: 'Joy' is not an emotion"),
        ("[sentiment]\nHappy = 'great'\n", "sentiment: 'great' is not a sentiment"),
        ("[score\n", "not valid TOML"),
    ],
)
def test_a_wrong_key_or_value_is_named_in_the_error(tmp_path, text, message):
    path = tmp_path / "ferbatch.toml"
    path.write_text(text)
    with pytest.raises(FerbatchError, match="^" + str(path).replace(".", r"\.") + ": .*" + _re(message)):
        load_config(path)


def _re(text: str) -> str:
    import re

    return re.escape(text)


def test_a_wrong_environment_value_names_the_variable(monkeypatch):
    monkeypatch.setenv("FERBATCH_SCORE__WORKERS", "many")
    with pytest.raises(FerbatchError, match=r"^FERBATCH_SCORE__WORKERS: score\.workers: .*\(got 'many'\)$"):
        load_config(None)


def test_command_line_values_override_the_configured_score_settings(config_file):
    config, _ = load_config(config_file)
    settings = config.score.with_overrides(out="/cli/out", batch_size=None, runner="local")
    assert settings.out == Path("/cli/out")
    assert settings.batch_size == 128
    assert settings.runner == "local"
    assert settings.folders == config.score.folders
    assert config.sentiment == {"Surprise": "positive"}  # passed to the flow as it is, no string round trip


def test_scoring_with_no_folders_anywhere_is_a_clear_error():
    config, _ = load_config(None)
    with pytest.raises(FerbatchError, match="no folders to score"):
        config.score.require_folders()


def test_config_show_prints_the_effective_configuration_as_toml(config_file, monkeypatch):
    import tomllib

    monkeypatch.setenv("FERBATCH_SCORE__SHARD_SIZE", "64")
    result = CliRunner().invoke(cli, ["--config", str(config_file), "config", "show"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"# from {config_file}")
    shown = tomllib.loads(result.output)
    assert shown["score"]["shard_size"] == 64
    assert shown["schedule"] == {"cron": "30 1 * * *", "timezone": "Europe/Paris"}
    assert shown["models_dir"] == str(config_file.parent / "registry")


def test_config_show_reports_a_bad_file_in_one_line(tmp_path):
    path = tmp_path / "ferbatch.toml"
    path.write_text("[score]\nbatch = 3\n")
    result = CliRunner().invoke(cli, ["--config", str(path), "config", "show"])
    assert result.exit_code == 1
    assert result.output.strip() == f"Error: {path}: unknown key 'score.batch'"


def test_the_example_configuration_in_deploy_is_valid():
    example = Path(__file__).resolve().parents[1] / "deploy" / "ferbatch.example.toml"
    config, _ = load_config(example)
    assert config.score.folders == [Path("/data/photos")]
    assert (config.schedule.cron, config.schedule.timezone) == ("0 2 * * *", "UTC")


def test_config_show_lists_unset_keys_and_the_whole_sentiment_map_in_effect(config_file):
    import tomllib

    result = CliRunner().invoke(cli, ["--config", str(config_file), "config", "show"])
    assert result.exit_code == 0, result.output
    assert "# dask_address = ..." in result.output  # unset keys are shown, commented
    shown = tomllib.loads(result.output)
    expected = {**DEFAULT_SENTIMENT_MAP, **load_config(config_file)[0].sentiment}
    assert shown["sentiment"] == expected and len(expected) == 7


def test_config_init_writes_a_commented_file_that_loads_as_the_defaults_and_never_overwrites(tmp_path, monkeypatch):
    import subprocess
    import sys

    for name in ("FERBATCH_CONFIG", "FERBATCH_MODELS_DIR"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["config", "init"])
    assert result.exit_code == 0, result.output
    text = (tmp_path / "ferbatch.toml").read_text()
    assert "# shard_size = 500  # Images per shard" in text and "# Surprise = \"neutral\"" in text
    assert max(len(line) for line in text.splitlines()) <= 80  # `config show` prints it to a terminal
    assert "# A new model scores every photo again" in text  # a long note goes on lines of its own
    assert load_config(tmp_path / "ferbatch.toml")[0] == load_config(None)[0]
    (tmp_path / "ferbatch.toml").write_text("# mine\n")
    again = CliRunner().invoke(cli, ["config", "init", str(tmp_path / "ferbatch.toml")])
    assert again.exit_code == 1 and "already exists" in again.output
    assert (tmp_path / "ferbatch.toml").read_text() == "# mine\n"
    code = ("import sys; from ferbatch.config import load_config; load_config('other.toml');"
            "print('tensorflow' in sys.modules)")
    assert CliRunner().invoke(cli, ["config", "init", "other.toml"]).exit_code == 0
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path).stdout == \
        "False\n"  # the template names no preset, so loading it imports no Keras
