"""The nightly retrain follows the current model's recipe unless the configuration names another.

The defect these pin down: `ferbatch config init` and deploy/ferbatch.example.toml set `train.preset = "default"`
(fer_cnn) while the shipped model is `crop_cnn_100_x3`, so with `train.data` set every night saw "a different
recipe" and trained fer_cnn from scratch, which the gate then refused, night after night.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from click.testing import CliRunner

from ferbatch.cli import cli
from ferbatch.config import load_config

EXAMPLE = Path(__file__).resolve().parents[1] / "deploy" / "ferbatch.example.toml"


def test_the_example_configuration_names_no_recipe_weaker_than_the_shipped_one():
    train = tomllib.loads(EXAMPLE.read_text())["train"]
    assert "preset" not in train  # unset: the nightly follows the current model's recipe


def test_config_init_leaves_the_recipe_unset(tmp_path):
    path = tmp_path / "ferbatch.toml"
    assert CliRunner().invoke(cli, ["config", "init", str(path)]).exit_code == 0
    config, _ = load_config(path)
    assert config.train.preset is None
    assert config.train.max_minutes == 30
