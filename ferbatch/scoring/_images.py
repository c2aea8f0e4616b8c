"""Find image files under one or more folders and decode them safely.

Decoding goes through Pillow, which reads the header before the pixels (so oversized images and
decompression bombs are refused cheaply), applies the EXIF orientation, and copes with grey, RGBA,
palette, CMYK, 16-bit and multi-frame (first frame) images.
"""

from __future__ import annotations

import fnmatch
import hashlib
import io
import math
import os
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ferbatch.config import DEFAULT_MAX_PIXELS

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"})

_EXIF_IFD = 0x8769
_DATETIME_ORIGINAL = 36867
_OFFSET_TIME_ORIGINAL = 36881


@dataclass(frozen=True)
class ImageFile:
    root: Path  # the folder that was scanned
    path: Path  # relative to root (POSIX form in reports)
    bytes: int | None
    mtime: datetime | None

    @property
    def absolute(self) -> Path:
        return self.root / self.path

    @property
    def path_text(self) -> str:
        """The relative path as valid UTF-8 for reports (undecodable bytes appear as \\xNN)."""
        return as_text(self.path)

    @property
    def root_text(self) -> str:
        return as_text(self.root)

    @property
    def folder(self) -> str:
        """The first-level subfolder under the root (a campaign, brand or hashtag folder), '' at the top."""
        return self.path.parts[0] if len(self.path.parts) > 1 else ""


def as_text(path: Path) -> str:
    """A POSIX path as valid UTF-8: file names that are not UTF-8 on disk keep their bytes as \\xNN."""
    return os.fsencode(path.as_posix()).decode("utf-8", errors="backslashreplace")


class ImageError(Exception):
    """An image that cannot be scored; the message becomes the error row's reason."""


@dataclass
class DecodedImage:
    image_id: str  # sha256 of the file's bytes
    rgb: np.ndarray  # (H, W, 3) uint8, upright (EXIF orientation applied); maybe reduced, see `scale`
    taken_at: datetime | None
    width: int  # of the upright image at full resolution
    height: int
    scale: float = 1.0  # rgb size / full size: below 1 when a JPEG was decoded at reduced size


def _matches(relative: str, patterns: Sequence[str]) -> bool:
    name = relative.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatch(relative, p) or fnmatch.fnmatch(name, p) for p in patterns)


def scan(
    roots: Sequence[str | Path],
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    skip_dirs: Sequence[str | Path] = (),
) -> Iterator[ImageFile]:
    """Image files under each root, recursively, in a stable order; symlinked folders are not followed.

    `include` / `exclude` are glob patterns matched against the path relative to its root and against
    the file name. `skip_dirs` are folders never entered (the run's own output and annotation folders,
    should they sit inside a scanned folder). A file that cannot be stat'ed (a broken symlink) is still
    yielded, with bytes None, so it becomes an error row instead of silently disappearing.
    """
    skipped = {Path(d).resolve() for d in skip_dirs}
    for root in map(Path, roots):
        if not root.is_dir():  # a file named directly (a broken link too: it becomes an error row)
            yield _image_file(root.parent, Path(root.name))
            continue
        for directory, subdirs, files in os.walk(root, followlinks=False):
            subdirs[:] = sorted(d for d in subdirs if (Path(directory) / d).resolve() not in skipped)
            for name in sorted(files):
                absolute = Path(directory) / name
                if absolute.suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                relative = absolute.relative_to(root)
                posix = relative.as_posix()
                if include and not _matches(posix, include):
                    continue
                if exclude and _matches(posix, exclude):
                    continue
                yield _image_file(root, relative)


def _image_file(root: Path, relative: Path) -> ImageFile:
    try:
        stat = (root / relative).stat()
    except OSError:
        return ImageFile(root, relative, None, None)
    return ImageFile(root, relative, stat.st_size, datetime.fromtimestamp(stat.st_mtime, UTC))


def read_bytes(file: ImageFile) -> bytes:
    try:
        data = file.absolute.read_bytes()
    except PermissionError as exc:
        raise ImageError("unreadable: permission denied") from exc
    except FileNotFoundError as exc:
        raise ImageError("unreadable: missing file or broken symlink") from exc
    except OSError as exc:
        raise ImageError(f"unreadable: {exc.strerror or exc}") from exc
    if not data:
        raise ImageError("empty file (0 bytes)")
    return data


def image_id(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _taken_at(image: Image.Image) -> datetime | None:
    """EXIF DateTimeOriginal, as UTC when OffsetTimeOriginal says the zone, else taken to be UTC."""
    try:
        exif = image.getexif().get_ifd(_EXIF_IFD)
        text = exif.get(_DATETIME_ORIGINAL)
        if not text:
            return None
        taken = datetime.strptime(str(text).strip("\x00 "), "%Y:%m:%d %H:%M:%S")
        offset = str(exif.get(_OFFSET_TIME_ORIGINAL) or "").strip("\x00 ")
        if len(offset) == 6 and offset[0] in "+-":
            sign = 1 if offset[0] == "+" else -1
            delta = timedelta(hours=int(offset[1:3]), minutes=int(offset[4:6]))
            return (taken - sign * delta).replace(tzinfo=UTC)
        return taken.replace(tzinfo=UTC)
    except (ValueError, TypeError, KeyError, OSError):
        return None  # a malformed date is no reason to lose the image


def _to_rgb(image: Image.Image) -> np.ndarray:
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        wide = np.asarray(image, dtype=np.float32)
        scale = 257.0 if wide.max() > 255 else 1.0  # 16-bit to 8-bit; 'I' files may hold 8-bit values
        grey = np.clip(wide / scale, 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if image.mode == "F":
        grey = np.clip(np.asarray(image, dtype=np.float32), 0, 255).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=2)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Transparent areas become white, as a viewer would show them on a page.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(background, rgba).convert("RGB"))
    return np.asarray(image.convert("RGB"))


def decode(
    data: bytes,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    *,
    min_long_side: int | None = None,
    known_id: str | None = None,
) -> DecodedImage:
    """Decode image bytes to upright RGB; raises ImageError with a short reason.

    With `min_long_side`, a larger JPEG is decoded at the smallest DCT scale (1/2, 1/4, 1/8) that
    keeps its long side at least that long: several times cheaper than a full decode and then a resize.
    """
    try:
        with warnings.catch_warnings():
            # Our own max_pixels check below decides; Pillow still refuses true bombs (over 2x its limit).
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise ImageError(f"too large: {width}x{height} pixels is over the limit of {max_pixels:,}")
            if width < 1 or height < 1:
                raise ImageError(f"empty image: {width}x{height}")
            image.seek(0)  # first frame of a GIF, WebP or TIFF
            if min_long_side and image.format == "JPEG" and max(width, height) > min_long_side:
                ratio = min_long_side / max(width, height)
                image.draft(None, (math.ceil(width * ratio), math.ceil(height * ratio)))
            scale = image.size[0] / width
            taken_at = _taken_at(image)
            transposed = ImageOps.exif_transpose(image)
            if transposed.size != image.size:  # a quarter turn: the upright image is height x width
                width, height = height, width
            rgb = _to_rgb(transposed)
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError(f"decompression bomb refused: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise ImageError("not an image (unknown format)") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:  # truncated or corrupt data
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ImageError(f"corrupt or truncated image: {reason}") from exc
    return DecodedImage(known_id or image_id(data), np.ascontiguousarray(rgb), taken_at, width, height, scale)
