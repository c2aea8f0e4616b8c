"""Every registry file is checked on read: a malformed `current.json`, `card.json` or `refused.json` is one line
naming the file and what to do, a bad card hides only its own version, and a bad refused record never stops
the night."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import SAMPLE_CSV

from ferbatch.cli import cli
from ferbatch.errors import RegistryError
from ferbatch.models import ModelRegistry

GOOD = "20250101-000000-tiny"
OTHER = "20250102-000000-tiny"


def _card(version: str, **extra: object) -> dict:
    return {"version": version, "architecture": "tiny", "parameters": 1000, "label_source": "fer2013",
            "metrics": {"PublicTest": {"plain": {"accuracy": 0.5}}}, **extra}


def _version(root: Path, name: str, card: dict | str) -> None:
    (root / name).mkdir(parents=True)
    (root / name / "model.keras").write_bytes(b"never loaded here")
    (root / name / "card.json").write_text(card if isinstance(card, str) else json.dumps(card))


@pytest.fixture
def registry(tmp_path) -> Path:
    root = tmp_path / "models"
    _version(root, GOOD, _card(GOOD))
    _version(root, OTHER, _card(OTHER))
    (root / "current.json").write_text(json.dumps({"version": GOOD}))
    return root


def _invoke(*args: str):
    return CliRunner(env={"COLUMNS": "80"}).invoke(cli, list(args))


BAD_POINTERS = ['{"version": ', "", "[1, 2]", '{"version": 5}', "null", '"x"', '{"version": "../elsewhere"}']


@pytest.mark.parametrize("text", BAD_POINTERS)
def test_a_bad_current_pointer_is_one_line_naming_it_and_a_forced_promotion_repairs_it(registry, tmp_path, text):
    pointer = registry / "current.json"
    pointer.write_text(text)
    with pytest.raises(RegistryError, match=f"^{pointer}: not a valid current-model pointer .*models promote"):
        ModelRegistry(registry).current_version()
    for args in (["score", str(tmp_path), "--out", str(tmp_path / "out")], ["analyze", str(tmp_path)]):
        result = _invoke(*args, "--models-dir", str(registry))
        assert result.exit_code == 1 and result.output.startswith(f"Error: {pointer}: not a valid"), result.output
        assert len(result.output.strip().splitlines()) == 1
    listed = _invoke("models", "list", "--models-dir", str(registry))
    assert listed.exit_code == 0 and GOOD in listed.output and OTHER in listed.output, listed.output
    assert f"warning: {pointer}: not a valid current-model pointer" in listed.output
    repaired = _invoke("models", "promote", OTHER, "--force", "--models-dir", str(registry))
    assert repaired.exit_code == 0, repaired.output
    assert ModelRegistry(registry).current_version() == OTHER


@pytest.mark.parametrize(("text", "problem"), [
    ('{"version": "x", "metr', "not JSON"), ("[1, 2, 3]", "a JSON list"), (json.dumps(_card(OTHER, metrics=None)),
                                                                            "no metrics"),
    (json.dumps({**_card(OTHER), "metrics": {"PublicTest": {}}}), "no PublicTest accuracy"),
    (json.dumps(_card(OTHER, parameters="many")), "parameters is not a number"), ("", "the file is empty"),
])
def test_a_bad_card_hides_only_its_own_version(registry, text, problem):
    card = registry / OTHER / "card.json"
    card.write_text(text)
    listed = _invoke("models", "list", "--models-dir", str(registry))
    assert listed.exit_code == 0, listed.output
    assert f"* {GOOD}" in listed.output
    warnings = [line for line in listed.output.splitlines() if line.startswith("warning:")]
    assert warnings == [f"warning: {card}: not a valid model card ({problem}" + warnings[0].split(problem, 1)[1]]
    assert "register the model again" in warnings[0]
    with pytest.raises(RegistryError, match=problem):
        ModelRegistry(registry).card(OTHER)
    assert ModelRegistry(registry).card(GOOD)["version"] == GOOD  # the others are unaffected
    assert ModelRegistry(registry).versions() == [GOOD]  # every caller that lists versions skips it
    assert list(ModelRegistry(registry).card_problems()) == [OTHER]
    promoted = _invoke("models", "promote", GOOD, "--models-dir", str(registry))
    assert promoted.exit_code == 0, promoted.output


def test_a_bad_card_of_the_current_model_stops_scoring_in_one_line(registry, tmp_path):
    card = registry / GOOD / "card.json"
    card.write_text('{"version": "20250101-0')
    for args in (["score", str(tmp_path), "--out", str(tmp_path / "out")], ["analyze", str(tmp_path)]):
        result = _invoke(*args, "--models-dir", str(registry))
        assert result.exit_code == 1, result.output
        assert result.output.startswith(f"Error: {card}: not a valid model card (not JSON"), result.output
        assert len(result.output.strip().splitlines()) == 1
    # a bad current card is no model to defend: a good version is promoted over it
    assert ModelRegistry(registry).promote(OTHER).promoted


def test_an_unfinished_run_with_a_bad_card_is_left_out(registry):
    (registry / "20250103-000000-tiny-unfinished").mkdir()
    (registry / "20250103-000000-tiny-unfinished" / "card.json").write_text('{"status": "unfinished"}')
    (registry / "20250104-000000-tiny-unfinished").mkdir()
    (registry / "20250104-000000-tiny-unfinished" / "card.json").write_text("[")
    listed = _invoke("models", "list", "--models-dir", str(registry))
    assert listed.exit_code == 0 and GOOD in listed.output, listed.output
    assert "Traceback" not in listed.output and "warning:" in listed.output


@pytest.mark.parametrize("text", ["[1]", "null", '"x"', "{", "", '{"k": [1]}'])
def test_a_bad_refused_record_is_a_warning_and_the_night_goes_on(tmp_path, text, caplog):
    from ferbatch.training import plan_nightly, record_refused, source_digests

    root = tmp_path / "models"
    _version(root, GOOD, _card(GOOD, preset="smoke", data={"sources": source_digests(SAMPLE_CSV)}))
    (root / "current.json").write_text(json.dumps({"version": GOOD}))
    (root / "refused.json").write_text(text)
    labelled = tmp_path / "labelled"
    (labelled / "Happy").mkdir(parents=True)
    cv2.imwrite(str(labelled / "Happy" / "a.png"), np.full((96, 96), 99, np.uint8))
    registry = ModelRegistry(root)
    with caplog.at_level(logging.WARNING, logger="ferbatch"):
        plan = plan_nightly(registry, SAMPLE_CSV, extra_folder=labelled)
    assert plan.action == "fine_tune"
    if text != '{"k": [1]}':  # a record of the right shape with one bad entry: that entry alone is left out
        assert f"{root / 'refused.json'}: not a valid record of refused candidates" in caplog.text
    record_refused(registry, plan, "20250105-000000-tiny-finetuned", "worse")
    assert plan_nightly(registry, SAMPLE_CSV, extra_folder=labelled).action == "skip"
    kept = sorted(p.name for p in root.glob("refused.json.invalid-*"))
    assert len(kept) == (0 if text == '{"k": [1]}' else 1)  # what was there is kept aside, not lost


def test_a_candidate_registered_but_never_gated_is_not_trained_again(tmp_path):
    from ferbatch.training import plan_nightly, source_digests
    from ferbatch.training._nightly import fine_tune_settings

    root = tmp_path / "models"
    labelled = tmp_path / "labelled"
    (labelled / "Happy").mkdir(parents=True)
    cv2.imwrite(str(labelled / "Happy" / "a.png"), np.full((96, 96), 99, np.uint8))
    _version(root, GOOD, _card(GOOD, preset="smoke", data={"sources": source_digests(SAMPLE_CSV)}))
    (root / "current.json").write_text(json.dumps({"version": GOOD}))
    registry = ModelRegistry(root)
    assert plan_nightly(registry, SAMPLE_CSV, extra_folder=labelled).action == "fine_tune"
    # the night was killed right after registering its candidate: no verdict was recorded
    settings = fine_tune_settings()
    _version(root, "20250102-000000-tiny-finetuned", _card(
        "20250102-000000-tiny-finetuned", data={"sources": source_digests(SAMPLE_CSV, None, labelled)},
        fine_tune={"from": GOOD, "settings": settings}))
    plan = plan_nightly(registry, SAMPLE_CSV, extra_folder=labelled)
    assert plan.action == "skip" and "20250102-000000-tiny-finetuned" in plan.reason
    assert "models promote 20250102-000000-tiny-finetuned" in plan.reason
    assert plan_nightly(registry, SAMPLE_CSV, extra_folder=labelled, force=True).action == "fine_tune"
