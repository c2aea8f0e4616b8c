from __future__ import annotations

import os

import numpy as np
import pytest
from imagefactory import PHOTOS, encode, exif_rotated_jpeg, synthetic, write_good_and_bad
from PIL import Image

from ferbatch.scoring import ImageError, decode, scan


@pytest.fixture(scope="module")
def mixed_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mixed")
    return folder, write_good_and_bad(folder, huge_limit=4_000_000)


def test_scan_finds_every_image_file_once_and_ignores_other_suffixes(mixed_folder):
    folder, expected = mixed_folder
    found = [f.path.as_posix() for f in scan([folder])]
    assert sorted(found) == sorted(expected)
    assert "notes.txt" not in found


def test_scan_keeps_broken_symlinks_as_files_without_size(mixed_folder):
    folder, _ = mixed_folder
    broken = next(f for f in scan([folder]) if f.path.name == "broken_link.jpg")
    assert broken.bytes is None and broken.mtime is None


def test_scan_applies_include_and_exclude_globs(mixed_folder):
    folder, _ = mixed_folder
    assert {f.path.as_posix() for f in scan([folder], include=["good/*"], exclude=["*.gif"])} == {
        f"good/{n}" for n in ("rgb.jpg", "grey.png", "rgba.png", "cmyk.jpg", "sixteen_bit.png", "one_pixel.png",
                              "photo.webp", "photo.bmp", "photo.tiff", "exif_rotated.jpg")
    }


def test_scan_reports_the_first_level_folder(mixed_folder):
    folder, _ = mixed_folder
    folders = {f.path.as_posix(): f.folder for f in scan([folder])}
    assert folders["good/rgb.jpg"] == "good"


@pytest.mark.parametrize(
    "name", ["rgb.jpg", "grey.png", "rgba.png", "palette.gif", "cmyk.jpg", "sixteen_bit.png", "one_pixel.png",
             "animated.gif", "photo.webp", "photo.bmp", "photo.tiff"],
)
def test_every_good_kind_decodes_to_rgb_uint8(mixed_folder, name):
    folder, _ = mixed_folder
    decoded = decode((folder / "good" / name).read_bytes())
    assert decoded.pixels.dtype == np.uint8 and decoded.pixels.ndim == 3 and decoded.pixels.shape[2] == 3
    assert len(decoded.image_id) == 64


def test_sixteen_bit_values_are_scaled_not_clipped(mixed_folder):
    folder, _ = mixed_folder
    rgb = decode((folder / "good" / "sixteen_bit.png").read_bytes()).pixels
    assert rgb.max() > 200 and rgb.min() == 0
    assert len(np.unique(rgb)) > 100


def test_animated_gif_gives_its_first_frame(mixed_folder):
    folder, _ = mixed_folder
    assert decode((folder / "good" / "animated.gif").read_bytes()).pixels.mean() < 120


@pytest.mark.parametrize(
    ("name", "reason"),
    [("truncated.jpg", "corrupt or truncated"), ("random_bytes.jpg", "not an image"), ("text.png", "not an image"),
     ("bomb.png", "too large: 50000x50000 pixels is over the limit of 80,000,000")],
)
def test_bad_bytes_raise_image_error_with_a_short_reason(mixed_folder, name, reason):
    folder, _ = mixed_folder
    with pytest.raises(ImageError, match=reason):
        decode((folder / "bad" / name).read_bytes())


def test_images_above_the_pixel_limit_are_refused_from_the_header():
    data = encode(synthetic(300, 200), "PNG")
    with pytest.raises(ImageError, match=r"too large: 300x200 pixels is over the limit of 50,000"):
        decode(data, max_pixels=50_000)


def test_exif_orientation_is_applied():
    upright = decode((PHOTOS / "fr_obama.jpg").read_bytes()).pixels
    rotated = decode(exif_rotated_jpeg(PHOTOS / "fr_obama.jpg")).pixels
    assert rotated.shape == upright.shape
    assert np.abs(rotated.astype(int) - upright.astype(int)).mean() < 8


def test_taken_at_comes_from_exif_date_time_original_with_its_offset():
    exif = Image.Exif()
    ifd = exif.get_ifd(0x8769)
    ifd[36867] = "2024:05:06 14:30:00"
    ifd[36881] = "+02:00"
    decoded = decode(encode(synthetic(64, 48), "JPEG", exif=exif.tobytes()))
    assert decoded.taken_at.isoformat() == "2024-05-06T12:30:00+00:00"
    assert decode(encode(synthetic(64, 48), "JPEG")).taken_at is None


def test_unreadable_and_empty_files_are_image_errors(tmp_path):
    from ferbatch.scoring import ImageFile, read_bytes

    (tmp_path / "empty.jpg").write_bytes(b"")
    with pytest.raises(ImageError, match="empty file"):
        read_bytes(ImageFile(tmp_path, tmp_path.joinpath("empty.jpg").relative_to(tmp_path), 0, None))
    os.symlink(tmp_path / "gone.jpg", tmp_path / "link.jpg")
    with pytest.raises(ImageError, match="unreadable"):
        read_bytes(next(iter(scan([tmp_path / "link.jpg"]))))


def test_a_large_jpeg_is_decoded_at_reduced_size_with_its_full_size_reported():
    data = (PHOTOS / "fr_obama_and_biden.jpg").read_bytes()  # 2000 x 1428
    full, reduced = decode(data), decode(data, min_long_side=960)
    assert (full.width, full.height, full.scale) == (2000, 1428, 1.0)
    assert (reduced.width, reduced.height, reduced.scale) == (2000, 1428, 0.5)
    assert reduced.pixels.shape == (714, 1000, 3)  # 1/2 is the smallest DCT scale keeping 960 px
    assert reduced.image_id == full.image_id


def test_reduced_decode_keeps_the_upright_full_size_of_an_exif_rotated_jpeg():
    rotated = decode(exif_rotated_jpeg(PHOTOS / "fr_obama.jpg"), min_long_side=300)
    upright = decode((PHOTOS / "fr_obama.jpg").read_bytes())
    assert (rotated.width, rotated.height) == (upright.width, upright.height)
    assert rotated.pixels.shape[0] / rotated.pixels.shape[1] == pytest.approx(upright.height / upright.width, rel=0.01)


def test_png_and_small_jpeg_are_never_reduced():
    png = (PHOTOS / "skimage_astronaut.png").read_bytes()
    assert decode(png, min_long_side=100).scale == 1.0
    assert decode((PHOTOS / "fer_justin.jpg").read_bytes(), min_long_side=960).scale == 1.0


@pytest.mark.parametrize("mode", ["CMYK", "L", "RGB"])
def test_reduced_decode_handles_every_jpeg_mode(mode):
    decoded = decode(encode(synthetic(2000, 1500, mode=mode), "JPEG"), min_long_side=960)
    assert (decoded.width, decoded.height, decoded.scale) == (2000, 1500, 0.5)
    assert decoded.pixels.shape == (750, 1000, 3) and decoded.pixels.dtype == np.uint8


@pytest.mark.parametrize("mode", ["CMYK", "L", "RGB"])
def test_a_grey_decode_is_the_colour_decode_turned_grey(mode):
    import cv2

    data = encode(synthetic(640, 480, mode=mode), "JPEG")
    grey, colour = decode(data, grey=True), decode(data)
    assert grey.pixels.shape == (480, 640) and grey.pixels.dtype == np.uint8
    # JPEG luma is the grey RGB2GRAY computes, less the colour planes' rounding
    expected = cv2.cvtColor(colour.pixels, cv2.COLOR_RGB2GRAY).astype(int)
    assert np.abs(grey.pixels.astype(int) - expected).mean() < 1.0
    assert (grey.width, grey.height, grey.image_id) == (colour.width, colour.height, colour.image_id)


def test_a_grey_decode_is_upright_and_handles_transparent_png():
    rotated = decode(exif_rotated_jpeg(PHOTOS / "fr_obama.jpg"), grey=True)
    upright = decode((PHOTOS / "fr_obama.jpg").read_bytes(), grey=True)
    assert rotated.pixels.shape == upright.pixels.shape
    assert np.abs(rotated.pixels.astype(int) - upright.pixels.astype(int)).mean() < 8
    transparent = np.zeros((20, 30, 4), np.uint8)  # fully transparent: white, as in colour
    assert decode(encode(Image.fromarray(transparent, "RGBA"), "PNG"), grey=True).pixels.min() == 255
