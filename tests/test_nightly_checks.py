"""`ferbatch nightly` checks the configuration before Prefect starts: each mistake is one line naming the
ferbatch.toml key to set; a night with nothing to train and nothing to score ends without Prefect, in seconds."""

from __future__ import annotations

import fcntl
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from conftest import SAMPLE_CSV
from imagefactory import encode, synthetic

from ferbatch.config import load_config
from ferbatch.reports._store import LOCK_FILE
from ferbatch.training import DEFAULT_PUBLIC_TOLERANCE, nightly_problems

TESTS = Path(__file__).parent

# `ferbatch` in a subprocess whose temporary Prefect server must not start (it exits 99 if asked for one), and
# which says at exit whether Prefect was imported at all.
_CLI_WITHOUT_SERVER = """
import atexit, sys
import ferbatch.runtime.prefect_api as api

def no_server(*args, **kwargs):
    print("TEMPORARY SERVER REQUESTED", flush=True)
    raise SystemExit(99)

api.start_temporary_server = no_server
atexit.register(lambda: print("prefect imported:", "prefect" in sys.modules, flush=True))
sys.argv = ["ferbatch", *{argv!r}]
from ferbatch.cli import main
main()
"""


def _nightly_without_server(tmp_path: Path, *argv: str) -> tuple[subprocess.CompletedProcess, float]:
    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PREFECT_PROFILES_PATH")}
    env["PREFECT_HOME"] = str(tmp_path / "prefect-home")  # a user with no Prefect API configured
    script = _CLI_WITHOUT_SERVER.format(argv=["--config", str(tmp_path / "ferbatch.toml"), "nightly", *argv])
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", script], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    return done, time.perf_counter() - started


def test_right_after_config_init_the_night_says_which_key_to_set_without_starting_prefect(tmp_path):
    from click.testing import CliRunner

    from ferbatch.cli import cli

    assert CliRunner().invoke(cli, ["config", "init", str(tmp_path / "ferbatch.toml")]).exit_code == 0
    done, _ = _nightly_without_server(tmp_path)
    assert done.returncode == 1 and "TEMPORARY SERVER REQUESTED" not in done.stdout
    assert "prefect imported: False" in done.stdout
    errors = done.stderr.strip().splitlines()
    assert errors[0] == ("Error: score.folders is not set: set it in ferbatch.toml to the photo folders the nightly "
                         "run scores")
    assert not any("command line" in line for line in errors)  # no advice for `score`


def test_every_mistake_is_one_line_naming_its_key(tmp_path, models_dir):
    labelled = tmp_path / "labelled"
    (labelled / "Smiling").mkdir(parents=True)
    out = tmp_path / "reports"
    out.mkdir()
    (tmp_path / "fer.csv").write_text("a,b\n1,2\n")
    (tmp_path / "ferbatch.toml").write_text(
        f'models_dir = "{models_dir}"\n[score]\nfolders = ["gone"]\nout = "reports"\n'
        '[train]\ndata = "fer.csv"\nlabels = "missing.csv"\nextra_folder = "labelled"\nreal_photos = ["nowhere"]\n')
    with open(out / LOCK_FILE, "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # another run is writing into the output folder
        done, _ = _nightly_without_server(tmp_path)
    assert done.returncode == 1 and "TEMPORARY SERVER REQUESTED" not in done.stdout
    lines = done.stderr.strip().removeprefix("Error: ").splitlines()
    keys = [line.split(":")[0].split(" ")[0] for line in lines]
    assert keys == ["score.folders", "score.out", "train.data", "train.labels", "train.extra_folder",
                    "train.real_photos"], lines
    assert f"{out}: another ferbatch run is writing into this folder" in lines[1] and "set score.out" in lines[1]
    assert "not a FER2013 CSV file (no column emotion, pixels, Usage)" in lines[2]
    assert "Smiling" in lines[4]


def test_a_registry_without_a_current_model_is_a_models_dir_line(tmp_path):
    (tmp_path / "photos").mkdir()
    (tmp_path / "ferbatch.toml").write_text('models_dir = "empty"\n[score]\nfolders = ["photos"]\n')
    config, _ = load_config(tmp_path / "ferbatch.toml")
    problems = nightly_problems(config)
    assert len(problems) == 1 and problems[0].startswith(f"models_dir: {tmp_path / 'empty'} has no current model")


def test_a_night_with_nothing_to_train_and_nothing_to_score_ends_without_prefect(tmp_path, models_dir):
    photos = tmp_path / "photos"
    photos.mkdir()
    (tmp_path / "ferbatch.toml").write_text(
        f'models_dir = "{models_dir}"\n[score]\nfolders = ["photos"]\nout = "reports"\n'
        f'[train]\ndata = "{SAMPLE_CSV}"\n')  # the model's own data: nothing to fine-tune
    done, seconds = _nightly_without_server(tmp_path, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "TEMPORARY SERVER REQUESTED" not in done.stdout and "prefect imported: False" in done.stdout
    result = json.loads(done.stdout[: done.stdout.rindex("}") + 1])
    assert result["retrain"]["action"] == "skip" and "same data with the same config" in result["retrain"]["reason"]
    assert result["score"]["images_found"] == 0 and not (tmp_path / "reports").exists()
    assert seconds < 30  # about 3 s on an idle 2-core machine; the bound leaves room for a busy one
    printed, _ = _nightly_without_server(tmp_path)  # the same night as a person reads it, wrapped to 80 columns
    assert printed.returncode == 0, printed.stdout + printed.stderr
    words = " ".join(printed.stdout.split())
    assert words.startswith("retrain: skipped (model ") and "same data with the same config" in words
    assert "no images found: no data files written" in words
    assert max(map(len, printed.stdout.split("ferbatch run")[0].splitlines())) <= 80  # the retrain's lines

    (photos / "new.jpg").write_bytes(encode(synthetic(150, 120, seed=1), "JPEG"))  # a new photo: Prefect starts
    done, _ = _nightly_without_server(tmp_path)
    assert done.returncode == 99 and "TEMPORARY SERVER REQUESTED" in done.stdout


def test_the_public_tolerance_setting_defaults_to_the_gates_default():
    from ferbatch.config import FerbatchConfig

    assert FerbatchConfig.model_fields["train"].default_factory().public_tolerance == DEFAULT_PUBLIC_TOLERANCE == 0.015
