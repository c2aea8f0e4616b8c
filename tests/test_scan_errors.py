"""One entry the scan cannot look at (a folder the user may not enter, a path longer than PATH_MAX) is that entry's
error row or a logged skip, and the run goes on; `label export --to /` never walks the whole file system."""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

from click.testing import CliRunner
from fakes import FakeComponents
from imagefactory import encode, synthetic

from ferbatch.cli import cli
from ferbatch.config import ScoreSettings
from ferbatch.scoring import PipelineSettings, run_scoring, scan

LONG = "d" * 250  # 20 of these nested: a path far over PATH_MAX (4096)


def _photo(path: Path, width: int = 250, seed: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode(synthetic(width, 120, seed=seed), "JPEG"))


def _deep(folder: Path, levels: int = 20) -> None:
    """`folder/LONG/LONG/...` with a photo at each level, made relative to open folders (no path is that long)."""
    data = encode(synthetic(250, 120, seed=7), "JPEG")
    current = os.open(folder, os.O_RDONLY)
    try:
        for level in range(levels):
            os.mkdir(LONG, dir_fd=current)
            deeper = os.open(LONG, os.O_RDONLY, dir_fd=current)
            os.close(current)
            current = deeper
            name = f"{level:02d}-{'p' * 200}.jpg"
            descriptor = os.open(name, os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=current)
            os.write(descriptor, data)
            os.close(descriptor)
    finally:
        os.close(current)


def _score(folder: Path, out: Path):
    settings = ScoreSettings(folders=[folder], out=out)
    return run_scoring(settings, FakeComponents(), pipeline=PipelineSettings.from_settings(settings, chunk_images=4))


def test_a_folder_that_cannot_be_entered_is_skipped_with_a_log_line_and_the_run_goes_on(tmp_path, monkeypatch,
                                                                                      caplog):
    folder = tmp_path / "in"
    _photo(folder / "a.jpg")
    _photo(folder / "locked" / "b.jpg")
    _photo(folder / "z" / "c.jpg")
    locked = folder / "locked"
    real_is_file, real_scandir = Path.is_file, os.scandir

    def is_file(self):  # tests run as root, which mode 000 does not stop: the kernel's answer is injected
        if self.parent == locked:
            raise PermissionError(errno.EACCES, "Permission denied", str(self))
        return real_is_file(self)

    def scandir(path=None):
        if path is not None and Path(path) == locked:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_scandir(path) if path is not None else real_scandir()

    monkeypatch.setattr(Path, "is_file", is_file)
    monkeypatch.setattr(os, "scandir", scandir)
    assert sorted(f.path.as_posix() for f in scan([folder])) == ["a.jpg", "z/c.jpg"]
    with caplog.at_level("WARNING", logger="ferbatch"):
        summary = _score(folder, tmp_path / "out")
    assert (summary.n_found, summary.n_scored) == (2, 2)
    assert f"{locked}: folder not scanned (Permission denied)" in caplog.text


def test_an_entry_whose_type_cannot_be_read_is_its_own_error_row(tmp_path, monkeypatch):
    folder = tmp_path / "in"
    _photo(folder / "a.jpg")
    _photo(folder / "odd.jpg", seed=1)
    real_is_symlink = os.DirEntry.is_symlink if hasattr(os.DirEntry, "is_symlink") else None
    assert real_is_symlink is not None

    class Entry:
        def __init__(self, entry):
            self._entry = entry
            self.name, self.path = entry.name, entry.path

        def is_symlink(self):
            if self.name == "odd.jpg":
                raise OSError(errno.EIO, "Input/output error", self.path)
            return self._entry.is_symlink()

        def is_dir(self, follow_symlinks=True):
            return self._entry.is_dir(follow_symlinks=follow_symlinks)

    real_scandir = os.scandir

    class Listing:
        def __init__(self, path):
            self._listing = real_scandir(path)

        def __enter__(self):
            return (Entry(entry) for entry in self._listing)

        def __exit__(self, *exc):
            self._listing.close()

    monkeypatch.setattr(os, "scandir", lambda path=".": Listing(path))
    files = {f.path.as_posix(): f for f in scan([folder])}
    assert sorted(files) == ["a.jpg", "odd.jpg"]
    assert files["odd.jpg"].refused == "unreadable: Input/output error"


def test_a_path_longer_than_path_max_is_a_skip_or_an_error_row_never_the_end_of_the_run(tmp_path, caplog):
    folder = tmp_path / "in"
    _photo(folder / "a.jpg")
    _deep(folder)
    files = list(scan([folder]))  # never raises
    assert files[0].path.as_posix() == "a.jpg" and len(files) > 2
    with caplog.at_level("WARNING", logger="ferbatch"):
        summary = _score(folder, tmp_path / "out")
    assert summary.n_found == len(files) and summary.status_counts["ok"] >= 1
    assert "File name too long" in caplog.text
    from ferbatch.analysis import Analyzer

    analysed = list(Analyzer(components=FakeComponents()).images([folder]))  # never raises for a bad file
    assert len(analysed) == len(files) and analysed[0].status == "ok"
    assert any(image.status == "error" and "too long" in image.error for image in analysed)


def test_label_export_to_the_root_of_the_file_system_is_refused_at_once(tmp_path):
    folder = tmp_path / "in"
    _photo(folder / "a.jpg")
    _score(folder, tmp_path / "out")
    started = time.monotonic()
    result = CliRunner().invoke(cli, ["label", "export", str(tmp_path / "out"), "--to", "/"])
    assert time.monotonic() - started < 30
    assert result.exit_code == 1 and result.output.startswith("Error: /: holds the output folder"), result.output
    assert len(result.output.strip().splitlines()) == 1
    around = CliRunner().invoke(cli, ["label", "export", str(tmp_path / "out"), "--to", str(tmp_path)])
    assert around.exit_code == 1 and "holds the output folder" in around.output


def test_label_export_looks_only_into_its_own_folders_for_earlier_crops(tmp_path, monkeypatch):
    from ferbatch import labelling

    folder = tmp_path / "in"
    _photo(folder / "a.jpg")
    _score(folder, tmp_path / "out")
    labels = tmp_path / "labels"
    (labels / "Happy").mkdir(parents=True)
    (labels / "someone else's" / "deep").mkdir(parents=True)
    (labels / "someone else's" / "deep" / "x.png").write_bytes(b"")
    (labels / "Happy" / "y.png").write_bytes(b"")
    walked: list[Path] = []
    real_rglob = Path.rglob

    def rglob(self, pattern):
        walked.append(self)
        return real_rglob(self, pattern)

    monkeypatch.setattr(Path, "rglob", rglob)
    assert labelling._already_exported(labels) == {"y.png"}
    assert walked == [labels / "Happy"]


def test_an_annotated_copy_whose_path_would_be_too_long_is_a_warning(tmp_path, caplog):
    folder = tmp_path / "in"
    _photo(folder / "a.jpg")
    _deep(folder, levels=15)  # the deepest photos are readable; their copies' paths would be too long
    checked = tmp_path / ("c" * 200)
    settings = ScoreSettings(folders=[folder], out=tmp_path / "out")
    with caplog.at_level("WARNING", logger="ferbatch"):
        summary = run_scoring(settings, FakeComponents(), annotate=str(checked),
                              pipeline=PipelineSettings.from_settings(settings, chunk_images=4))
    assert summary.status_counts["ok"] >= 15 and (checked / "a.jpg").is_file()
    assert "annotated copy not written (File name too long)" in caplog.text


def test_the_python_api_never_raises_for_a_bad_name():
    from ferbatch.analysis import Analyzer

    analysed = list(Analyzer(components=FakeComponents()).images(["/tmp/a\x00b.jpg", "/no/such/x.jpg"]))
    assert [image.status for image in analysed] == ["error", "error"]
