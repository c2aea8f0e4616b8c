"""Issue 12, cases 5, 6, 7 and 9: impossible EXIF dates, zlib bombs, PNG text chunks, one pixel limit, and
size / mtime / content taken from one read."""

from __future__ import annotations

import gc
import hashlib
import io
import os
import threading
import zlib
from datetime import UTC, datetime

import numpy as np
import pyarrow.parquet as pq
import pytest
from fakes import FakeDetector
from imagefactory import PHOTOS, encode, png_header_only, png_zlib_bomb, synthetic
from PIL import Image, ImageFile, PngImagePlugin

from ferbatch.scoring import ImageError, PipelineSettings, ScoreSettings, decode, prepare, scan
from ferbatch.scoring import _images as images
from ferbatch.scoring._images import DecodeBudget, read

PIPELINE = PipelineSettings.from_settings(ScoreSettings())


def _jpeg_with_exif_date(date: str, offset: str | None) -> bytes:
    exif = Image.Exif()
    ifd = exif.get_ifd(0x8769)
    ifd[36867] = date
    if offset is not None:
        ifd[36881] = offset
    return encode(synthetic(64, 48), "JPEG", exif=exif.tobytes())


# Case 5 -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("date", "offset"),
    [
        ("0001:01:01 00:00:00", "+01:00"),  # OverflowError before: an error row
        ("9999:12:31 23:00:00", "-14:00"),  # OverflowError before
        ("2024:05:06 14:30:00", "+99:99"),  # applied as is before
        ("2024:05:06 14:30:00", "+15:00"),  # no zone is more than 14 hours from UTC
        ("2024:05:06 14:30:00", "+02:60"),
        ("2024:05:06 14:30:00", "0200"),
        ("0001:01:01 00:00:00", None),  # a placeholder date, not a photograph's
        ("2024:02:30 10:00:00", "+01:00"),
    ],
)
def test_impossible_exif_dates_or_offsets_give_no_taken_at_and_the_image_is_still_decoded(date, offset):
    decoded = decode(_jpeg_with_exif_date(date, offset))
    assert decoded.taken_at is None
    assert decoded.pixels.shape == (48, 64, 3)


@pytest.mark.parametrize(
    ("offset", "utc"),
    [("+14:00", "2024-05-06T00:30:00+00:00"), ("-12:00", "2024-05-07T02:30:00+00:00"),
     ("+05:45", "2024-05-06T08:45:00+00:00"), ("-00:00", "2024-05-06T14:30:00+00:00")],
)
def test_real_offsets_at_the_ends_of_the_range_still_convert(offset, utc):
    assert decode(_jpeg_with_exif_date("2024:05:06 14:30:00", offset)).taken_at.isoformat() == utc


def test_an_overflowing_exif_date_is_scored_not_an_error_row(tmp_path):
    (tmp_path / "old.jpg").write_bytes(_jpeg_with_exif_date("0001:01:01 00:00:00", "+01:00"))
    (tmp_path / "late.jpg").write_bytes(_jpeg_with_exif_date("9999:12:31 23:00:00", "-14:00"))
    for file in scan([tmp_path]):
        prepared = prepare(file, FakeDetector(), PIPELINE)
        assert prepared.error is None and prepared.taken_at is None and prepared.width == 64


# Case 6 -------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def zlib_bomb() -> bytes:
    return png_zlib_bomb(8900, 8900)  # 16-bit RGBA: ~616 KB on disk, 634 MB of samples, 79 MP (under 80 MP)


def test_a_png_zlib_bomb_under_the_pixel_limit_is_refused_by_its_decoded_bytes_before_decoding(
    zlib_bomb, monkeypatch
):
    assert len(zlib_bomb) < 700_000
    decoded_pixels = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded_pixels.append(self) or None)
    with pytest.raises(ImageError, match=r"^too large to decode: 8900x8900 pixels x 4 channels x 16-bit is 634 MB "
                                          r"decoded, over the limit of 134 MB$"):
        decode(zlib_bomb)
    assert decoded_pixels == []  # refused from the header: not one pixel decoded


def test_a_zlib_bomb_in_a_folder_is_one_error_row_with_a_clear_reason(tmp_path, zlib_bomb):
    (tmp_path / "bomb.png").write_bytes(zlib_bomb)
    prepared = prepare(next(scan([tmp_path])), FakeDetector(), PIPELINE)
    assert prepared.error.startswith("too large to decode: 8900x8900")
    assert prepared.image_id == hashlib.sha256(zlib_bomb).hexdigest() and prepared.width is None


def test_the_decoded_byte_limit_counts_bytes_per_sample_and_channels_not_pixels():
    grey8 = png_zlib_bomb(1000, 1000, bit_depth=8, colour_type=0)  # 1 MB of samples
    rgba16 = png_zlib_bomb(1000, 1000, bit_depth=16, colour_type=6)  # 8 MB of samples, same pixels
    assert decode(grey8, max_decoded_bytes=2_000_000).pixels.shape == (1000, 1000, 3)
    with pytest.raises(ImageError, match="x 4 channels x 16-bit is 8 MB decoded"):
        decode(rgba16, max_decoded_bytes=2_000_000)
    assert decode(rgba16, max_decoded_bytes=8_000_000).pixels.shape == (1000, 1000, 3)


def test_a_jpeg_over_the_byte_limit_is_decoded_reduced_not_refused():
    data = (PHOTOS / "fr_obama_and_biden.jpg").read_bytes()  # 2000 x 1428 x 3 = 8.6 MB in full
    fits_at_half = decode(data, max_decoded_bytes=3_000_000)  # 2.1 MB at 1/2
    assert (fits_at_half.scale, fits_at_half.width, fits_at_half.pixels.shape) == (0.5, 2000, (714, 1000, 3))
    assert decode(data, max_decoded_bytes=500_000).scale == 0.125  # 1/4 is still 0.54 MB
    assert decode(data, min_long_side=960, max_decoded_bytes=3_000_000).scale == 0.5
    with pytest.raises(ImageError, match="too large to decode"):  # not even 1/8 fits
        decode(data, max_decoded_bytes=100_000)


def test_the_decode_budget_holds_back_what_does_not_fit_and_lets_an_oversized_one_run_alone():
    budget = DecodeBudget(100)
    mine = budget.acquire(60)
    got, tokens = threading.Event(), []
    waiter = threading.Thread(target=lambda: (tokens.append(budget.acquire(60)), got.set()))
    waiter.start()
    assert not got.wait(0.3)  # 60 + 60 is over 100: it waits
    budget.release(60, mine)
    assert got.wait(10) and budget.in_use == 60
    waiter.join()
    budget.release(60, tokens[0])
    assert budget.in_use == 0
    budget.acquire(500)  # larger than the whole budget: runs when nothing else does
    assert budget.in_use == 500


def test_a_thread_that_already_holds_a_charge_never_waits():
    # The full-size fallback decode runs while the reduced copy is alive: waiting there could deadlock.
    budget = DecodeBudget(100)
    budget.acquire(90)
    budget.acquire(90)
    assert budget.in_use == 180


def test_the_rgb_result_holds_its_share_of_the_budget_until_it_is_collected():
    before = images.DECODE_BUDGET.in_use
    decoded = decode(encode(synthetic(300, 200, mode="RGBA"), "PNG"))
    assert images.DECODE_BUDGET.in_use == before + decoded.pixels.nbytes == before + 300 * 200 * 3
    del decoded
    gc.collect()
    assert images.DECODE_BUDGET.in_use == before
    with pytest.raises(ImageError):
        decode(encode(synthetic(300, 200), "PNG")[:400])  # truncated: the charge is given back too
    assert images.DECODE_BUDGET.in_use == before


@pytest.mark.parametrize("mode", ["I;16", "I", "F", "L", "P", "LA", "CMYK"])
def test_every_mode_converts_in_bands_to_the_same_rgb_as_a_whole_image_conversion(mode):
    values = (np.arange(600 * 70).reshape(600, 70) * 37 % 60000).astype(np.uint16)
    if mode in ("I;16", "I", "F"):
        image = Image.fromarray(values).convert(mode) if mode != "I;16" else Image.fromarray(values)
        scale = 257.0 if mode != "F" else 1.0
        expected = np.clip(np.asarray(image, dtype=np.float32) / scale, 0, 255).astype(np.uint8)
        expected = np.repeat(expected[..., None], 3, axis=2)
    else:
        image = synthetic(70, 600, mode=mode)
        if mode == "LA":
            expected = np.asarray(Image.alpha_composite(Image.new("RGBA", image.size, "white"),
                                                        image.convert("RGBA")).convert("RGB")).astype(int)
        else:
            expected = np.asarray(image.convert("RGB"))
    got = images._to_rgb(image)
    assert got.shape == (600, 70, 3) and got.dtype == np.uint8
    assert np.abs(got.astype(int) - expected).max() <= 1


def test_rgba_is_composited_on_white_in_bands_like_a_viewer():
    pixels = np.zeros((600, 3, 4), np.uint8)  # taller than one band of rows
    pixels[:, 0] = (255, 0, 0, 255)  # opaque red
    pixels[:, 1] = (255, 0, 0, 0)  # fully transparent: white
    pixels[:, 2] = (0, 0, 0, 128)  # half black: mid grey
    rgb = decode(encode(Image.fromarray(pixels, "RGBA"), "PNG")).pixels
    assert (rgb[:, 0] == (255, 0, 0)).all() and (rgb[:, 1] == 255).all()
    assert (np.abs(rgb[:, 2].astype(int) - 127) <= 1).all()


# Case 7 -------------------------------------------------------------------------------------------------------

def _png_with_text(kind: str, text: str, count: int = 1) -> bytes:
    info = PngImagePlugin.PngInfo()
    for i in range(count):
        if kind == "zTXt":
            info.add_text(f"Comment{i}", text, zip=True)
        else:
            info.add_itxt(f"Comment{i}", text, lang="en", tkey="c", zip=True)
    return encode(synthetic(120, 80), "PNG", pnginfo=info)


@pytest.mark.parametrize(("kind", "length", "count"), [("zTXt", 3_000_000, 1), ("iTXt", 3_000_000, 1),
                                                       ("zTXt", 900_000, 80)])
def test_a_valid_png_with_large_compressed_text_chunks_decodes(kind, length, count):
    data = _png_with_text(kind, "x" * length, count)
    assert len(data) < 1_000_000  # small on disk: the text compresses well
    with pytest.raises(ValueError, match="MAX_TEXT"):  # what Pillow alone makes of it
        Image.open(io.BytesIO(data)).load()
    decoded = decode(data)
    assert decoded.pixels.shape == (80, 120, 3)
    assert np.array_equal(decoded.pixels, decode(encode(synthetic(120, 80), "PNG")).pixels)


def test_small_text_chunks_are_kept_and_pillow_settings_are_left_alone():
    limits = (PngImagePlugin.MAX_TEXT_CHUNK, PngImagePlugin.MAX_TEXT_MEMORY, Image.MAX_IMAGE_PIXELS)
    data = _png_with_text("zTXt", "hello")
    assert images._without_oversized_png_text(data) is data  # nothing to leave out: not even copied
    decode(_png_with_text("zTXt", "x" * 3_000_000))
    assert limits == (PngImagePlugin.MAX_TEXT_CHUNK, PngImagePlugin.MAX_TEXT_MEMORY, Image.MAX_IMAGE_PIXELS)


def test_the_only_pixel_limit_is_the_products_own(monkeypatch):
    # Pillow's guard (2 x MAX_IMAGE_PIXELS) no longer decides: an image over it decodes within max_pixels...
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1_000)
    assert decode(encode(synthetic(200, 100), "PNG"), max_pixels=50_000).pixels.shape == (100, 200, 3)
    # ...and one over max_pixels gets the documented reason, even far beyond Pillow's 179 MP.
    monkeypatch.undo()
    with pytest.raises(ImageError, match=r"^too large: 50000x50000 pixels is over the limit of 80,000,000$"):
        decode(png_header_only(50_000, 50_000))
    with pytest.raises(ImageError, match=r"^too large to decode: 20000x10000 pixels"):
        decode(png_header_only(20_000, 10_000), max_pixels=300_000_000)  # 200 MP: allowed pixels, too many bytes


# Case 9 -------------------------------------------------------------------------------------------------------

def test_bytes_mtime_and_image_id_come_from_the_same_read(tmp_path):
    path = tmp_path / "photo.jpg"
    path.write_bytes(encode(synthetic(200, 120, seed=1), "JPEG"))
    os.utime(path, (1_700_000_000, 1_700_000_000))
    scanned = next(scan([tmp_path]))
    new = encode(synthetic(300, 120, seed=2), "JPEG")  # rewritten after the scan, before the read
    path.write_bytes(new)
    os.utime(path, (1_700_000_500.25, 1_700_000_500.25))
    prepared = prepare(scanned, FakeDetector(), PIPELINE)
    assert prepared.image_id == hashlib.sha256(new).hexdigest()
    assert prepared.file.bytes == len(new) != scanned.bytes
    assert prepared.file.mtime == datetime.fromtimestamp(1_700_000_500.25, UTC) != scanned.mtime
    assert prepared.file.mtime == next(scan([tmp_path])).mtime  # a later scan's fingerprint matches exactly
    assert prepared.width == 300


def test_a_file_that_keeps_changing_while_read_is_an_error_not_a_mixed_row(tmp_path, monkeypatch):
    path = tmp_path / "photo.jpg"
    path.write_bytes(encode(synthetic(200, 120), "JPEG"))
    real_fstat, calls = os.fstat, []

    def growing_fstat(fd):
        calls.append(fd)
        stat = real_fstat(fd)
        return os.stat_result((*stat[:6], stat.st_size + len(calls), *stat[7:]))

    monkeypatch.setattr(images.os, "fstat", growing_fstat)
    with pytest.raises(ImageError, match="kept changing while it was read"):
        read(next(scan([tmp_path])))
    assert len(calls) == 6  # before and after each of three tries
    monkeypatch.undo()
    data, file = read(next(scan([tmp_path])))
    assert file.bytes == len(data) == path.stat().st_size and zlib.crc32(data) == zlib.crc32(path.read_bytes())


def test_a_file_rewritten_between_scan_and_scoring_is_recorded_as_read_and_skipped_next_run(tmp_path):
    from fakes import FakeClassifier, FakeComponents

    from ferbatch.scoring import map_sequential, run_scoring

    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    path = folder / "photo.jpg"
    path.write_bytes(encode(synthetic(200, 120, seed=1), "JPEG"))
    os.utime(path, (1_700_000_000, 1_700_000_000))
    new = encode(synthetic(300, 120, seed=2), "JPEG")

    def rewrite_then_score(scorer, shards):  # the run has scanned; the file changes before it is read
        path.write_bytes(new)
        os.utime(path, (1_700_000_900, 1_700_000_900))
        return map_sequential(scorer, shards)

    classifier = FakeClassifier()
    settings = ScoreSettings(folders=[folder], out=out)
    run_scoring(settings, FakeComponents(classifier), map_shards=rewrite_then_score)
    (row,) = pq.read_table(out / "images", columns=["bytes", "mtime", "image_id", "width"]).to_pylist()
    assert row == {"bytes": len(new), "mtime": datetime.fromtimestamp(1_700_000_900, UTC),
                   "image_id": hashlib.sha256(new).hexdigest(), "width": 300}
    with pytest.MonkeyPatch.context() as patch:  # the cheap fingerprint must match: no content read at all
        patch.setattr("ferbatch.scoring._run.file_id", lambda file, *_: pytest.fail(f"re-read {file.path}"))
        again = run_scoring(settings, FakeComponents(classifier))
    assert (again.n_found, again.n_skipped, again.n_scored) == (1, 1, 0)
