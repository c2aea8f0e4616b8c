"""What a person reads: the score summary and the report fit a 100-column terminal, in every format."""

from __future__ import annotations

import csv
import io
import json
from datetime import date

import pytest
from click.testing import CliRunner
from rich.console import Console

from ferbatch.classes import CLASS_NAMES
from ferbatch.present.console import AGGREGATE_VIEWS, format_aggregates, print_aggregates, print_summary


def _row(group_by: str, group_value: str | None, n: int) -> dict:
    return {"run_id": "20261127T185454Z-72b0e3", "run_date": date(2026, 11, 27), "group_by": group_by,
            "group_value": group_value, "n_images": n * 1000, "n_ok": n * 900, "n_no_face": n * 90,
            "n_error": n * 10, "n_faces": n * 2345, "share_positive": 0.6667, "share_negative": 0.1667,
            "share_neutral": 0.1666, "mean_sentiment_score": -0.123456,
            **{f"n_{c.lower()}": n * 128 for c in CLASS_NAMES}, "model_version": "20261126-155452-fer_cnn"}


ROWS = [_row("all", "all", 99), _row("folder", "", 3), _row("folder", "brand_campaign_2026/spring/outdoor", 40),
        _row("taken_date", "2026-11-01", 7), _row("taken_date", None, 2)]
SUMMARY = {"run_id": "20261127T185454Z-72b0e3", "model_version": "20261126-155452-fer_cnn",
           "images_found": 123456, "already_scored": 100000, "scored": 23456, "ok": 20000, "no_face": 3000,
           "error": 456, "faces": 45678, "share_positive": 0.6667, "share_negative": 0.1667, "share_neutral": 0.1666,
           "images_per_second": 12.345, "top_errors": {"corrupt or truncated": 3}, "out_dir": "/data/reports"}


def _render(print_function, value) -> str:
    console = Console(width=100, record=True, file=io.StringIO())
    print_function(value, console)
    return console.export_text()


@pytest.mark.parametrize(("print_function", "value"), [(print_summary, SUMMARY), (print_aggregates, ROWS)])
def test_tables_fit_100_columns_without_cutting_a_cell(print_function, value):
    text = _render(print_function, value)
    assert "…" not in text
    assert max(map(len, text.splitlines())) <= 100
    for number in ("123456", "100000", "23456", "45678") if value is SUMMARY else ("99000", "89100", "12672"):
        assert number in text


def test_report_headers_are_unambiguous_and_every_value_is_shown():
    headers = [h for view in AGGREGATE_VIEWS.values() for _, h in view]
    assert len(headers) == len(set(headers))
    assert {"neutral %", "Neutral"} <= set(headers)  # a share and a count, told apart
    text = _render(print_aggregates, ROWS)
    assert "brand_campaign_2026/spring/outdoor" in text  # the first view has room for the whole value
    assert "(top level)" in text and "66.7%" in text and "-0.123" in text


def test_report_formats_carry_every_column():
    records = list(csv.DictReader(io.StringIO(format_aggregates(ROWS, "csv"))))
    assert len(records) == len(ROWS) and records[2]["group_value"] == "brand_campaign_2026/spring/outdoor"
    assert set(records[0]) == set(ROWS[0])
    assert json.loads(format_aggregates(ROWS, "json"))[0]["n_images"] == 99000
    markdown = format_aggregates(ROWS, "markdown")
    assert markdown.count("### ") == len(AGGREGATE_VIEWS) and "| folder | (top level) |" in markdown


def test_report_command_takes_a_format(tmp_path, monkeypatch):
    import pyarrow as pa

    from ferbatch.cli import cli
    from ferbatch.reports import ReportStore

    monkeypatch.setattr(ReportStore, "latest_aggregates", lambda self: pa.Table.from_pylist(ROWS))
    for fmt, marker in [("table", "top emotion"), ("csv", "group_by,group_value"), ("markdown", "### images"),
                        ("json", '"group_by": "all"')]:
        result = CliRunner().invoke(cli, ["report", str(tmp_path), "--format", fmt])
        assert result.exit_code == 0, result.output
        assert marker in result.output


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_outside_a_terminal_a_plain_line_with_count_rate_and_eta_is_logged_every_interval(caplog):
    import logging

    from ferbatch.present.console import ScoringProgress

    clock = FakeClock()
    with (caplog.at_level(logging.INFO, logger="ferbatch.progress"),
          ScoringProgress(10, terminal=False, clock=clock, interval=30.0) as progress):
        for _ in range(10):
            clock.now += 10.0  # one image every 10 s
            progress.advance()
    lines = [r.getMessage() for r in caplog.records if r.name == "ferbatch.progress"]
    assert lines == [
        "scored 3/10 image(s), 0.1 images/s, ETA 0:01:10",
        "scored 6/10 image(s), 0.1 images/s, ETA 0:00:40",
        "scored 9/10 image(s), 0.1 images/s, ETA 0:00:10",
        "scored 10/10 image(s), 0.1 images/s, ETA 0:00:00",
    ]


def test_on_a_terminal_the_bar_advances_with_each_image_and_shows_the_rate():
    from ferbatch.present.console import ScoringProgress

    clock = FakeClock()
    with ScoringProgress(4, terminal=True, clock=clock) as progress:
        clock.now += 2.0
        progress.advance()
        progress.advance()
        task = progress._bar.tasks[0]
        assert (task.completed, task.total) == (2, 4)
        assert task.fields["rate"] == "1.0 img/s"
        assert progress.line() == "scored 2/4 image(s), 1.0 images/s, ETA 0:00:02"


def test_nothing_to_do_draws_and_logs_nothing(caplog):
    from ferbatch.present.console import ScoringProgress

    with ScoringProgress(0, terminal=True) as progress:
        assert progress._bar is None
    assert not [r for r in caplog.records if r.name == "ferbatch.progress"]


def test_presets_table_fits_100_columns_with_each_recipes_settings_and_purpose():
    from ferbatch.present.console import PRESET_NOTES, print_presets
    from ferbatch.training import ENSEMBLES, PRESETS

    text = _render(lambda _, console: print_presets(PRESETS, ENSEMBLES, console), None)
    assert "…" not in text and max(map(len, text.splitlines())) <= 100
    for name in [*PRESETS, *ENSEMBLES]:
        assert name in text
    assert set(PRESET_NOTES) >= set(PRESETS) | set(ENSEMBLES)  # a new recipe gets a line here too
    result = CliRunner().invoke(__import__("ferbatch.cli", fromlist=["cli"]).cli, ["presets", "--json"])
    assert json.loads(result.output)["default"]["architecture"] == "fer_cnn"


def test_the_score_summary_formats_parse_back():
    from ferbatch.present.console import format_summary

    summary = {**SUMMARY, "seconds": 1900.2}
    assert json.loads(format_summary(summary, "json"))["run_id"] == SUMMARY["run_id"]
    (row,) = list(csv.DictReader(io.StringIO(format_summary(summary, "csv"))))
    assert row["scored"] == str(SUMMARY["scored"]) and row["run_id"] == SUMMARY["run_id"]
    markdown = format_summary(summary, "markdown")
    assert markdown.startswith(f"## Scoring run {SUMMARY['run_id']}") and f"| {SUMMARY['scored']} |" in markdown
    with pytest.raises(ValueError, match="unknown format"):
        format_summary(summary, "xml")
