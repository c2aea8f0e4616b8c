"""`ferbatch report OUT --html FILE`: one self-contained page of charts per run, checked in headless Chromium."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from browser import Chromium, chromium_binary
from click.testing import CliRunner
from fakes import FakeComponents, PixelClassifier
from imagefactory import PHOTOS, encode, synthetic, write_good_and_bad
from PIL import Image

from ferbatch.cli import cli
from ferbatch.errors import FerbatchError
from ferbatch.present.html_report import latest_run_id, load_run, write_html_report
from ferbatch.reports import ReportStore
from ferbatch.scoring import PipelineSettings, ScoreSettings, run_scoring

SETTINGS = ScoreSettings(max_pixels=4_000_000)
PIPELINE = PipelineSettings.from_settings(SETTINGS, chunk_images=8)
SCREENSHOTS = Path(os.environ.get("FERBATCH_TEST_SCREENSHOTS", "")) if os.environ.get(
    "FERBATCH_TEST_SCREENSHOTS") else None


def _score(folder: Path, out: Path, rescore: bool = False):
    classifier = PixelClassifier()
    return run_scoring(SETTINGS.with_overrides(folders=[folder], out=out), FakeComponents(classifier), rescore=rescore,
                       pipeline=PIPELINE)


def _dated_jpeg(width: int, value: int, taken: str, seed: int) -> bytes:
    exif = Image.Exif()
    exif.get_ifd(0x8769)[36867] = taken  # DateTimeOriginal
    return encode(synthetic(width, 140, value=value, seed=seed), "JPEG", exif=exif.tobytes())


def _photos_copy(folder: Path) -> Path:
    """tests/photos spread over two campaign folders and the top level."""
    for i, photo in enumerate(sorted(p for p in PHOTOS.iterdir() if p.suffix in (".jpg", ".png"))):
        target = folder / ("", "summer", "winter")[i % 3] / photo.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(photo, target)
    return folder


@pytest.fixture(scope="module")
def scored(tmp_path_factory) -> Path:
    """Two real runs into one --out folder: photos first, then everything again with dated images and bad files."""
    root = tmp_path_factory.mktemp("html")
    folder, out = _photos_copy(root / "in"), root / "out"
    _score(folder, out)
    for day in range(1, 5):
        for k in range(3):
            (folder / "dated").mkdir(exist_ok=True)
            (folder / "dated" / f"d{day}_{k}.jpg").write_bytes(
                _dated_jpeg(150 + 100 * k, 40 + 50 * day + 13 * k, f"2026:10:0{day} 1{k}:00:00", seed=day * 10 + k))
    write_good_and_bad(folder / "mixed")
    time.sleep(1.1)  # run ids sort by their start second
    _score(folder, out, rescore=True)
    return out


def test_the_page_shows_the_run_report_picks_with_every_chart_and_loads_nothing(scored, tmp_path):
    expected_run = ReportStore(scored).latest_aggregates().column("run_id")[0].as_py()
    assert latest_run_id(scored) == expected_run
    run = load_run(scored)
    images = run.images
    (tmp_path / "sub").mkdir()  # the folder of a report must exist: it is never created behind the user's back
    page = write_html_report(scored, tmp_path / "sub" / "report.html").read_text()

    assert f"run {expected_run}" in page
    assert images.model_version.iloc[0] in page
    n_ok, n_error = (images.status == "ok").sum(), (images.status == "error").sum()
    assert f"{len(images)} = {n_ok} ok (with faces)" in page and f"+ {n_error} error" in page
    for heading in ("Sentiment", "By folder", "By taken date", "Emotions", "Faces per image", "Errors",
                    "Across runs"):
        assert f"<h2>{heading}</h2>" in page
    assert page.count('src="data:image/png;base64,') == 7
    assert "too large: 50000x50000 pixels" in page and "bad/zero_bytes.jpg" in page
    # Images at the top of a scanned folder get a visible label, and undated images are counted, not hidden.
    undated = images.taken_at.isna().sum()
    assert f"{undated} of {len(images)} images have no EXIF date" in page
    # Self-contained: no scripts, no address to fetch anything from, and a policy that forbids it anyway.
    assert "<script" not in page.lower()
    assert not re.search(r"(?:src|href)=\"(?!data:)", page)
    assert "http://" not in page and "https://" not in page
    assert "default-src 'none'" in page


def test_an_older_run_by_id_and_an_unknown_one(scored, tmp_path):
    first = sorted(load_run(scored).runs.run_id)[0]
    page = write_html_report(scored, tmp_path / "old.html", run_id=first).read_text()
    assert f"run {first}" in page and "<h2>Errors</h2>" in page and "No errors" in page
    with pytest.raises(FerbatchError, match="no run 'nope'"):
        write_html_report(scored, tmp_path / "x.html", run_id="nope")


def _only_errors(tmp_path: Path) -> Path:
    folder = tmp_path / "in"
    write_good_and_bad(folder)
    shutil.rmtree(folder / "good")
    (folder / os.fsdecode(b"bad/caf\xe9-latin1.jpg")).unlink()  # the one readable file among the bad ones
    _score(folder, tmp_path / "out")
    return tmp_path / "out"


def _nothing_scored(tmp_path: Path) -> Path:
    """A folder from before empty runs stopped writing data: 0-row images and faces parts, an all-zero aggregate."""
    from datetime import date

    from ferbatch.reports import TABLES, Aggregator, ReportStore

    run_id, day = "20261127T000000Z-000000", date(2026, 11, 27)
    with ReportStore(tmp_path / "out").open_run() as store:
        writer = store.writer(run_id, day, {})
        writer.write("aggregates", Aggregator().rows(run_id, day, "fake-v1"))
        store.commit(run_id, writer.close(tables=TABLES))
    return tmp_path / "out"


def test_a_run_that_scores_nothing_leaves_no_run_to_chart(tmp_path):
    (tmp_path / "in").mkdir()
    _score(tmp_path / "in", tmp_path / "out")
    with pytest.raises(FerbatchError, match="no scoring runs found"):
        write_html_report(tmp_path / "out", tmp_path / "r.html")


def test_a_run_with_only_errors_shows_the_reasons_and_no_sentiment_charts(tmp_path):
    page = write_html_report(_only_errors(tmp_path), tmp_path / "r.html").read_text()
    assert "No image in the current table had a face" in page  # the default: every photo once
    assert "<h2>Errors</h2>" in page and "Error reasons" in page
    assert "<h2>Emotions</h2>" not in page and "<h2>By folder</h2>" not in page
    assert "No image in the current table could be read." in page
    for reason in ("empty file", "corrupt or truncated image", "not an image", "too large", "unreadable"):
        assert f"<td>{reason}" in page


def test_a_run_without_exif_dates_says_so_instead_of_an_empty_chart(tmp_path):
    for name, width in {"a/one.jpg": 150, "a/two.jpg": 250, "three.jpg": 350}.items():
        (tmp_path / "in" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "in" / name).write_bytes(encode(synthetic(width, 120, seed=width), "JPEG"))
    _score(tmp_path / "in", tmp_path / "out")
    page = write_html_report(tmp_path / "out", tmp_path / "r.html").read_text()
    section = page[page.index("<h2>By taken date</h2>"):page.index("<h2>Emotions</h2>")]
    assert "No image in the current table has an EXIF date" in section and "<img" not in section
    assert page.count("<img") == 4  # overall, by folder, emotions, faces per image (no errors, one run)
    assert "No errors" in page and "<h2>Across runs</h2>" not in page


def test_a_folder_with_only_a_run_that_scored_nothing(tmp_path):
    page = write_html_report(_nothing_scored(tmp_path), tmp_path / "r.html").read_text()
    assert "This run scored no images" in page and "<img" not in page


def test_the_module_needs_no_tensorflow():
    code = "import sys, ferbatch.present.html_report; print('tensorflow' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout == "False\n"


def test_no_runs_is_a_one_line_error(tmp_path):
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(cli, ["report", str(tmp_path / "empty"), "--html", str(tmp_path / "r.html")])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        f"Error: {tmp_path / 'empty'}: no scoring runs found (is this a ferbatch --out folder?)"]
    assert not (tmp_path / "r.html").exists()


def test_the_command_writes_the_file(scored, tmp_path):
    result = CliRunner().invoke(cli, ["report", str(scored), "--html", str(tmp_path / "report.html")])
    assert result.exit_code == 0, result.output
    assert result.output == f"wrote {tmp_path / 'report.html'}\n"
    assert (tmp_path / "report.html").read_text().startswith("<!DOCTYPE html>")


# ---------------------------------------------------------------- in a real browser


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    if chromium_binary() is None:
        if os.environ.get("CI") == "true":  # .ci/run installs it: a skip there would hide a broken check
            pytest.fail("chromium is not installed (.ci/run should have installed it)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    with Chromium(tmp_path_factory.mktemp("chromium-profile")) as chromium:
        yield chromium


def _save(name: str, data: bytes, tmp_path: Path) -> Path:
    path = (SCREENSHOTS or tmp_path) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_chromium_renders_the_page_offline_without_console_errors(scored, tmp_path, browser):
    report = write_html_report(scored, tmp_path / "report.html")
    result = browser.load(report.resolve().as_uri())
    assert result.problems == []
    assert all(url.startswith(("file:", "data:")) for url in result.requests), result.requests
    assert len(result.images) == 7 and all(complete and width > 500 for complete, width in result.images)

    shot = _save("html-report.png", result.screenshot, tmp_path)
    image = Image.open(io.BytesIO(shot.read_bytes())).convert("RGB")
    assert image.width == 1100 and image.height > 3000  # the whole page, every chart
    small = image.resize((image.width // 4, image.height // 4))
    colours = set(small.getdata())
    assert len(colours) > 200  # not a blank or error page

    def near(rgb, target):
        return sum(abs(a - b) for a, b in zip(rgb, target, strict=True)) < 40

    assert any(near(c, (0x2E, 0x9E, 0x4F)) for c in colours) and any(near(c, (0xD1, 0x40, 0x3C)) for c in colours)


@pytest.mark.parametrize("make", [_only_errors, _nothing_scored])
def test_chromium_renders_the_edge_case_pages_cleanly(make, tmp_path, browser):
    report = write_html_report(make(tmp_path), tmp_path / "report.html")
    result = browser.load(report.resolve().as_uri())
    assert result.problems == [] and all(complete and width for complete, width in result.images)
    _save(f"html-report-{make.__name__.strip('_')}.png", result.screenshot, tmp_path)


def test_the_browser_check_does_see_errors_and_remote_loads(tmp_path, browser):
    """The check above is not vacuous: a page that logs an error and fetches a remote image fails it."""
    page = tmp_path / "bad.html"
    page.write_text('<!DOCTYPE html><html><body><script>console.error("boom")</script>'
                    '<img src="http://127.0.0.1:9/x.png"></body></html>')
    result = browser.load(page.as_uri())
    assert any("boom" in p for p in result.problems)
    assert any(url.startswith("http://127.0.0.1:9") for url in result.requests)

