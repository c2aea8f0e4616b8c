"""Every table the command line prints fits an 80-column terminal (COLUMNS=80) without cutting a value, and a
configuration error names where the bad value was set."""

from __future__ import annotations

import re
import zlib
from pathlib import Path

import pytest
from click.testing import CliRunner
from fakes import FakeClassifier, FakeComponents
from imagefactory import encode, synthetic
from test_console import ROWS, SUMMARY

from ferbatch.cli import cli
from ferbatch.present.console import WRITING_REPORTS, ScoringProgress, print_summary
from ferbatch.scoring import ScoreSettings, run_scoring

PROJECT = Path(__file__).resolve().parents[1]
NARROW = {"COLUMNS": "80"}


def _fits(text: str) -> None:
    assert text.strip(), "nothing printed"
    assert "…" not in text, text
    widest = max(text.splitlines(), key=len)
    assert len(widest) <= 80, f"{len(widest)} columns: {widest!r}"


def _invoke(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args), env=NARROW)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("narrow")
    for name, width in {"brand_campaign_2026_spring_outdoor/a.jpg": 350, "top.jpg": 150, "b/none.jpg": 90}.items():
        path = root / "in" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode(synthetic(width, 120, seed=zlib.crc32(name.encode())), "JPEG"))
    run_scoring(ScoreSettings(folders=[root / "in"], out=root / "out"), FakeComponents(FakeClassifier()))
    return root / "out"


def test_the_score_summary_fits_and_shows_images_per_second(monkeypatch, capsys):
    monkeypatch.setenv("COLUMNS", "80")
    print_summary(SUMMARY)
    text = capsys.readouterr().out
    _fits(text)
    assert "images/s" in text and "12.3" in text and "123456" in text


def test_report_aggregates_fit_with_every_view_and_group_name_whole(monkeypatch, capsys):
    import pyarrow as pa

    from ferbatch.reports import ReportStore

    monkeypatch.setattr(ReportStore, "latest_aggregates", lambda self: pa.Table.from_pylist(ROWS))
    text = _invoke("report", ".")
    _fits(text)
    assert "taken_date" in text and "taken_da" not in text.replace("taken_date", "")  # never folded
    for header in ("Surprise", "Neutral", "mean score", "with face"):
        assert header in text


@pytest.mark.parametrize("rows", ["--images", "--faces"])
def test_report_rows_fit(out, rows):
    text = _invoke("report", str(out), rows)
    _fits(text)
    assert "top.jpg" in text


def test_presets_fit_with_every_name_whole_and_told_apart():
    from ferbatch.training import ENSEMBLES, PRESETS

    text = _invoke("presets")
    _fits(text)
    table = text.split("\n\n  ")[0]  # the table, before the notes on each recipe
    names = [match.group(1) for line in table.splitlines() if (match := re.match(r"^ ?(\S+)", line))
             and match.group(1) in {*PRESETS, *ENSEMBLES}]  # a row's first cell, not a folded network name
    assert sorted(set(names)) == sorted({*PRESETS, *ENSEMBLES}) and len(names) == len(set(names))


def test_models_list_fits_and_its_columns_line_up():
    text = _invoke("models", "list", "--models-dir", str(PROJECT / "models"))
    _fits(text)
    versions = text.split("On labelled real photos")[0]  # the second table: figures on real photos
    rows = [line for line in versions.splitlines() if re.search(r"\d{8}-\d{6}-", line)]
    assert len(rows) >= 2 and any(line.startswith(" * ") or line.startswith("* ") for line in rows)
    ends = {re.search(r"fer2013|fer\+", line).start() for line in rows}
    assert len(ends) == 1, text  # the labels column starts at the same place on every row
    params = {re.search(r"\d+\.\d\dM(?=\s+0\.\d{4})", line).end() for line in rows}
    assert len(params) == 1, text


def test_the_progress_bar_says_it_is_writing_reports_once_every_image_is_counted():
    with ScoringProgress(3, terminal=True) as progress:
        task = progress._bar.tasks[0]
        progress.advance(2)
        assert task.description == "scoring"
        progress.advance()
        assert task.description == WRITING_REPORTS and task.completed == 3


def test_an_environment_variables_configuration_error_names_the_variable_not_the_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ferbatch.toml").write_text("[score]\nworkers = 2\n")  # a valid file, found in the working folder
    result = CliRunner().invoke(cli, ["config", "show"], env={"FERBATCH_SCORE__WORKERZ": "3"})
    assert result.exit_code == 1
    assert result.output.startswith("Error: FERBATCH_SCORE__WORKERZ: ") and "score.workerz" in result.output
    assert "ferbatch.toml" not in result.output
    (tmp_path / "ferbatch.toml").write_text("[score]\nworkerz = 2\n")
    result = CliRunner().invoke(cli, ["config", "show"])
    assert result.output.startswith("Error: ferbatch.toml: unknown key 'score.workerz'")
