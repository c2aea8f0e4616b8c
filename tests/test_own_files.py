"""ferbatch writes only its own files: annotated copies never land in a scanned folder, the report folder or over a
file it did not write, and a report a user names (`report --html PATH`) replaces only a regular file, through a
temporary file of a random name, in a folder that exists."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner
from fakes import FakeComponents
from imagefactory import encode, synthetic

from ferbatch.cli import cli
from ferbatch.config import ScoreSettings
from ferbatch.errors import FerbatchError
from ferbatch.scoring import ANNOTATIONS_MARKER, PipelineSettings, run_scoring


def _photo(path: Path, width: int = 250, fmt: str = "JPEG", seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode(synthetic(width, 120, seed=seed), fmt))
    return path


def _digests(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _score(folder: Path, out: Path, annotate: Path | None, rescore: bool = False):
    chosen = ScoreSettings(folders=[folder], out=out)
    return run_scoring(chosen, FakeComponents(), annotate=str(annotate) if annotate else None, rescore=rescore,
                       pipeline=PipelineSettings.from_settings(chosen, chunk_images=4))


@pytest.fixture
def photos(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    _photo(folder / "a.jpg")
    _photo(folder / "sub" / "b.jpg", seed=1)
    return folder


# Annotated copies ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("where", "message"), [
    ("in", "is the scanned folder"), ("in/sub", "is inside the scanned folder"), (".", "holds the scanned folder"),
    ("out", "is the report folder"), ("out/images", "is inside the report folder"),
])
def test_annotations_into_a_scanned_or_report_folder_are_refused_and_nothing_is_touched(photos, tmp_path, where,
                                                                                         message):
    _score(photos, tmp_path / "out", None)  # a report folder with a committed run
    before, out_before = _digests(photos), _digests(tmp_path / "out")
    with pytest.raises(FerbatchError, match=message):
        _score(photos, tmp_path / "out", tmp_path / where, rescore=True)
    assert _digests(photos) == before and _digests(tmp_path / "out") == out_before
    assert not list(tmp_path.rglob(ANNOTATIONS_MARKER))  # no folder is hidden from later runs


@pytest.mark.parametrize("where", ["in", "in/sub", "out"])
def test_the_score_command_refuses_them_in_one_line_before_anything_starts(photos, tmp_path, where):
    result = CliRunner().invoke(cli, ["score", str(photos), "--out", str(tmp_path / "out"), "--annotate",
                                      str(tmp_path / where), "--models-dir", str(tmp_path / "no-models")])
    assert result.exit_code == 1, result.output
    assert result.output.strip().splitlines() == [result.output.strip()] and "Error: " in result.output
    assert "--annotate" in result.output and not list(tmp_path.rglob(ANNOTATIONS_MARKER))


def test_analyze_refuses_the_folder_of_a_photo_named_directly(tmp_path):
    photo = _photo(tmp_path / "photo.jpg")
    before = photo.read_bytes()
    for target in (tmp_path, tmp_path.parent):  # the copy would replace the photo, or the marker hide its folder
        result = CliRunner().invoke(cli, ["analyze", str(photo), "--annotate", str(target), "--models-dir",
                                          str(tmp_path / "no-models")])
        assert result.exit_code == 1 and "--annotate" in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1
    assert photo.read_bytes() == before and not (tmp_path / ANNOTATIONS_MARKER).exists()


def test_a_folder_holding_other_files_is_refused_but_an_earlier_annotations_folder_is_reused(photos, tmp_path):
    mine = tmp_path / "mine"
    _photo(mine / "holiday.jpg")
    with pytest.raises(FerbatchError, match="holds files ferbatch did not write"):
        _score(photos, tmp_path / "out", mine)
    assert _digests(mine).keys() == {"holiday.jpg"}
    _score(photos, tmp_path / "out", tmp_path / "checked")
    _score(photos, tmp_path / "out", tmp_path / "checked", rescore=True)  # marked: used again
    assert (tmp_path / "checked" / ANNOTATIONS_MARKER).is_file()


def test_name_clashes_get_distinct_copies_and_a_file_ferbatch_did_not_write_is_never_replaced(tmp_path):
    from ferbatch.scoring._annotate import _signed_by

    folder = tmp_path / "in"
    _photo(folder / "x.jpg", seed=1)
    _photo(folder / "x.png", fmt="PNG", seed=2)
    _photo(folder / "y.jpg", seed=3)
    checked = tmp_path / "checked"
    checked.mkdir()
    (checked / ANNOTATIONS_MARKER).write_text("")
    (checked / "y.jpg").write_bytes(b"a person's own file")  # in a marked folder, still not ferbatch's
    secret = tmp_path / "secret.txt"
    secret.write_text("keep me")
    (checked / "y.jpg.jpg").symlink_to(secret)  # a planted link at the next name is not written through
    _score(folder, tmp_path / "out", checked)
    copies = {p.name: _signed_by(p) for p in checked.iterdir() if p.suffix == ".jpg" and not p.is_symlink()}
    sources = {name: source.decode().rsplit("/", 1)[-1] for name, source in copies.items() if source}
    assert sorted(sources.values()) == ["x.jpg", "x.png", "y.jpg"], copies  # one copy per photo, none lost
    assert len(set(sources)) == 3
    assert (checked / "y.jpg").read_bytes() == b"a person's own file" and secret.read_text() == "keep me"
    files = sorted(p.name for p in checked.iterdir())
    _score(folder, tmp_path / "out", checked, rescore=True)
    _score(folder, tmp_path / "out2", checked)  # every photo scored again: each replaces its own copy
    assert sorted(p.name for p in checked.iterdir()) == files


# Report targets -----------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def scored_out(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("html")
    _photo(base / "in" / "a.jpg")
    _score(base / "in", base / "out", None)
    return base / "out"


def _html(out: Path, target: Path) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["report", str(out), "--html", str(target)])
    return result.exit_code, result.output


def test_a_fifo_or_a_device_at_the_html_target_is_refused_and_left_as_it_is(scored_out, tmp_path):
    fifo = tmp_path / "pipe.html"
    os.mkfifo(fifo)
    code, output = _html(scored_out, fifo)
    assert code == 1 and "a FIFO (named pipe), not a regular file; not replaced" in output, output
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    if os.geteuid() == 0:  # only root makes device nodes: one like /dev/null
        device = tmp_path / "null.html"
        os.mknod(device, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        code, output = _html(scored_out, device)
        assert code == 1 and "a character device" in output and stat.S_ISCHR(os.lstat(device).st_mode)
    link = tmp_path / "link.html"
    link.symlink_to(tmp_path / "elsewhere.html")
    code, output = _html(scored_out, link)
    assert code == 1 and "a symbolic link" in output and not (tmp_path / "elsewhere.html").exists()
    assert len(output.strip().splitlines()) == 1


def test_a_missing_folder_is_not_created(scored_out, tmp_path):
    code, output = _html(scored_out, tmp_path / "no" / "such" / "report.html")
    assert code == 1 and "does not exist" in output and not (tmp_path / "no").exists()
    assert len(output.strip().splitlines()) == 1


def test_a_planted_link_at_a_predictable_temporary_name_is_not_written_through(scored_out, tmp_path):
    other = tmp_path / "other.txt"
    other.write_text("not yours")
    target = tmp_path / "report.html"
    for name in ("report.html.tmp", ".report.html.tmp", "report.tmp"):
        (tmp_path / name).symlink_to(other)
    target.write_text("an older report")  # a regular file: replaced
    code, output = _html(scored_out, target)
    assert code == 0, output
    assert other.read_text() == "not yours" and target.read_text().startswith("<!DOCTYPE html>")
    assert not target.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir() if not p.is_symlink()) == ["other.txt", "report.html"]


def test_a_full_disk_is_one_line_and_leaves_no_temporary_file(scored_out, tmp_path, monkeypatch):
    import ferbatch.safe.files as safe_files

    def full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(safe_files.os, "fsync", full)
    code, output = _html(scored_out, tmp_path / "report.html")
    assert code == 1 and output.strip() == (f"Error: {tmp_path}/report.html: cannot write the HTML report (No space "
                                            "left on device); nothing was replaced")
    assert list(tmp_path.iterdir()) == []


def test_config_init_never_creates_folders_or_writes_through_a_link(tmp_path):
    missing = CliRunner().invoke(cli, ["config", "init", str(tmp_path / "no" / "ferbatch.toml")])
    assert missing.exit_code == 1 and "does not exist" in missing.output and not (tmp_path / "no").exists()
    (tmp_path / "ferbatch.toml").symlink_to(tmp_path / "elsewhere.toml")  # dangling: exists() says no
    linked = CliRunner().invoke(cli, ["config", "init", str(tmp_path / "ferbatch.toml")])
    assert linked.exit_code == 1 and "already exists" in linked.output and not (tmp_path / "elsewhere.toml").exists()
    assert len(linked.output.strip().splitlines()) == 1


def test_the_html_page_never_lands_in_the_report_folders_datasets(scored_out, tmp_path):
    code, output = _html(scored_out, scored_out / "images" / "report.html")
    assert code == 1 and "inside the report folder's datasets" in output
    assert not (scored_out / "images" / "report.html").exists()
