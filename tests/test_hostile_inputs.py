"""Hostile and unusual files: devices, FIFOs and huge files are never read, one symlink rule, an unusable --out,
names that are data and never markup, and rows that stay true to each file's content."""

from __future__ import annotations

import csv
import hashlib
import io
import logging
import os
import threading
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from fakes import FakeComponents, FakeDetector
from imagefactory import encode, synthetic
from rich.console import Console

from ferbatch.config import DEFAULT_MAX_BYTES, ScoreSettings, load_config
from ferbatch.errors import FerbatchError
from ferbatch.scoring import PipelineSettings, as_text, prepare, run_scoring, scan
from ferbatch.scoring._images import OUTSIDE_LINK, ImageError, file_id, read

SETTINGS = ScoreSettings()
PIPELINE = PipelineSettings.from_settings(SETTINGS, chunk_images=4)


def _jpeg(path: Path, width: int = 200, seed: int = 0) -> bytes:
    data = encode(synthetic(width, 120, seed=seed), "JPEG")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return data


def _rows(out: Path) -> dict[str, dict]:
    """The images table by path (the latest run's row for each)."""
    files = sorted((out / "images").glob("run_date=*/*.parquet"))
    rows = pq.ParquetDataset(files, partitioning=None).read().to_pylist()
    return {row["path"]: row for row in sorted(rows, key=lambda r: r["scored_at"])}


def _run(folder: Path | list[Path], out: Path, **settings: object):
    folders = folder if isinstance(folder, list) else [folder]
    chosen = SETTINGS.with_overrides(folders=folders, out=out, **settings)
    return run_scoring(chosen, FakeComponents(), pipeline=PipelineSettings.from_settings(chosen, chunk_images=4))


def _prepare_in_thread(file, settings: PipelineSettings = PIPELINE):
    """prepare() on a thread, so a read that blocks fails the test instead of hanging it."""
    result: list = []
    worker = threading.Thread(target=lambda: result.append(prepare(file, FakeDetector(), settings)), daemon=True)
    worker.start()
    worker.join(timeout=30)
    assert not worker.is_alive(), f"reading {file.path} blocked"
    return result[0]


# Reads that could take the machine down ------------------------------------------------------------------------

def test_a_fifo_named_like_an_image_is_one_error_row_and_never_blocks(tmp_path):
    os.mkfifo(tmp_path / "fifo.jpg")
    (file,) = scan([tmp_path])
    prepared = _prepare_in_thread(file)
    assert prepared.error == "not a regular file: a FIFO (named pipe); not read"
    assert prepared.image_id is None
    with pytest.raises(ImageError, match="FIFO"):
        file_id(file)  # the incremental check's hash refuses it the same way


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom"])
def test_a_link_to_an_endless_device_is_refused_from_fstat_when_links_are_followed(tmp_path, device):
    (tmp_path / "endless.jpg").symlink_to(device)
    (file,) = scan([tmp_path], follow_links=True)
    assert file.follow and file.refused is None  # allowed by the option: the read's own checks stop it
    prepared = _prepare_in_thread(file)
    assert prepared.error == "not a regular file: a character device; not read"
    with pytest.raises(ImageError, match="character device"):
        file_id(file)


def test_a_huge_sparse_file_is_refused_by_its_size_before_a_byte_is_read(tmp_path, monkeypatch):
    path = tmp_path / "huge.jpg"
    with open(path, "wb") as handle:
        handle.truncate(6 * 2**30)  # 6 GiB, sparse: no disk used
    (file,) = scan([tmp_path])
    reads = _count_reads(monkeypatch)
    with pytest.raises(ImageError, match=r"^too large: 6,442,450,944 bytes is over the file size limit of "
                                         r"268,435,456 \(--max-bytes\)$"):
        read(file)
    with pytest.raises(ImageError, match="too large"):
        file_id(file)
    assert reads == []
    assert file.bytes == 6 * 2**30  # the row still says how large it is


def _count_reads(monkeypatch) -> list[int]:
    """Records the size asked of every read on a file the image module opens."""
    from ferbatch.scoring import _images

    sizes: list[int] = []

    class Counted:
        def __init__(self, handle) -> None:
            self.handle = handle

        def __enter__(self):
            self.handle.__enter__()
            return self

        def __exit__(self, *exc_info):
            return self.handle.__exit__(*exc_info)

        def read(self, size: int = -1) -> bytes:
            sizes.append(size)
            return self.handle.read(size)

        def __getattr__(self, name: str):
            return getattr(self.handle, name)

    monkeypatch.setattr(_images, "open", lambda *a, **k: Counted(open(*a, **k)), raising=False)  # noqa: SIM115
    return sizes


def test_the_byte_limit_is_exact_and_a_setting(tmp_path):
    data = _jpeg(tmp_path / "photo.jpg")
    (file,) = scan([tmp_path])
    assert read(file, max_bytes=len(data))[0] == data
    with pytest.raises(ImageError, match="too large"):
        read(file, max_bytes=len(data) - 1)
    settings = ScoreSettings(max_bytes="1KiB")
    assert settings.max_bytes == 1024 and PipelineSettings.from_settings(settings).max_bytes == 1024
    assert ScoreSettings().max_bytes == DEFAULT_MAX_BYTES == 256 * 2**20
    config_file = tmp_path / "ferbatch.toml"
    config_file.write_text('[score]\nmax_bytes = "512MiB"\nfollow_links = true\n')
    config, _ = load_config(config_file)
    assert config.score.max_bytes == 512 * 2**20 and config.score.follow_links is True


def test_max_bytes_on_the_command_line_takes_units_and_refuses_nonsense():
    from click.testing import CliRunner

    from ferbatch.cli import cli
    from ferbatch.cli._app import _BYTE_SIZE

    assert _BYTE_SIZE.convert("512MiB", None, None) == 512 * 2**20
    assert _BYTE_SIZE.convert("1000", None, None) == 1000
    result = CliRunner().invoke(cli, ["score", ".", "--max-bytes", "lots"])
    assert result.exit_code == 2 and "'lots' is not a size" in result.output
    assert "Traceback" not in result.output


def test_hashing_is_streamed_in_chunks_and_gives_the_image_id(tmp_path, monkeypatch):
    from ferbatch.scoring import _images

    data = _jpeg(tmp_path / "photo.jpg", width=600)
    monkeypatch.setattr(_images, "_HASH_CHUNK", 1000)
    chunks = _count_reads(monkeypatch)
    assert file_id(next(scan([tmp_path]))) == hashlib.sha256(data).hexdigest()
    assert len(chunks) > len(data) // 1000 and max(chunks) <= 1000


def test_a_folder_of_hostile_files_ends_with_one_error_row_each(tmp_path):
    folder = tmp_path / "in"
    _jpeg(folder / "good.jpg")
    os.mkfifo(folder / "fifo.jpg")
    (folder / "zero.jpg").symlink_to("/dev/zero")
    (folder / "random.jpg").symlink_to("/dev/urandom")
    with open(folder / "sparse.jpg", "wb") as handle:
        handle.truncate(6 * 2**30)
    summary = _run(folder, tmp_path / "out", follow_links=True)
    rows = _rows(tmp_path / "out")
    assert summary.n_found == 5 and set(rows) == {"good.jpg", "fifo.jpg", "zero.jpg", "random.jpg", "sparse.jpg"}
    assert rows["good.jpg"]["status"] == "ok"
    assert {path: row["error"].split(":")[0] for path, row in rows.items() if row["status"] == "error"} == {
        "fifo.jpg": "not a regular file", "zero.jpg": "not a regular file", "random.jpg": "not a regular file",
        "sparse.jpg": "too large"}
    again = _run(folder, tmp_path / "out", follow_links=True)  # the incremental check refuses them the same way
    assert again.n_skipped == 1 and again.n_scored == 4


# One symlink rule ---------------------------------------------------------------------------------------------

def test_a_link_to_a_file_outside_the_folders_is_an_error_row_unread_unless_links_are_followed(tmp_path):
    folder, elsewhere = tmp_path / "in", tmp_path / "elsewhere"
    _jpeg(elsewhere / "photo.jpg")
    folder.mkdir()
    (folder / "linked.jpg").symlink_to(elsewhere / "photo.jpg")
    (folder / "passwd.jpg").symlink_to("/etc/passwd")
    _run(folder, tmp_path / "out")
    rows = _rows(tmp_path / "out")
    for name in ("linked.jpg", "passwd.jpg"):  # nothing of the target is stored: no hash, no size
        assert (rows[name]["status"], rows[name]["error"]) == ("error", OUTSIDE_LINK)
        assert rows[name]["image_id"] is None and rows[name]["bytes"] is None
    _run(folder, tmp_path / "followed", follow_links=True)
    rows = _rows(tmp_path / "followed")
    assert rows["linked.jpg"]["status"] == "ok"
    assert rows["passwd.jpg"]["error"] == "not an image (unknown format)"


def test_a_link_to_a_folder_outside_is_left_out_with_a_warning_unless_links_are_followed(tmp_path, caplog):
    folder, elsewhere = tmp_path / "in", tmp_path / "elsewhere"
    _jpeg(elsewhere / "a.jpg")
    _jpeg(folder / "b.jpg", seed=1)
    (folder / "campaign").symlink_to(elsewhere, target_is_directory=True)
    with caplog.at_level(logging.WARNING, logger="ferbatch"):
        assert [f.path.as_posix() for f in scan([folder])] == ["b.jpg"]
    assert "campaign: not followed: a link to a folder outside the scanned folders" in caplog.text
    followed = list(scan([folder], follow_links=True))
    assert [f.path.as_posix() for f in followed] == ["b.jpg", "campaign/a.jpg"]
    assert followed[1].folder == "campaign"


def test_links_inside_the_folders_are_scanned_where_they_lie_files_and_folders_alike(tmp_path):
    folder = tmp_path / "in"
    _jpeg(folder / "2024" / "a.jpg")
    (folder / "best.jpg").symlink_to(folder / "2024" / "a.jpg")
    (folder / "latest").symlink_to(folder / "2024", target_is_directory=True)
    (folder / "relative.jpg").symlink_to("2024/a.jpg")
    for follow_links in (False, True):
        assert [f.path.as_posix() for f in scan([folder], follow_links=follow_links)] == ["2024/a.jpg"]


def test_followed_links_are_scanned_once_each_and_a_cycle_ends(tmp_path):
    folder, elsewhere = tmp_path / "in", tmp_path / "elsewhere"
    _jpeg(elsewhere / "a.jpg")
    _jpeg(folder / "b.jpg", seed=1)
    (elsewhere / "back").symlink_to(elsewhere, target_is_directory=True)  # a cycle outside
    (elsewhere / "home").symlink_to(folder, target_is_directory=True)  # back into the named folder
    (folder / "one").symlink_to(elsewhere, target_is_directory=True)
    (folder / "two").symlink_to(elsewhere, target_is_directory=True)  # the same folder again
    (folder / "a-again.jpg").symlink_to(elsewhere / "a.jpg")
    paths = [f.path.as_posix() for f in scan([folder], follow_links=True)]
    assert paths == ["a-again.jpg", "b.jpg"]  # the first path in scan order wins


def test_broken_and_looping_links_are_error_rows_without_reading(tmp_path):
    (tmp_path / "broken.jpg").symlink_to(tmp_path / "nothing.jpg")
    (tmp_path / "loop_a.jpg").symlink_to(tmp_path / "loop_b.jpg")
    (tmp_path / "loop_b.jpg").symlink_to(tmp_path / "loop_a.jpg")
    errors = {f.path.name: prepare(f, FakeDetector(), PIPELINE).error for f in scan([tmp_path])}
    loop = "unreadable: a symbolic link loop"
    assert errors == {"broken.jpg": "unreadable: missing file or broken symlink", "loop_a.jpg": loop,
                      "loop_b.jpg": loop}


def test_a_file_replaced_by_a_link_after_the_scan_is_not_followed(tmp_path):
    _jpeg(tmp_path / "elsewhere.jpg")
    folder = tmp_path / "in"
    _jpeg(folder / "photo.jpg", seed=1)
    (file,) = scan([folder])
    (folder / "photo.jpg").unlink()
    (folder / "photo.jpg").symlink_to("/etc/passwd")
    with pytest.raises(ImageError, match=r"^not read: a symbolic link the scan did not allow"):
        read(file)


def test_a_file_named_directly_may_be_a_link(tmp_path):
    data = _jpeg(tmp_path / "elsewhere" / "photo.jpg")
    (tmp_path / "named.jpg").symlink_to(tmp_path / "elsewhere" / "photo.jpg")
    (file,) = scan([tmp_path / "named.jpg"])
    assert read(file)[0] == data  # the user chose it


# An --out that cannot be created --------------------------------------------------------------------------------

def test_out_under_a_regular_file_is_one_clear_error(tmp_path):
    _jpeg(tmp_path / "in" / "a.jpg")
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(FerbatchError, match=r"/file/new: cannot create the report folder \(Not a directory"):
        _run(tmp_path / "in", tmp_path / "file" / "new")


def test_out_under_a_forbidden_parent_is_one_clear_error(tmp_path, monkeypatch):
    _jpeg(tmp_path / "in" / "a.jpg")
    real_mkdir = Path.mkdir

    def forbidden(self, *args, **kwargs):
        if tmp_path / "ro" in (self, *self.parents):
            raise PermissionError(13, "Permission denied", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", forbidden)  # tests run as root, which no mode bit stops
    with pytest.raises(FerbatchError, match=r"ro/new: cannot create the report folder \(Permission denied: "):
        _run(tmp_path / "in", tmp_path / "ro" / "new")


def test_the_command_prints_one_error_line_for_an_unusable_out(tmp_path, run_ferbatch):
    _jpeg(tmp_path / "in" / "a.jpg")
    (tmp_path / "file").write_text("not a folder")
    result = run_ferbatch("score", tmp_path / "in", "--out", tmp_path / "file" / "new")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    # one line and nothing else: the folder is checked before Prefect starts a flow run that would log
    assert result.stderr.strip().splitlines() == [f"Error: {tmp_path}/file/new: cannot create the report folder "
                                                  f"(Not a directory: {tmp_path}/file)"], result.stderr


# Names are data, never markup ----------------------------------------------------------------------------------

HOSTILE_FOLDERS = ["$\\frac{1$", "deals $5 and $10", "\x1b]0;pwned\x07title", "\x1b[2Jclear", "[bold]b[red]",
                   "a|b <script>x", "=cmd|' -C calc'!A0", "@SUM(1+1)"]


@pytest.fixture(scope="module")
def hostile_out(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("names") / "in"
    for i, name in enumerate(HOSTILE_FOLDERS):
        _jpeg(folder / name / "photo.jpg", seed=i)
    out = folder.parent / "out"
    _run(folder, out)
    return out


def _aggregates(out: Path) -> list[dict]:
    from ferbatch.reports import ReportStore

    return ReportStore(out).latest_aggregates().to_pylist()


def test_the_html_report_draws_names_as_text_never_as_mathtext(hostile_out, tmp_path, monkeypatch):
    from matplotlib import mathtext

    from ferbatch.present.html_report import write_html_report

    parsed = []
    monkeypatch.setattr(mathtext.MathTextParser, "parse", lambda self, *a, **k: parsed.append(a) or pytest.fail(
        f"mathtext parsed {a[0]!r}"))
    write_html_report(hostile_out, tmp_path / "report.html")
    assert parsed == []


def test_the_terminal_report_shows_control_characters_escaped_and_markup_as_written(hostile_out):
    from ferbatch.present.console import print_aggregates

    buffer = io.StringIO()
    print_aggregates(_aggregates(hostile_out), Console(file=buffer, width=200, color_system=None))
    text = buffer.getvalue()
    assert "\x1b" not in text and "\x07" not in text
    assert "\\x1b]0;pwned\\x07title" in text and "\\x1b[2Jclear" in text
    assert "[bold]b[red]" in text


def test_the_run_summary_on_a_terminal_escapes_error_reasons(tmp_path):
    from ferbatch.present.console import print_summary

    summary = {"run_id": "r", "model_version": "m", "images_found": 1, "already_scored": 0, "scored": 1, "ok": 0,
               "no_face": 0, "error": 1, "faces": 0, "images_per_second": 1.0, "share_positive": None,
               "share_negative": None, "share_neutral": None, "out_dir": "out\x1b[2J",
               "top_errors": {"internal error: \x1b]0;x\x07 [/y]": 1}}
    buffer = io.StringIO()
    print_summary(summary, Console(file=buffer, width=100, color_system=None))
    assert "\x1b" not in buffer.getvalue()
    assert "internal error: \\x1b]0;x\\x07 [/y] (1)" in buffer.getvalue()


def test_markdown_cells_escape_pipes_and_html(hostile_out):
    from ferbatch.present.console import format_aggregates

    text = format_aggregates(_aggregates(hostile_out), "markdown")
    assert "<script>" not in text and "a\\|b &lt;script&gt;x" in text
    header_cells = None
    for line in text.splitlines():
        if line.startswith("| by |"):
            header_cells = len(line.split(" | "))
        elif line.startswith("| folder |"):  # no cell is split by a pipe in a name
            cells = [c for c in line.replace("\\|", "").split("|")[1:-1]]
            assert len(cells) == header_cells
    assert "\\\\x1b\\]0;pwned\\\\x07title" in text and "\x1b" not in text  # shown as \x1b]0;pwned\x07title


def test_csv_cells_that_would_be_formulas_are_neutralised(hostile_out):
    from ferbatch.present.console import format_aggregates

    rows = list(csv.DictReader(io.StringIO(format_aggregates(_aggregates(hostile_out), "csv"))))
    values = {row["group_value"] for row in rows if row["group_by"] == "folder"}
    assert "'=cmd|' -C calc'!A0" in values and "'@SUM(1+1)" in values
    assert not any(value.startswith(("=", "+", "-", "@")) for value in values)
    assert all("\x1b" not in value for value in values)
    scores = [float(row["mean_sentiment_score"]) for row in rows if row["mean_sentiment_score"]]
    assert scores  # numbers stay numbers, a negative one too


def test_the_summary_as_csv_and_markdown_escapes_error_reasons():
    from ferbatch.present.console import format_summary

    summary = {"run_id": "r", "error": 1, "top_errors": {"=HYPERLINK(x)": 1}, "share_positive": -0.5}
    (row,) = csv.DictReader(io.StringIO(format_summary(summary, "csv")))
    assert row["top_errors"] == "'=HYPERLINK(x): 1" and row["share_positive"] == "-0.5"


# Rows true to each file's content ------------------------------------------------------------------------------

def test_a_file_changed_to_another_files_error_content_is_scored_again(tmp_path):
    folder, out = tmp_path / "in", tmp_path / "out"
    good = _jpeg(folder / "a.jpg", width=300)
    broken = good[: len(good) // 2]
    (folder / "b.jpg").write_bytes(broken)  # an error row that has an image_id (its bytes were read)
    _run(folder, out)
    rows = _rows(out)
    assert (rows["a.jpg"]["status"], rows["b.jpg"]["status"]) == ("ok", "error")
    assert rows["b.jpg"]["image_id"] == hashlib.sha256(broken).hexdigest()
    (folder / "a.jpg").write_bytes(broken)  # truncated: now the same bytes as b.jpg's error row
    again = _run(folder, out)
    assert again.n_scored == 1
    row = _rows(out)["a.jpg"]
    assert (row["status"], row["image_id"]) == ("error", hashlib.sha256(broken).hexdigest())


def test_a_file_changed_to_another_files_scored_content_carries_that_verdict(tmp_path):
    folder, out = tmp_path / "in", tmp_path / "out"
    _jpeg(folder / "a.jpg", width=300)
    copy = _jpeg(folder / "b.jpg", width=400, seed=1)
    _run(folder, out)
    (folder / "a.jpg").write_bytes(copy)  # a.jpg now holds b.jpg's photo: its old row is stale
    assert _run(folder, out).n_scored == 0  # that content was scored: its verdict is carried, not recomputed
    current = {row["path"]: row for row in pq.read_table(out / "current" / "images").to_pylist()}
    assert current["a.jpg"]["image_id"] == current["b.jpg"]["image_id"] == hashlib.sha256(copy).hexdigest()
    assert current["a.jpg"]["emotion"] == current["b.jpg"]["emotion"]
    (folder / "c.jpg").write_bytes(copy)  # a new copy of scored content is still recognised, unread again
    assert _run(folder, out).n_scored == 0


def test_a_raw_byte_name_and_its_escaped_spelling_get_distinct_paths(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    raw, literal = os.fsdecode(b"\xff.jpg"), "\\xff.jpg"
    _jpeg(folder / raw)
    _jpeg(folder / literal, seed=1)
    _jpeg(folder / "plain\\name.jpg", seed=2)
    _run(folder, tmp_path / "out")
    assert set(_rows(tmp_path / "out")) == {"\\xff.jpg", "\\\\xff.jpg", "plain\\name.jpg"}


@pytest.mark.parametrize(
    ("name", "text"),
    [(b"caf\xc3\xa9.jpg", "café.jpg"), (b"caf\xe9.jpg", "caf\\xe9.jpg"), (b"\\xe9.jpg", "\\\\xe9.jpg"),
     (b"a\\b\xe9.jpg", "a\\\\b\\xe9.jpg"), (b"a\\b.jpg", "a\\b.jpg"), (b"\\x4.jpg", "\\x4.jpg")],
)
def test_names_are_escaped_only_when_they_could_be_mistaken(name, text):
    assert as_text(Path(os.fsdecode(b"/r/" + name))) == "/r/" + text
    assert as_text(Path(os.fsdecode(name))) == text


# The whole command on the worst folder -------------------------------------------------------------------------

@pytest.mark.slow
def test_the_command_on_devices_a_fifo_and_a_huge_file_stays_within_1_5_gb_with_one_error_row_each(tmp_path):
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    try:
        from peak_rss import measure
    finally:
        sys.path.pop(0)

    result = measure("hostile", tmp_path)
    assert result["exit"] == 0, result["stderr"]
    assert 0 < result["peak_kbytes"] < 1_500_000  # /usr/bin/time's kbytes: 1.5 GB
    rows = _rows(result["out"])
    errors = {path: row["error"] for path, row in rows.items() if row["status"] == "error"}
    assert set(errors) == {"zero.jpg", "urandom.jpg", "fifo.jpg", "sparse.jpg"}
    assert all(error.startswith(("not a regular file", "too large")) for error in errors.values())


def test_a_report_folder_this_user_may_not_create_is_refused_before_the_run(tmp_path, monkeypatch):
    import ferbatch.reports._store as store_module
    from ferbatch.reports import ReportStore

    monkeypatch.setattr(store_module.os, "access", lambda path, mode: False)  # as a non-root user on a 555 folder
    with pytest.raises(FerbatchError, match=r"cannot create the report folder \(Permission denied: "):
        ReportStore(tmp_path / "new" / "out").check_writable()
    (tmp_path / "out").mkdir()
    with pytest.raises(FerbatchError, match=r"cannot write into the report folder \(Permission denied: "):
        ReportStore(tmp_path / "out").check_writable()
