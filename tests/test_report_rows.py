"""`report --images` / `--faces`: the rows themselves, and the faces table's root, folder and taken_at, also for
output folders written before the faces table held them."""

from __future__ import annotations

import csv
import io
import json
import zlib
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from fakes import FakeClassifier, FakeComponents
from imagefactory import encode, synthetic
from PIL import Image

from ferbatch.cli import cli
from ferbatch.errors import FerbatchError
from ferbatch.reports import FACES_SCHEMA, ReportStore, add_face_columns
from ferbatch.scoring import ScoreSettings, run_scoring


def _photo(path: Path, width: int, taken: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    exif = Image.Exif()
    if taken:
        exif.get_ifd(0x8769)[36867] = taken
    path.write_bytes(encode(synthetic(width, 120, seed=zlib.crc32(str(path).encode())), "JPEG", exif=exif.tobytes()))


def _scored(tmp_path: Path, **kwargs) -> Path:
    folder, out = tmp_path / "in", tmp_path / "out"
    _photo(folder / "a" / "one.jpg", 150, "2024:05:06 14:30:00")
    _photo(folder / "a" / "three.jpg", 350)
    _photo(folder / "b" / "none.jpg", 90)
    _photo(folder / "top.jpg", 250)
    run_scoring(ScoreSettings(folders=[folder], out=out), FakeComponents(FakeClassifier()), **kwargs)
    return out


def _parts(out: Path, table: str) -> list[Path]:
    return sorted((out / table).glob("run_date=*/*.parquet"))


def test_faces_rows_carry_their_images_root_folder_and_date(tmp_path):
    out = _scored(tmp_path)
    faces = pq.ParquetDataset(_parts(out, "faces"), partitioning=None).read().to_pylist()
    assert {(f["path"], f["folder"]) for f in faces} == {("a/one.jpg", "a"), ("a/three.jpg", "a"),
                                                         ("top.jpg", "(top level)")}
    assert {f["root"] for f in faces} == {str((tmp_path / "in").resolve())}
    taken = {f["path"]: f["taken_at"] for f in faces}
    assert taken["a/one.jpg"].isoformat() == "2024-05-06T14:30:00+00:00" and taken["a/three.jpg"] is None
    assert pq.read_schema(_parts(out, "faces")[0]).names == [n for n in FACES_SCHEMA.names if n != "run_date"]


def test_images_and_faces_rows_keep_each_images_latest_scoring_and_filter(tmp_path):
    out = _scored(tmp_path)
    run_scoring(ScoreSettings(folders=[tmp_path / "in"], out=out), FakeComponents(FakeClassifier("fake-v2")))
    store = ReportStore(out)
    images = store.rows("images").to_pylist()
    assert [r["path"] for r in images] == ["a/one.jpg", "a/three.jpg", "b/none.jpg", "top.jpg"]
    assert {r["model_version"] for r in images} == {"fake-v2"}  # one row per image, not one per run
    faces = store.rows("faces").to_pylist()
    assert len(faces) == 6 and {r["model_version"] for r in faces} == {"fake-v2"}
    assert [(r["path"], r["face_index"]) for r in faces][:4] == [("a/one.jpg", 0), ("a/three.jpg", 0),
                                                                ("a/three.jpg", 1), ("a/three.jpg", 2)]
    in_a = store.rows("faces", folder="a").to_pylist()
    assert {r["folder"] for r in in_a} == {"a"} and len(in_a) == 4
    assert [r["path"] for r in store.rows("images", folder="(top level)").to_pylist()] == ["top.jpg"]
    happy = store.rows("faces", emotion="HAPPY").to_pylist()
    assert happy and {r["emotion"] for r in happy} == {"Happy"}
    assert store.rows("faces", limit=2).num_rows == 2
    with pytest.raises(FerbatchError, match="unknown emotion 'joy'"):
        store.rows("faces", emotion="joy")


def test_faces_parts_written_before_the_new_columns_are_filled_in_then_upgraded_by_the_next_run(tmp_path):
    out = _scored(tmp_path)
    expected = ReportStore(out).rows("faces").to_pylist()
    for part in _parts(out, "faces"):  # as an earlier version wrote them
        old = pq.read_table(part, partitioning=None)
        pq.write_table(old.drop_columns(["root", "folder", "taken_at"]), part)
    assert ReportStore(out).rows("faces").to_pylist() == expected  # read-only: filled from the images rows
    assert "root" not in pq.read_schema(_parts(out, "faces")[0]).names

    _photo(tmp_path / "in" / "c" / "new.jpg", 150)
    run_scoring(ScoreSettings(folders=[tmp_path / "in"], out=out), FakeComponents(FakeClassifier()))
    for part in _parts(out, "faces"):  # the run gave the old part its columns: one schema in the folder
        assert pq.read_schema(part).names == [n for n in FACES_SCHEMA.names if n != "run_date"]
        assert pq.read_schema(part).metadata[b"ferbatch.run_id"]
    rows = ReportStore(out).rows("faces").to_pylist()
    assert [r for r in rows if r["path"] != "c/new.jpg"] == expected and len(rows) == len(expected) + 1
    assert add_face_columns(out) == []  # nothing left to do


def test_the_migration_command_adds_the_columns_too(tmp_path):
    from ferbatch.reports.migrate import main

    out = _scored(tmp_path)
    for part in _parts(out, "faces"):
        pq.write_table(pq.read_table(part, partitioning=None).drop_columns(["folder", "taken_at", "root"]), part)
    assert main([str(out)]) == 0
    stored = pq.ParquetDataset(_parts(out, "faces"), partitioning=None).read()
    assert stored.column("folder").null_count == 0 and set(stored.column("folder").to_pylist()) == {"a", "(top level)"}


def test_report_prints_rows_in_every_format(tmp_path):
    out = _scored(tmp_path)
    runner = CliRunner()
    table = runner.invoke(cli, ["report", str(out), "--faces", "--folder", "a"], env={"COLUMNS": "80"})
    assert table.exit_code == 0, table.output
    assert "a/three.jpg" in table.output and "top.jpg" not in table.output and "4 faces" in table.output
    assert max(map(len, table.output.splitlines())) <= 80
    images = runner.invoke(cli, ["report", str(out), "--images", "--format", "csv"])
    records = list(csv.DictReader(io.StringIO(images.output)))
    assert [r["path"] for r in records] == ["a/one.jpg", "a/three.jpg", "b/none.jpg", "top.jpg"]
    assert "taken_at" in records[0] and records[2]["status"] == "no_face"
    as_json = json.loads(runner.invoke(cli, ["report", str(out), "--faces", "--json", "--limit", "1"]).output)
    assert len(as_json) == 1 and as_json[0]["folder"] == "a"
    markdown = runner.invoke(cli, ["report", str(out), "--images", "--format", "markdown"]).output
    assert markdown.startswith("| root | path |") and "| a/one.jpg |" in markdown


@pytest.mark.parametrize(("args", "message"), [
    (["--folder", "a"], "--folder: only with --images or --faces"),
    (["--faces", "--emotion", "joy"], "unknown emotion 'joy'"),
    (["--images", "--html", "x.html"], "--html and --images contradict each other"),
])
def test_report_row_options_are_checked_in_one_line(tmp_path, args, message):
    out = _scored(tmp_path)
    result = CliRunner().invoke(cli, ["report", str(out), *args])
    assert result.exit_code != 0 and message in result.output and "Traceback" not in result.output


def test_report_rows_of_a_folder_without_scored_images_say_so(tmp_path):
    result = CliRunner().invoke(cli, ["report", str(tmp_path), "--images"])
    assert result.exit_code == 1 and "no scored images" in result.output
