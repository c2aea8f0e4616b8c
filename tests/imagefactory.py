"""Makes the test images: good synthetic photos and every kind of bad input, written into a folder."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

PHOTOS = Path(__file__).parent / "photos"
# Faces per sample photo as ../shared/README.md lists them (YuNet 1280 px, score 0.8); 960 px finds the same.
PHOTO_FACES = {
    "fr_obama.jpg": 1, "fr_biden.jpg": 1, "fer_justin.jpg": 1, "skimage_astronaut.png": 1,
    "fr_two_people.jpg": 2, "fr_obama_and_biden.jpg": 3, "fer_no-faces.jpg": 0,
}


def synthetic(width: int, height: int, value: int = 120, mode: str = "RGB", seed: int = 0) -> Image.Image:
    rng = np.random.default_rng([width, height, seed])
    pixels = np.clip(rng.normal(value, 20, (height, width, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels).convert(mode)


def encode(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height pixels, with a tiny (invalid) body: a decompression bomb."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


def exif_rotated_jpeg(source: Path) -> bytes:
    """The same photo stored rotated 90 degrees with EXIF orientation 6 ('rotate 90 CW to view')."""
    image = Image.open(source).convert("RGB")
    stored = image.transpose(Image.Transpose.ROTATE_90)  # counter-clockwise; the viewer turns it back
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(stored, "JPEG", quality=92, exif=exif.tobytes())


def write_good_and_bad(folder: Path, huge_limit: int = 4_000_000) -> dict[str, str | None]:
    """Write good images and every kind of bad input; returns {relative path: expected error fragment or None}.

    `huge_limit`: the --max-pixels the caller will use; one valid image is made just above it.
    """
    folder.mkdir(parents=True, exist_ok=True)
    expected: dict[str, str | None] = {}

    def put(name: str, data: bytes, error: str | None) -> None:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        expected[name] = error

    put("good/rgb.jpg", encode(synthetic(320, 200), "JPEG"), None)
    put("good/grey.png", encode(synthetic(200, 160, mode="L"), "PNG"), None)
    put("good/rgba.png", encode(synthetic(200, 160, mode="RGBA"), "PNG"), None)
    put("good/palette.gif", encode(synthetic(200, 160, mode="P"), "GIF"), None)
    put("good/cmyk.jpg", encode(synthetic(200, 160, mode="CMYK"), "JPEG"), None)
    sixteen = Image.fromarray(np.arange(200 * 160, dtype=np.uint16).reshape(160, 200) * 2)
    put("good/sixteen_bit.png", encode(sixteen, "PNG"), None)
    put("good/one_pixel.png", encode(synthetic(1, 1), "PNG"), None)
    frames = [synthetic(120, 90, value=v) for v in (60, 200)]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    put("good/animated.gif", buffer.getvalue(), None)
    put("good/photo.webp", encode(synthetic(240, 180), "WEBP"), None)
    put("good/photo.bmp", encode(synthetic(64, 48), "BMP"), None)
    put("good/photo.tiff", encode(synthetic(64, 48), "TIFF"), None)
    put("good/exif_rotated.jpg", exif_rotated_jpeg(PHOTOS / "fr_obama.jpg"), None)

    full = encode(synthetic(400, 300), "JPEG")
    put("bad/zero_bytes.jpg", b"", "empty file")
    put("bad/truncated.jpg", full[: len(full) // 2], "corrupt or truncated")
    put("bad/random_bytes.jpg", np.random.default_rng(1).bytes(5000), "not an image")
    put("bad/text.png", b"this is a text file, not a PNG\n" * 20, "not an image")
    put("bad/bomb.png", png_header_only(50_000, 50_000), "too large")  # the product's pixel limit, not Pillow's
    side = int(huge_limit**0.5) + 50
    put("bad/huge.png", encode(Image.new("L", (side, side), 128), "PNG"), "too large")

    broken = folder / "bad" / "broken_link.jpg"
    broken.symlink_to(folder / "bad" / "does_not_exist.jpg")
    expected["bad/broken_link.jpg"] = "unreadable"
    loop = folder / "bad" / "loop"
    loop.symlink_to(folder / "bad", target_is_directory=True)  # a folder symlink loop: must not be followed
    (folder / "bad" / "loop_a.jpg").symlink_to(folder / "bad" / "loop_b.jpg")  # a file symlink loop
    (folder / "bad" / "loop_b.jpg").symlink_to(folder / "bad" / "loop_a.jpg")
    expected["bad/loop_a.jpg"] = expected["bad/loop_b.jpg"] = "unreadable"
    odd_name = os.fsdecode(b"bad/caf\xe9-latin1.jpg")  # not valid UTF-8 on disk
    (folder / odd_name).write_bytes(encode(synthetic(100, 80), "JPEG"))
    expected[odd_name] = None
    if os.geteuid() != 0:  # root reads everything; the case only exists for ordinary users
        locked = folder / "bad" / "unreadable.jpg"
        locked.write_bytes(full)
        locked.chmod(0)
        expected["bad/unreadable.jpg"] = "unreadable"
    (folder / "notes.txt").write_text("not an image suffix: ignored by the scan\n")
    return expected


def png_zlib_bomb(width: int, height: int, bit_depth: int = 16, colour_type: int = 6) -> bytes:
    """A valid PNG of zeros that compresses about 1000:1: 8900 x 8900 16-bit RGBA is a ~616 KB file that
    decodes to 634 MB of samples (colour type 6 = RGBA, 2 = RGB, 0 = grey)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour_type]
    row = b"\x00" * (1 + width * channels * bit_depth // 8)  # filter byte 0, then the samples
    compressor = zlib.compressobj(9)
    body = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", body) + chunk(b"IEND", b"")
