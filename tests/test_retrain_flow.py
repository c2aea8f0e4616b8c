"""The retrain flow end to end under Prefect's test harness, and the CLI around it."""

from __future__ import annotations

import gzip
import json

import pytest
from click.testing import CliRunner
from conftest import SAMPLE_CSV, SAMPLE_FERPLUS

from ferbatch.cli import cli
from ferbatch.models import ModelRegistry

CARD_KEYS = {
    "version", "created_at", "architecture", "parameters", "class_names", "input_contract", "training_config",
    "seed", "epochs_run", "wall_time_s", "label_source", "data", "runtime", "metrics", "calibration",
}

pytestmark = pytest.mark.usefixtures("prefect_harness")


def test_retrain_flow_registers_a_promoted_version_with_a_complete_card(tmp_path):
    from ferbatch_flows.retrain import retrain

    result = retrain(data=str(SAMPLE_CSV), models_dir=str(tmp_path), preset_name="smoke",
                     overrides={"epochs": 1, "calibration": "macro_f1"})
    registry = ModelRegistry(tmp_path)
    assert result["promoted"]
    assert registry.current_version() == result["version"]
    card = registry.card()
    assert set(card) >= CARD_KEYS
    assert card["runtime"]["keras"] and card["runtime"]["tensorflow"]
    assert card["data"]["sources"][SAMPLE_CSV.name] and card["data"]["rows_used"] == 350
    assert card["calibration"]["chosen_on"] == "PublicTest" and len(card["calibration"]["logit_bias"]) == 7
    for split in ("PublicTest", "PrivateTest"):
        for mode in ("plain", "flip_tta"):
            metrics = card["metrics"][split][mode]
            assert 0 <= metrics["accuracy"] <= 1 and len(metrics["confusion_matrix"]) == 7
            assert sum(map(sum, metrics["confusion_matrix"])) == 70
    files = set(card["files"])
    assert {"model.keras", "training_curves.png", "confusion_PrivateTest_plain.png", "class_distribution.png",
            "pixel_histogram.png"} <= files
    assert "sample_faces.png" not in files  # faces of the training data never enter the registry


def _in_this_process(monkeypatch) -> None:
    """`ferbatch train` in this process, its flows reporting to the harness's server (the command as a process of
    its own: test_cli_trains_on_the_valid_rows_of_a_partly_bad_file_and_counts_the_rest)."""
    import contextlib

    import ferbatch.runtime.prefect_api

    monkeypatch.setattr(ferbatch.runtime.prefect_api, "prefect_api", lambda timeout: contextlib.nullcontext())


def test_cli_train_with_ferplus_labels_and_no_promote_keeps_the_current_model(tmp_path, monkeypatch):
    _in_this_process(monkeypatch)
    runner = CliRunner()
    common = ["--data", str(SAMPLE_CSV), "--preset", "smoke", "--epochs", "1", "--models-dir", str(tmp_path)]
    first = runner.invoke(cli, ["train", *common])
    assert first.exit_code == 0, first.output
    current = ModelRegistry(tmp_path).current_version()
    second = runner.invoke(cli, ["train", *common, "--labels", "ferplus", str(SAMPLE_FERPLUS), "--no-promote",
                                 "--calibration", "macro_f1"])
    assert second.exit_code == 0, second.output
    assert "not promoted (--no-promote)" in second.stdout
    registry = ModelRegistry(tmp_path)
    assert registry.current_version() == current
    newest = registry.card(registry.versions()[-1])
    assert newest["label_source"] == "ferplus" and newest["calibration"]["objective"] == "macro_f1"

    votes = runner.invoke(cli, ["train", *common, "--labels", "ferplus", str(SAMPLE_FERPLUS), "--targets",
                                "ferplus_votes", "--no-promote"])
    assert votes.exit_code == 0, votes.output
    trained = ModelRegistry(tmp_path).card(ModelRegistry(tmp_path).versions()[-1])
    assert trained["training_config"]["targets"] == "ferplus_votes" and trained["label_source"] == "ferplus_votes"

    listing = runner.invoke(cli, ["models", "list", "--models-dir", str(tmp_path)])
    assert listing.exit_code == 0
    assert f"* {current}" in listing.output
    assert len([line for line in listing.output.splitlines() if "tiny" in line]) == 3

    evaluation = runner.invoke(cli, ["evaluate", "--data", str(SAMPLE_CSV), "--models-dir", str(tmp_path), "--json"])
    assert evaluation.exit_code == 0, evaluation.output
    measured = json.loads(evaluation.stdout)
    assert measured["PrivateTest"]["plain"]["accuracy"] == pytest.approx(
        registry.card(current)["metrics"]["PrivateTest"]["plain"]["accuracy"], abs=1e-6
    )


@pytest.mark.parametrize("recipe", [["--preset", "smoke", "--targets", "ferplus_votes"],
                                    ["--preset", "crop_cnn_votes"]])
def test_cli_vote_targets_without_the_ferplus_file_is_a_usage_error(tmp_path, recipe):
    result = CliRunner().invoke(cli, ["train", "--data", str(SAMPLE_CSV), *recipe, "--models-dir", str(tmp_path)])
    assert result.exit_code == 2 and "give --labels ferplus FILE" in result.output
    assert not (tmp_path / ".work").exists()  # refused before anything started


def test_cli_teacher_weight_without_a_teacher_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(cli, ["train", "--data", str(SAMPLE_CSV), "--preset", "smoke", "--teacher-weight",
                                      "0.6", "--models-dir", str(tmp_path)])
    assert result.exit_code == 2 and "smoke has no teacher to distil from" in result.output
    assert not (tmp_path / ".work").exists()


def test_cli_reports_bad_data_as_one_error_line_and_a_nonzero_exit(tmp_path, run_ferbatch):
    # One bad file through the real process and flow; tests/test_data.py checks each kind of bad file's message.
    path = tmp_path / "bad.csv"
    path.write_text("emotion,pixels,Usage\n9,1 2,Training\n")
    message = "no valid rows among 1 (emotion_not_0_to_6=1)"
    result = run_ferbatch("train", "--data", path, "--models-dir", tmp_path / "m")
    assert result.returncode == 1
    # Prefect may still log its own shutdown lines after ours, so look for the error line, not the last line.
    assert [line for line in result.stderr.splitlines() if line.startswith("Error:")] == [f"Error: {path}: {message}"]
    assert "Traceback" not in result.stderr
    assert ModelRegistry(tmp_path / "m").versions() == []


def test_cli_rejects_bad_arguments_with_usage_errors(tmp_path):
    runner = CliRunner()
    missing = runner.invoke(cli, ["train", "--data", str(tmp_path / "none.csv")])
    assert missing.exit_code == 2 and "does not exist" in missing.output
    bad_preset = runner.invoke(cli, ["train", "--data", str(SAMPLE_CSV), "--preset", "huge"])
    assert bad_preset.exit_code == 1 and "unknown preset 'huge'" in bad_preset.output
    both = runner.invoke(cli, ["train", "--data", str(SAMPLE_CSV), "--no-promote", "--force-promote"])
    assert both.exit_code == 2
    unknown_model = runner.invoke(cli, ["evaluate", "--data", str(SAMPLE_CSV), "--model", "v0",
                                        "--models-dir", str(tmp_path)])
    assert unknown_model.exit_code == 1 and "no model version 'v0'" in unknown_model.output


def test_cli_trains_on_the_valid_rows_of_a_partly_bad_file_and_counts_the_rest(tmp_path, run_ferbatch):
    rows = gzip.decompress(SAMPLE_CSV.read_bytes()).decode().splitlines()
    path = tmp_path / "mixed.csv"
    path.write_text("\n".join([*rows, "8,1 2 3,Training", "3,1 2 3,Training"]) + "\n")
    result = run_ferbatch("train", "--data", path, "--preset", "smoke", "--epochs", "1", "--models-dir", tmp_path / "m")
    assert result.returncode == 0, result.stderr
    card = ModelRegistry(tmp_path / "m").card()
    assert card["data"]["rejected"] == {"emotion_not_0_to_6": 1, "pixels_not_2304_integers": 1}
    assert card["data"]["rows_used"] == 350


def test_a_retrain_measures_the_new_and_the_current_model_on_labelled_real_photos_and_promotes_by_them(
    tmp_path, models_dir
):
    import shutil
    from pathlib import Path

    from ferbatch_flows.retrain import retrain

    photos = tmp_path / "retrain_photos"  # a set name no other test puts on the session model's card
    (photos / "images").mkdir(parents=True)
    shutil.copy(Path(__file__).parent / "photos" / "fr_obama.jpg", photos / "images" / "obama.jpg")
    (photos / "labels.csv").write_text("file,label\nobama.jpg,happy\n")
    registry = ModelRegistry(shutil.copytree(models_dir, tmp_path / "models"))  # a smoke model is current
    current = registry.current_version()
    assert "retrain_photos" not in (registry.card(current).get("real_photos") or {}).get("sets", {})
    result = retrain(data=str(SAMPLE_CSV), models_dir=str(tmp_path / "models"), preset_name="smoke",
                     overrides={"epochs": 1, "seed": 7}, real_photos=[str(photos)])
    measured = registry.card(result["version"])["real_photos"]["sets"]["retrain_photos"]
    assert measured["n"] == 1 and measured["found"] == 1.0 and measured["support"] == {"Happy": 1}
    # The current model was measured on the same photos, so the real-photo rule decided (its score, or its
    # PublicTest floor: two tiny networks trained for one epoch may be far apart there).
    assert "retrain_photos" in registry.card(current)["real_photos"]["sets"]
    assert "real-photo score" in result["reason"] or "points below the current" in result["reason"]


def test_cli_teacher_weight_reaches_the_flow_as_an_override(tmp_path, monkeypatch):
    import ferbatch_flows.retrain

    received = {}

    def fake_retrain(**kwargs):
        received.update(kwargs)
        return {"unfinished": True, "version": "v", "epochs_done": 0, "epochs": 8, "best_public_accuracy": 0.0}

    _in_this_process(monkeypatch)
    monkeypatch.setattr(ferbatch_flows.retrain, "retrain", fake_retrain)
    result = CliRunner().invoke(cli, ["train", "--data", str(SAMPLE_CSV), "--preset", "crop_cnn_distil_t75",
                                      "--labels", "ferplus", str(SAMPLE_FERPLUS), "--teacher-weight", "0.6",
                                      "--models-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert received["preset_name"] == "crop_cnn_distil_t75" and received["overrides"]["teacher_weight"] == 0.6
