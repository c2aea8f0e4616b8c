"""Names are escaped the same way in every view and format: the row views (`report --images / --faces`, `analyze
DIR`) as the aggregate views, on a terminal (control and bidirectional characters visible, markup as written), in
CSV (never a spreadsheet formula), Markdown (never a cell break, HTML or an escape) and HTML."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest
from click.testing import CliRunner
from fakes import FakeComponents
from imagefactory import encode, synthetic
from rich.console import Console

from ferbatch.cli import cli
from ferbatch.config import ScoreSettings
from ferbatch.scoring import PipelineSettings, run_scoring

# Each a file name (no "/"): terminal title and screen clear, a right-to-left override, rich markup, spreadsheet
# formulas, a Markdown cell break and HTML.
HOSTILE_NAMES = ["\x1b]0;pwned\x07.jpg", "\x1b[2Jclear.jpg", "\u202egnp.exe.jpg", "[bold]b[red].jpg",
                 '=HYPERLINK("http:x","y").jpg', "+cmd|calc.jpg", "@SUM(1+1).jpg", "-2+3.jpg", "a|b.jpg",
                 "<img src=x onerror=alert(1)>.jpg"]
RAW = ("\x1b", "\x07", "\u202e")
FORMULA = ("=", "+", "-", "@", "\t", "\r")


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("rows")
    folder = base / "in\x1b[31m"
    folder.mkdir()
    for i, name in enumerate(HOSTILE_NAMES):  # at the top: the path column starts with the name
        (folder / name).write_bytes(encode(synthetic(250 if i % 2 else 90, 120, seed=i), "JPEG"))
    (folder / "=cmd|' -C calc'!A0").mkdir()  # a first-level folder: the folder column
    (folder / "=cmd|' -C calc'!A0" / "x.jpg").write_bytes(encode(synthetic(250, 120, seed=99), "JPEG"))
    (folder / "\x1b[2Jbroken.jpg").write_bytes(b"not an image")
    settings = ScoreSettings(folders=[folder], out=base / "out")
    run_scoring(settings, FakeComponents(), pipeline=PipelineSettings.from_settings(settings, chunk_images=4))
    return base / "out"


def _report(out: Path, *args: str) -> str:
    result = CliRunner(env={"COLUMNS": "200"}).invoke(cli, ["report", str(out), *args])
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("rows", ["--images", "--faces"])
def test_the_row_tables_show_names_escaped_and_markup_as_written(out, rows):
    text = _report(out, rows)
    assert not any(raw in text for raw in RAW), repr(text[:500])
    assert "\\x1b]0;pwned\\x07.jpg" in text.replace("\n", "") or rows == "--faces"
    assert "\\u202egnp.exe.jpg" in text.replace("\n", "") or rows == "--faces"
    assert "[bold]b[red].jpg" in text.replace("\n", "")  # markup shown as written, not applied


@pytest.mark.parametrize("rows", ["--images", "--faces"])
def test_the_row_csv_never_starts_a_cell_with_a_formula(out, rows):
    table = list(csv.DictReader(io.StringIO(_report(out, rows, "--format", "csv"))))
    assert table
    for row in table:
        for column in ("root", "path", "folder", "error"):
            value = row.get(column) or ""
            assert not value.startswith(FORMULA), (column, value)
            assert not any(raw in value for raw in RAW), (column, value)
    paths = {row["path"] for row in table}
    assert "'+cmd|calc.jpg" in paths and "'=cmd|' -C calc'!A0/x.jpg" in paths  # shown, as text
    assert rows == "--faces" or "'=HYPERLINK(\"http:x\",\"y\").jpg" in paths


@pytest.mark.parametrize("rows", ["--images", "--faces"])
def test_the_row_markdown_keeps_each_name_in_its_cell(out, rows):
    text = _report(out, rows, "--format", "markdown")
    lines = text.strip().splitlines()
    columns = lines[0].count("|")
    for line in lines[2:]:
        assert line.replace("\\|", "").count("|") == columns, line  # no name splits a cell
    assert "<img" not in text and not any(raw in text for raw in RAW)


def test_analyze_rows_on_a_terminal_are_escaped(out):
    from ferbatch.analysis import Analyzer
    from ferbatch.present.console import print_analysis

    folder = next(p for p in out.parent.iterdir() if p.name.startswith("in"))
    images = list(Analyzer(components=FakeComponents()).images([folder]))
    buffer = io.StringIO()
    print_analysis(images, "fake", Console(file=buffer, width=200, color_system=None))
    text = buffer.getvalue()
    assert not any(raw in text for raw in RAW), repr(text[:500])
    assert "[bold]b[red].jpg" in text.replace("\n", "") and "\\x1b[2Jbroken.jpg" in text.replace("\n", "")


def test_the_html_page_shows_names_escaped(out, tmp_path):
    from ferbatch.present.html_report import write_html_report

    page = write_html_report(out, tmp_path / "report.html", run_id="latest").read_text()
    assert not any(raw in page for raw in RAW) and "<img src=x" not in page
