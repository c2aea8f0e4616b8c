"""The current table (OUT/current/images, OUT/current/faces): one row per photo that exists, its newest verdict,
switched atomically with each commit; and commits that fail or die half-way."""

from __future__ import annotations

import logging
import os
import shutil
import time
import zlib
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from fakes import FakeClassifier, FakeComponents
from imagefactory import encode, synthetic

import ferbatch.reports._store
from ferbatch.errors import FerbatchError
from ferbatch.reports import CURRENT_LINK, TABLES
from ferbatch.scoring import PipelineSettings, ScoreSettings, run_scoring

SETTINGS = ScoreSettings(max_pixels=4_000_000)
PIPELINE = PipelineSettings.from_settings(SETTINGS, chunk_images=4)
WIDTHS = {"a/one.jpg": 150, "a/two.jpg": 250, "b/three.jpg": 350, "b/none.jpg": 90, "top.jpg": 150,
          "c/four.jpg": 450, "c/five.jpg": 150}  # 7 photos, 12 faces (one face per 100 px of width)


def _photos(folder: Path, widths: dict[str, int]) -> Path:
    for name, width in widths.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode(synthetic(width, 120, seed=zlib.crc32(name.encode())), "JPEG"))
    return folder


def _score(folder: Path, out: Path, version: str = "fake-v1", **options):
    settings_options = {k: options.pop(k) for k in ("rescore_on_new_model", "shard_size", "include") if k in options}
    settings = SETTINGS.with_overrides(folders=[folder], out=out, **settings_options)
    return run_scoring(settings, FakeComponents(FakeClassifier(version)), pipeline=PIPELINE, **options)


def _current(out: Path, table: str = "images") -> pd.DataFrame:
    return pd.read_parquet(out / CURRENT_LINK / table)


def _history(out: Path, table: str = "images") -> pd.DataFrame:
    return pd.read_parquet(out / table)


def _duckdb_count(path: Path) -> int:
    return duckdb.sql(f"SELECT count(*) FROM read_parquet('{path}/**/*.parquet')").fetchall()[0][0]


@pytest.fixture
def photos(tmp_path) -> Path:
    return _photos(tmp_path / "in", WIDTHS)


def test_a_new_model_scores_every_photo_again_and_the_current_table_keeps_one_row_each(photos, tmp_path, caplog):
    out = tmp_path / "out"
    _score(photos, out)
    with caplog.at_level(logging.WARNING, logger="ferbatch"):
        second = _score(photos, out, "fake-v2")
    assert second.n_scored == 7
    assert len(_history(out)) == 14 and len(_current(out)) == 7
    current = _current(out)
    assert set(current.model_version) == {"fake-v2"} and current.path.is_unique
    assert len(_current(out, "faces")) == 12 and len(_history(out, "faces")) == 24
    assert _duckdb_count(out / CURRENT_LINK / "images") == 7
    change = second.to_dict()["model_change"]
    assert change["previous"] == {"fake-v1": 7} and change["rescored"] and change["estimated_seconds"] is not None
    said = [r.getMessage() for r in caplog.records if "is new to this folder" in r.getMessage()]
    assert len(said) == 1 and "7 photo(s) scored by fake-v1 (7) are scored again, about" in said[0]
    import io

    from rich.console import Console

    from ferbatch.present.console import print_summary, summary_markdown

    printed = io.StringIO()
    print_summary(second.to_dict(), Console(file=printed, width=80))
    assert "new model fake-v2; photos scored by older models:" in printed.getvalue()
    assert "fake-v1: 7" in printed.getvalue() and "(estimated 0:00:" in printed.getvalue()
    assert "scored again by this run" in summary_markdown(second.to_dict())
    assert _score(photos, out, "fake-v2").to_dict()["model_change"] is None  # said once, when it happens


def test_rescore_on_new_model_off_keeps_old_rows_and_scores_only_new_photos(photos, tmp_path):
    out = tmp_path / "out"
    _score(photos, out)
    _photos(photos, {"d/new.jpg": 250})
    second = _score(photos, out, "fake-v2", rescore_on_new_model=False)
    assert second.n_scored == 1 and second.to_dict()["model_change"]["rescored"] is False
    models = _current(out).set_index("path").model_version
    assert models["d/new.jpg"] == "fake-v2" and (models.drop("d/new.jpg") == "fake-v1").all() and len(models) == 8


def test_rescore_adds_history_rows_but_not_current_rows(photos, tmp_path):
    out = tmp_path / "out"
    first = _score(photos, out)
    second = _score(photos, out, rescore=True)
    assert len(_history(out)) == 14 and len(_current(out)) == 7
    assert set(_current(out).run_id) == {second.run_id} != {first.run_id}
    assert len(_current(out, "faces")) == 12 and set(_current(out, "faces").run_id) == {second.run_id}


def test_a_deleted_photo_leaves_the_current_table_and_stays_in_the_history(photos, tmp_path):
    out = tmp_path / "out"
    _score(photos, out)
    (photos / "b" / "three.jpg").unlink()
    second = _score(photos, out)
    assert second.n_scored == 0
    assert "b/three.jpg" not in set(_current(out).path) and len(_current(out)) == 6
    assert "b/three.jpg" not in set(_current(out, "faces").path) and len(_current(out, "faces")) == 9
    assert "b/three.jpg" in set(_history(out).path) and len(_history(out)) == 7


def test_a_moved_photo_is_not_scored_again_and_its_rows_follow_it(photos, tmp_path, monkeypatch):
    import ferbatch.scoring._run

    out = tmp_path / "out"
    _score(photos, out)
    (photos / "d").mkdir()
    (photos / "b" / "three.jpg").rename(photos / "d" / "three.jpg")
    second = _score(photos, out)
    assert second.n_scored == 0 and second.n_skipped == 7
    current = _current(out).set_index("path")
    assert "b/three.jpg" not in current.index and current.loc["d/three.jpg", "folder"] == "d"
    assert current.loc["d/three.jpg", "n_faces"] == 3
    faces = _current(out, "faces")
    assert (faces.path == "d/three.jpg").sum() == 3 and "b/three.jpg" not in set(faces.path)
    reads = []
    original = ferbatch.scoring._run.file_id
    monkeypatch.setattr(ferbatch.scoring._run, "file_id", lambda file, *a: reads.append(file) or original(file, *a))
    assert _score(photos, out).n_skipped == 7 and reads == []  # the carried row's fingerprint matches now


def test_runs_over_other_folders_keep_the_rows_of_folders_they_did_not_scan(photos, tmp_path):
    out = tmp_path / "out"
    _score(photos, out)
    other = _photos(tmp_path / "other", {"x.jpg": 150})
    _score(other, out)
    assert len(_current(out)) == 8


def test_a_nightly_with_one_new_photo_links_the_old_parts_instead_of_writing_them(photos, tmp_path):
    out = tmp_path / "out"
    _score(photos, out, shard_size=3)
    before = {p.relative_to(p.parents[2]): p.stat().st_ino
              for p in (out / CURRENT_LINK).resolve().glob("*/run_date=*/*.parquet")}
    _photos(photos, {"d/new.jpg": 250})
    _score(photos, out, shard_size=3)
    after = {p.relative_to(p.parents[2]): p.stat().st_ino
             for p in (out / CURRENT_LINK).resolve().glob("*/run_date=*/*.parquet")}
    assert len(before) == 6 and len(after) == 8
    assert all(after[name] == inode for name, inode in before.items())  # the same files, not copies
    assert len(_current(out)) == 8


def test_a_folder_from_before_the_current_table_gets_one_from_its_history_without_scoring(photos, tmp_path):
    out = tmp_path / "out"
    _score(photos, out)
    _score(photos, out, rescore=True)
    (out / CURRENT_LINK).unlink()
    shutil.rmtree(out / ".ferbatch-current")
    (photos / "top.jpg").unlink()
    third = _score(photos, out)
    assert third.n_scored == 0 and len(_current(out)) == 6 and len(_current(out, "faces")) == 11
    newest = _history(out).sort_values("scored_at").run_id.iloc[-1]  # run ids of one second do not sort by time
    assert set(_current(out).run_id) == {newest}  # the newest row of each photo


def test_every_dataset_opens_once_a_run_committed_even_without_a_face(tmp_path):
    folder = _photos(tmp_path / "in", {"none.jpg": 90})
    out = tmp_path / "out"
    _score(folder, out)
    for path in [*(out / table for table in TABLES), out / CURRENT_LINK / "images", out / CURRENT_LINK / "faces"]:
        assert isinstance(pd.read_parquet(path), pd.DataFrame), path
    assert len(pd.read_parquet(out / "faces")) == 0 and len(_current(out)) == 1


def test_when_every_photo_is_gone_the_current_table_is_empty_but_readable(photos, tmp_path):
    out = tmp_path / "out"
    _score(photos, out)
    shutil.rmtree(photos)
    photos.mkdir()
    _score(photos, out)
    assert len(_current(out)) == 0 and len(_current(out, "faces")) == 0 and len(_history(out)) == 7


def test_something_else_at_out_current_is_a_one_line_error(photos, tmp_path):
    (tmp_path / "out" / CURRENT_LINK).mkdir(parents=True)
    with pytest.raises(FerbatchError, match=r"current: not the current-table link ferbatch keeps there"):
        _score(photos, tmp_path / "out")


def _state(out: Path) -> dict:
    return {"history": {t: _duckdb_count(out / t) for t in TABLES},
            "current": {t: _duckdb_count(out / CURRENT_LINK / t) for t in ("images", "faces")},
            "link": os.readlink(out / CURRENT_LINK)}


@pytest.mark.parametrize("failing", ["faces", "images", CURRENT_LINK])
def test_a_commit_whose_rename_fails_is_undone_and_says_so_in_one_line(photos, tmp_path, monkeypatch, failing):
    """A table folder that cannot be written (as root, chmod does not stop us: the failure is injected)."""
    out = tmp_path / "out"
    _score(photos, out)
    before = _state(out)
    _photos(photos, {"d/new.jpg": 250})
    real_replace = os.replace

    def refuses(src, dst):
        if Path(dst).name == CURRENT_LINK if failing == CURRENT_LINK else f"/{failing}/run_date=" in str(dst):
            raise PermissionError(13, "Permission denied")
        real_replace(src, dst)

    monkeypatch.setattr(ferbatch.reports._store.os, "replace", refuses)
    with pytest.raises(FerbatchError) as raised:
        _score(photos, out)
    monkeypatch.setattr(ferbatch.reports._store.os, "replace", real_replace)
    message = str(raised.value)
    assert "\n" not in message and "Permission denied" in message and "nothing of run" in message
    assert _state(out) == before  # readers see none of the failed run
    assert not list(out.rglob("*.tmp")) and not list(out.glob(".ferbatch-commit-*"))
    assert len(list((out / ".ferbatch-current").iterdir())) == 1
    again = _score(photos, out)  # nothing lost: the new photo is scored by the next run
    assert again.n_scored == 1 and len(_current(out)) == 8 and len(_history(out)) == 8


def test_a_run_killed_during_the_commit_leaves_the_current_table_at_its_previous_version(photos, tmp_path,
                                                                                          monkeypatch):
    out = tmp_path / "out"
    _score(photos, out)
    before = _state(out)
    _photos(photos, {"d/new.jpg": 250})
    real_replace, calls = os.replace, []

    def dies_after_the_first_part(src, dst):
        calls.append(dst)
        if len(calls) == 3:  # the manifest, one history part, then the power goes
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(ferbatch.reports._store.os, "replace", dies_after_the_first_part)
    with pytest.raises(KeyboardInterrupt):
        _score(photos, out)
    monkeypatch.setattr(ferbatch.reports._store.os, "replace", real_replace)
    assert _state(out)["current"] == before["current"] and _state(out)["link"] == before["link"]
    again = _score(photos, out)  # finishes the interrupted commit first: the new photo is not scored twice
    assert again.n_scored == 0 and len(_current(out)) == 8 and len(_history(out)) == 8
    assert len(list((out / ".ferbatch-current").iterdir())) == 2  # the live version and the one before


def test_report_reads_the_current_table_by_default_and_one_run_with_run(photos, tmp_path):
    import json

    from click.testing import CliRunner

    from ferbatch.cli import cli
    from ferbatch.present.html_report import write_html_report
    from ferbatch.reports import ReportStore

    out = tmp_path / "out"
    first = _score(photos, out)
    ours = ReportStore(out).current_aggregates().drop_columns(["run_id", "run_date", "model_version"])
    theirs = ReportStore(out).latest_aggregates().drop_columns(["run_id", "run_date", "model_version"])
    assert ours.to_pylist() == theirs.to_pylist()  # one run over a fresh folder: the same numbers either way
    (photos / "top.jpg").unlink()
    _photos(photos, {"d/new.jpg": 250})
    time.sleep(1.1)  # run ids sort by their start second: "latest" must be the second run
    second = _score(photos, out, "fake-v2")

    def rows(*options):
        result = CliRunner().invoke(cli, ["report", str(out), "--json", *options])
        assert result.exit_code == 0, result.output
        return {(r["group_by"], r["group_value"]): r for r in json.loads(result.output)}

    current = rows()
    assert current[("all", "all")]["n_images"] == 7 and current[("all", "all")]["run_id"] == "current"
    assert current[("folder", "d")]["n_images"] == 1 and ("folder", "(top level)") not in current
    assert rows("--run", "latest")[("all", "all")]["run_id"] == second.run_id
    assert rows("--run", first.run_id)[("all", "all")]["n_images"] == 7
    table = CliRunner().invoke(cli, ["report", str(out)])
    assert "current table: 7 photo(s)" in table.output and "fake-v2" in table.output
    bad = CliRunner().invoke(cli, ["report", str(out), "--run", "nope"])
    assert bad.exit_code == 1 and bad.output.startswith("Error: ") and "no run 'nope'" in bad.output
    page = write_html_report(out, tmp_path / "r.html").read_text()
    assert "current table (newest run" in page and "7 = " in page
    old = write_html_report(out, tmp_path / "old.html", run_id=first.run_id).read_text()
    assert f"Facial sentiment: run {first.run_id}" in old


@pytest.mark.parametrize("collide", [False, True])
def test_the_check_matches_path_size_and_mtime_and_confirms_every_hash_match(monkeypatch, collide):
    import numpy as np
    import pyarrow as pa

    import ferbatch.reports._current as current

    if collide:  # every path hashes alike: only the confirmation on the values can tell them apart
        monkeypatch.setattr(current, "_string_hashes", lambda strings: np.zeros(len(strings), np.uint64))
    index = pa.table({"file": ["/p/a.jpg", "/p/b.jpg", "/p/c.jpg", "/p/d.jpg"], "bytes": [1, 2, 3, None],
                      "mtime": [10, 20, 30, 40], "eligible": [True, True, False, True], "part": [0, 0, 0, 0]})
    scan = pa.table({"file": ["/p/a.jpg", "/p/b.jpg", "/p/c.jpg", "/p/d.jpg", "/p/e.jpg", "/p/a.jpg"],
                     "bytes": [1, 2, 3, None, 5, 1], "mtime": [10, 21, 30, 40, 50, 11]})
    # a: same; b: new mtime; c: another model's row; d: no size (unreadable); e: new; a again, touched
    assert current.unmatched(scan, index).to_pylist() == [1, 2, 3, 4, 5]  # a collision never hides a file
    assert current.unmatched(scan, index.slice(0, 0)).to_pylist() == list(range(6))


def test_the_cli_reports_a_failed_commit_in_one_error_line_with_exit_code_1(photos, tmp_path, monkeypatch):
    import ferbatch_flows.score
    from click.testing import CliRunner

    from ferbatch.cli import cli

    def score_with_fakes(settings, sentiment, **kwargs):
        return run_scoring(settings, FakeComponents(), pipeline=PIPELINE).to_dict()

    real_replace = os.replace

    def images_folder_refuses(src, dst):
        if "/images/run_date=" in str(dst):
            raise PermissionError(13, "Permission denied")
        real_replace(src, dst)

    monkeypatch.setattr(ferbatch_flows.score, "score", score_with_fakes)
    monkeypatch.setattr(ferbatch.reports._store.os, "replace", images_folder_refuses)
    result = CliRunner().invoke(cli, ["score", str(photos), "--out", str(tmp_path / "out")])
    assert result.exit_code == 1, result.output
    assert result.output.strip().splitlines() == [result.output.strip()]  # one line, no traceback
    assert result.output.startswith(f"Error: {tmp_path / 'out' / 'images'}/run_date=")
    assert "Permission denied" in result.output and "nothing of run" in result.output
    assert not list((tmp_path / "out").glob("*/run_date=*/*.parquet"))  # faces and aggregates undone too


def test_a_version_left_by_a_run_killed_before_its_commit_is_removed_by_the_next_run(photos, tmp_path, monkeypatch):
    import ferbatch.reports._store as store

    out = tmp_path / "out"
    _score(photos, out)
    live = os.readlink(out / CURRENT_LINK)
    _photos(photos, {"d/new.jpg": 250})

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # after the version was built, before the manifest

    monkeypatch.setattr(store, "_commit_parts", killed)
    with pytest.raises(KeyboardInterrupt):
        _score(photos, out)
    monkeypatch.undo()
    assert len(list((out / ".ferbatch-current").iterdir())) == 2 and os.readlink(out / CURRENT_LINK) == live
    assert len(_current(out)) == 7  # readers still see the previous version
    again = _score(photos, out)
    assert again.n_scored == 1 and len(_current(out)) == 8
    versions = sorted(p.name for p in (out / ".ferbatch-current").iterdir())
    assert versions == sorted([Path(live).name, again.run_id])  # the killed run's version is gone
