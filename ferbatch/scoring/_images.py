"""Find image files under one or more folders and decode them safely.

Decoding goes through Pillow, which reads the header before the pixels, so oversized images and
decompression bombs are refused cheaply: by pixel count (`max_pixels`, the product's only pixel limit;
Pillow's own MAX_IMAGE_PIXELS guard is not consulted when opening) and by decoded bytes
(`max_decoded_bytes`: width x height x channels x bytes per sample, as the header declares them). A
process-wide budget lets only that many decoded bytes be in flight across threads at once. Decoding
applies the EXIF orientation and copes with grey, RGBA, palette, CMYK, 16-bit and multi-frame (first
frame) images. PNG text chunks too large for Pillow's text guard are left out before decoding: they
hold no pixels, and must not make a valid image unreadable.
"""

from __future__ import annotations

import errno
import fnmatch
import hashlib
import io
import logging
import math
import os
import re
import stat
import struct
import threading
import weakref
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageOps, PngImagePlugin, UnidentifiedImageError

from ferbatch.config import DEFAULT_MAX_BYTES, DEFAULT_MAX_PIXELS
from ferbatch.safe.text import printable

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"})
# Decoded samples one image may need (width x height x channels x bytes per sample, from its header), and
# the most in flight across a process's decoding threads: 134 MB is a 44 MP 8-bit RGB or 33 MP RGBA PNG;
# a 616 KB 8900x8900 16-bit RGBA PNG "zlib bomb" would be 634 MB. A JPEG over it is decoded reduced (DCT
# scaling) instead. Sized so a run stays under 1.5 GB peak RSS at the default 2 workers (README, Limits).
DEFAULT_MAX_DECODED_BYTES = 128 * 2**20
# Older cameras and editors write placeholder dates (0000:00:00, 0001:01:01); nothing was photographed
# before 1826, so earlier dates are taken to be no date at all.
_FIRST_PHOTOGRAPH_YEAR = 1826

_EXIF_IFD = 0x8769
_DATETIME_ORIGINAL = 36867
_OFFSET_TIME_ORIGINAL = 36881


@dataclass(frozen=True)
class ImageFile:
    root: Path  # the folder that was scanned
    path: Path  # relative to root (POSIX form in reports)
    bytes: int | None
    mtime: datetime | None
    # Whether reading may follow a symbolic link at this path: a link the scan allowed (or a file named
    # directly); False for what the scan saw as a plain entry, so one swapped for a link since is not followed.
    follow: bool = True
    refused: str | None = None  # why the scan will not let this entry be read: it becomes an error row unread

    @property
    def absolute(self) -> Path:
        return self.root / self.path

    @property
    def path_text(self) -> str:
        """The relative path as valid UTF-8 for reports (see `as_text`)."""
        return as_text(self.path)

    @property
    def root_text(self) -> str:
        return as_text(self.root)

    @property
    def folder(self) -> str:
        """The first-level subfolder under the root (a campaign, brand or hashtag folder), '' at the top."""
        return self.path.parts[0] if len(self.path.parts) > 1 else ""


_ESCAPE_LOOKALIKE = re.compile(rb"\\x[0-9a-fA-F]{2}")


def _name_text(name: bytes) -> str:
    """One path component as valid UTF-8, distinct for distinct names.

    Bytes that are not UTF-8 appear as \\xNN. So that such a name can never read the same as a valid one, a
    name holding undecodable bytes, or a literal backslash-x-hex-hex, has each of its backslashes doubled
    first; every other name is unchanged. (b'\\xff.jpg' is `\\xff.jpg`, the 7 characters `\\xff.jpg` are
    `\\\\xff.jpg`.)
    """
    try:
        text = name.decode("utf-8")
    except UnicodeDecodeError:
        return name.replace(b"\\", b"\\\\").decode("utf-8", errors="backslashreplace")
    return text.replace("\\", "\\\\") if _ESCAPE_LOOKALIKE.search(name) else text


def as_text(path: Path) -> str:
    """A POSIX path as valid UTF-8 (see `_name_text`): each name as is when it is UTF-8 on disk, undecodable
    bytes as \\xNN. Escaped name by name, so a root's text joined to a relative path's is the whole path's."""
    return "/".join(_name_text(part) for part in os.fsencode(path.as_posix()).split(b"/"))


class ImageError(Exception):
    """An image that cannot be scored; the message becomes the error row's reason."""


@dataclass
class DecodedImage:
    image_id: str  # sha256 of the file's bytes
    # (H, W, 3) uint8 RGB, or (H, W) grey from decode(grey=True); upright (EXIF orientation applied);
    # maybe reduced, see `scale`
    pixels: np.ndarray
    taken_at: datetime | None
    width: int  # of the upright image at full resolution
    height: int
    scale: float = 1.0  # rgb size / full size: below 1 when a JPEG was decoded at reduced size


# A file in every `--annotate` folder: `scan` never enters a folder holding it, so annotated copies are not
# scored as new images by a later run, with or without --annotate.
ANNOTATIONS_MARKER = ".ferbatch-annotations"


def _is_annotations(directory: Path) -> bool:
    """Whether the folder holds the marker; a folder that cannot be looked into is not marked (listing it says
    why it is skipped). A marked folder is skipped with a log line, so a planted marker never hides one silently."""
    try:
        marked = (directory / ANNOTATIONS_MARKER).is_file()
    except OSError:
        return False
    if marked:
        log.info("%s: not scanned: it holds %s (annotated copies; remove the file to score the folder)",
                 printable(as_text(directory)), ANNOTATIONS_MARKER)
    return marked


def _is_dir(path: Path) -> bool:
    """Path.is_dir, False for any OS error (permission denied, a name too long) instead of raising."""
    try:
        return path.is_dir()
    except (OSError, ValueError):  # ValueError: a NUL byte in the name
        return False


def _matches(relative: str, patterns: Sequence[str]) -> bool:
    name = relative.rsplit("/", 1)[-1]
    return any(fnmatch.fnmatch(relative, p) or fnmatch.fnmatch(name, p) for p in patterns)


OUTSIDE_LINK = ("not read: a symbolic link to a file outside the scanned folders "
                "(--follow-links or score.follow_links reads it)")


def _inside(path: Path, folders: Sequence[Path]) -> bool:
    return any(path == folder or folder in path.parents for folder in folders)


@dataclass
class _Walk:
    """One scan's rules and memory: what is skipped, and the real folders and files already taken."""

    folders: list[Path]  # the named folders, resolved: everything inside them is scanned where it lies
    include: Sequence[str]
    exclude: Sequence[str]
    skipped: set[Path]
    follow_links: bool
    seen: set[Path]  # real paths reached through links (with follow_links): each once

    def wanted(self, relative: Path) -> bool:
        if relative.suffix.lower() not in IMAGE_SUFFIXES:
            return False
        posix = relative.as_posix()
        return (not self.include or _matches(posix, self.include)) and not (
            self.exclude and _matches(posix, self.exclude))

    def entering(self, real: Path) -> bool:
        return real not in self.skipped and not _is_annotations(real)


def scan(
    roots: Sequence[str | Path],
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    skip_dirs: Sequence[str | Path] = (),
    follow_links: bool = False,
) -> Iterator[ImageFile]:
    """Image files under each root, recursively, in a stable order.

    `include` / `exclude` are glob patterns matched against the path relative to its root and against
    the file name. `skip_dirs` are folders never entered (the run's own output and annotation folders,
    should they sit inside a scanned folder), nor are folders marked with ANNOTATIONS_MARKER.

    Symbolic links, files and folders alike: one whose target lies inside the named folders is not followed
    (the target is scanned where it lies, so every real file is scored once); one whose target lies outside
    is not read unless `follow_links` (a file link becomes a refused entry, an error row that says so; a
    folder link is left out with a warning). With `follow_links` such targets are scanned under the link's
    path, each real file and folder once, so a link cycle ends. Anything that is not a folder is yielded when
    its name is an image's, a FIFO or device too: `read` refuses what is not a regular file. A broken or
    looping link is yielded with bytes None, so it becomes an error row instead of silently disappearing.
    """
    named = normalise_roots(roots)
    walk = _Walk([r for r in named if _is_dir(r)], include, exclude, {_resolved(Path(d)) for d in skip_dirs},
                 follow_links, set())
    for root in named:
        if root not in walk.folders:  # a file named directly: the user chose it (a broken link too: an error row)
            yield _image_file(root.parent, Path(root.name))
            continue
        yield from _scan_folder(walk, root, root, Path())


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except (OSError, ValueError):  # a name too long, a loop: compared as written
        return Path(os.path.abspath(path))


def _entry_kind(entry: os.DirEntry) -> str:
    """"link", "dir" or "file" for one listed entry (may raise OSError)."""
    if entry.is_symlink():
        return "link"
    return "dir" if entry.is_dir(follow_symlinks=False) else "file"


def _scan_folder(walk: _Walk, root: Path, real: Path, relative: Path) -> Iterator[ImageFile]:
    """The images of one folder, at `relative` under `root`; `real` is its resolved path."""
    try:
        with os.scandir(root / relative) as listing:
            entries = sorted(listing, key=lambda e: os.fsencode(e.name))
    except OSError as exc:
        log.warning("%s: folder not scanned (%s)", printable(as_text(root / relative)), exc.strerror or exc)
        return
    followed = not _inside(real, walk.folders)  # reached through a followed link: its files once each
    for entry in entries:
        path = relative / entry.name
        # Any OS error on one entry (permission denied, a name too long) is that entry's error row, or a logged
        # skip for a folder; the scan goes on with the next entry.
        try:
            kind = _entry_kind(entry)
            enter = kind == "dir" and walk.entering(real / entry.name) and (real / entry.name) not in walk.folders
        except OSError as exc:
            if walk.wanted(path):
                yield ImageFile(root, path, None, None, follow=False, refused=f"unreadable: {exc.strerror or exc}")
            else:
                log.warning("%s: not scanned (%s)", printable(as_text(root / path)), exc.strerror or exc)
            continue
        if followed and kind != "dir":
            if real / entry.name in walk.seen:
                continue
            walk.seen.add(real / entry.name)
        if kind == "link":
            yield from _scan_link(walk, root, path)
        elif kind == "dir":
            # A named folder met again below a followed link (a link to a parent) is already being scanned.
            if enter:
                yield from _scan_folder(walk, root, real / entry.name, path)
        elif walk.wanted(path):
            yield _image_file(root, path, follow=False)


def _scan_link(walk: _Walk, root: Path, path: Path) -> Iterator[ImageFile]:
    """One symbolic link met in a scanned folder (see `scan` for the rule)."""
    try:
        target = Path(os.path.realpath(root / path, strict=True))
    except OSError as exc:  # broken, or a loop: an error row that says so, and nothing read
        if walk.wanted(path):
            reason = "a symbolic link loop" if exc.errno == errno.ELOOP else "missing file or broken symlink"
            yield ImageFile(root, path, None, None, follow=False, refused=f"unreadable: {reason}")
        return
    if _inside(target, walk.folders):
        return  # scanned where it lies (or deliberately not: an output, annotation or excluded folder)
    is_dir = _is_dir(target)
    if not walk.follow_links:
        if is_dir:
            log.warning("%s: not followed: a link to a folder outside the scanned folders (--follow-links "
                        "follows it)", printable(as_text(root / path)))
        elif walk.wanted(path):
            yield ImageFile(root, path, None, None, follow=False, refused=OUTSIDE_LINK)
        return
    if target in walk.seen:
        return  # already scanned through another link: once per real file or folder, and no cycles
    if is_dir:
        walk.seen.add(target)
        if walk.entering(target):
            yield from _scan_folder(walk, root, target, path)
    elif walk.wanted(path):
        walk.seen.add(target)
        yield _image_file(root, path)


def _absolute(path: Path) -> Path:
    """The path with its folders resolved (symlinks, `..`, a trailing `/`, relative to the working folder);
    a file named directly keeps its own name, so a symlink to an image is still reported by its name."""
    path = Path(os.path.abspath(path))
    return _resolved(path) if _is_dir(path) else _resolved(path.parent) / path.name


def normalise_roots(roots: Sequence[str | Path]) -> list[Path]:
    """The roots as absolute, resolved paths, each once, without those inside another root.

    `A A/`, `A A/sub`, `A $PWD/A` all scan `A` once, so every real file gets one row per run; the outer
    root wins, so the `folder` column stays the same whichever roots are named. Order is kept.
    """
    absolute = [_absolute(Path(root)) for root in roots]
    kept: list[Path] = []
    for root in absolute:
        inside = any(other == root or other in root.parents for other in absolute
                     if other != root and _is_dir(other))
        if not inside and root not in kept:
            kept.append(root)
    return kept


def _image_file(root: Path, relative: Path, follow: bool = True) -> ImageFile:
    try:
        stat = (root / relative).stat() if follow else (root / relative).lstat()
    except (OSError, ValueError):
        return ImageFile(root, relative, None, None, follow)
    return ImageFile(root, relative, stat.st_size, _mtime(stat), follow)


def _mtime(stat: os.stat_result) -> datetime:
    # One conversion for the scan and the read, so a fingerprint taken from either matches the other.
    return datetime.fromtimestamp(stat.st_mtime, UTC)


_KINDS = ((stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket"), (stat.S_ISDIR, "a folder"))


def _readable(status: os.stat_result, max_bytes: int) -> None:
    """Refuses, from the open descriptor's fstat, what must not be read: not a regular file, or too large."""
    if not stat.S_ISREG(status.st_mode):
        kind = next((name for test, name in _KINDS if test(status.st_mode)), "not a plain file")
        raise ImageError(f"not a regular file: {kind}; not read")
    if status.st_size > max_bytes:
        raise ImageError(f"too large: {status.st_size:,} bytes is over the file size limit of {max_bytes:,} "
                         "(--max-bytes)")


def _open_file(file: ImageFile) -> int:
    """A read-only descriptor, opened without blocking (a FIFO with no writer) and without following a link
    the scan did not allow; OSErrors become ImageErrors with a short reason."""
    if file.refused:
        raise ImageError(file.refused)
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC | (0 if file.follow else os.O_NOFOLLOW)
    try:
        return os.open(file.absolute, flags)
    except ValueError as exc:  # a NUL byte in a name given through the Python API
        raise ImageError("unreadable: not a valid file name") from exc
    except PermissionError as exc:
        raise ImageError("unreadable: permission denied") from exc
    except FileNotFoundError as exc:
        raise ImageError("unreadable: missing file or broken symlink") from exc
    except IsADirectoryError as exc:
        raise ImageError("unreadable: a folder, not a file") from exc
    except OSError as exc:
        if exc.errno == errno.ELOOP and not file.follow:
            raise ImageError("not read: a symbolic link the scan did not allow (it was replaced by one since?)") \
                from exc
        raise ImageError(f"unreadable: {exc.strerror or exc}") from exc


def read_bytes(file: ImageFile, max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    return read(file, max_bytes=max_bytes)[0]


def read(file: ImageFile, attempts: int = 3, max_bytes: int = DEFAULT_MAX_BYTES) -> tuple[bytes, ImageFile]:
    """The file's bytes, and `file` with `bytes` and `mtime` from the same open file descriptor.

    Only a regular file of at most `max_bytes` is read, as fstat on the opened descriptor says before any
    byte is read (a FIFO, a device such as /dev/zero, a huge sparse file are refused unread), and never more
    than its size plus one byte. The size and mtime are fstat'ed before and after the read; when they differ
    (the file was rewritten in place while being read) it is read again. So a row's bytes, mtime and image_id
    always describe the same content, whatever the scan saw earlier.
    """
    descriptor = _open_file(file)
    try:
        with open(descriptor, "rb", closefd=True) as handle:
            for _ in range(attempts):
                before = os.fstat(handle.fileno())
                _readable(before, max_bytes)
                handle.seek(0)
                data = handle.read(before.st_size + 1)  # one byte more tells that it grew
                after = os.fstat(handle.fileno())
                same = (before.st_size, before.st_mtime_ns) == (after.st_size, after.st_mtime_ns)
                if same and len(data) == after.st_size:
                    break
            else:
                raise ImageError(f"unreadable: the file kept changing while it was read ({attempts} tries)")
    except OSError as exc:
        raise ImageError(f"unreadable: {exc.strerror or exc}") from exc
    if not data:
        raise ImageError("empty file (0 bytes)")
    return data, replace(file, bytes=after.st_size, mtime=_mtime(after))


_HASH_CHUNK = 2**20


def file_id(file: ImageFile, max_bytes: int = DEFAULT_MAX_BYTES) -> str:
    """The sha256 of a file's content (its image_id), read in chunks: memory stays flat whatever its size.

    Refuses what `read` refuses, from the same checks, before reading a byte.
    """
    digest = hashlib.sha256()
    descriptor = _open_file(file)
    try:
        with open(descriptor, "rb", buffering=0, closefd=True) as handle:
            status = os.fstat(handle.fileno())
            _readable(status, max_bytes)
            left = status.st_size + 1
            while left > 0 and (chunk := handle.read(min(_HASH_CHUNK, left))):
                digest.update(chunk)
                left -= len(chunk)
    except OSError as exc:
        raise ImageError(f"unreadable: {exc.strerror or exc}") from exc
    return digest.hexdigest()


def image_id(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _utc_offset(text: str) -> timedelta:
    """An EXIF OffsetTime ('+HH:MM' / '-HH:MM') within the real range of zones, -12:00 to +14:00."""
    if len(text) != 6 or text[0] not in "+-" or text[3] != ":" or not (text[1:3] + text[4:6]).isdigit():
        raise ValueError(f"not an offset: {text!r}")
    hours, minutes = int(text[1:3]), int(text[4:6])
    delta = timedelta(hours=hours, minutes=minutes)
    if minutes > 59 or delta > timedelta(hours=14):
        raise ValueError(f"impossible offset: {text!r}")
    return delta if text[0] == "+" else -delta


def _taken_at(image: Image.Image) -> datetime | None:
    """EXIF DateTimeOriginal, as UTC when OffsetTimeOriginal says the zone, else taken to be UTC.

    None for a missing or impossible date (unparsable, before 1826, out of range once converted) or an
    impossible offset (over 14 hours, minutes over 59): the date is dropped, the image is still scored.
    """
    try:
        exif = image.getexif().get_ifd(_EXIF_IFD)
        text = exif.get(_DATETIME_ORIGINAL)
        if not text:
            return None
        taken = datetime.strptime(str(text).strip("\x00 "), "%Y:%m:%d %H:%M:%S")
        offset = str(exif.get(_OFFSET_TIME_ORIGINAL) or "").strip("\x00 ")
        if offset:
            taken -= _utc_offset(offset)  # OverflowError near year 1 or 9999
        if taken.year < _FIRST_PHOTOGRAPH_YEAR:
            return None
        return taken.replace(tzinfo=UTC)
    except (ValueError, TypeError, KeyError, OSError, OverflowError):
        return None  # a malformed date is no reason to lose the image


_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_TEXT_CHUNKS = frozenset({b"tEXt", b"zTXt", b"iTXt"})


def _text_length(kind: bytes, body: bytes, limit: int) -> int:
    """The length of a PNG text chunk's text, decompressing at most `limit` + 1 bytes of it."""
    _, _, rest = body.partition(b"\0")
    if kind == b"tEXt":
        return len(rest)
    if kind == b"zTXt":
        compressed = rest[1:]
    else:  # iTXt: compression flag, method, language\0, translated keyword\0, text
        if len(rest) < 2 or rest[0] == 0:
            return len(rest)
        compressed = rest[2:].split(b"\0", 2)[-1]
    try:
        inflater = zlib.decompressobj()
        text = inflater.decompress(compressed, limit + 1)
    except zlib.error:
        return 0  # Pillow ignores a text chunk it cannot inflate
    return len(text) + (1 if inflater.unconsumed_tail else 0)


def _without_oversized_png_text(data: bytes) -> bytes:
    """PNG bytes without the text chunks that Pillow's text guard would refuse (so it would refuse the image).

    Text chunks hold no pixels; the ones within PngImagePlugin.MAX_TEXT_CHUNK (each) and MAX_TEXT_MEMORY
    (all together) are kept, so EXIF in a 'Raw profile type exif' chunk still gives the taken date. Only
    chunk headers are walked; the bytes are copied only when a chunk is left out. Pillow's settings are read,
    never changed.
    """
    if not data.startswith(_PNG_SIGNATURE):
        return data
    chunk_limit, memory_limit = PngImagePlugin.MAX_TEXT_CHUNK, PngImagePlugin.MAX_TEXT_MEMORY
    dropped: list[tuple[int, int]] = []
    memory, position = 0, len(_PNG_SIGNATURE)
    while position + 12 <= len(data):
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        end = position + 12 + length
        if end > len(data):
            break  # truncated: Pillow reports it
        if kind in _PNG_TEXT_CHUNKS:
            text = _text_length(kind, data[position + 8 : end - 4], chunk_limit)
            if text > chunk_limit or memory + text > memory_limit:
                dropped.append((position, end))
            else:
                memory += text
        if kind == b"IEND":
            break
        position = end
    if not dropped:
        return data
    pieces, kept_from = [], 0
    for begin, end in dropped:
        pieces.append(data[kept_from:begin])
        kept_from = end
    pieces.append(data[kept_from:])
    return b"".join(pieces)


def _open(data: bytes) -> Image.Image:
    """Image.open without Pillow's MAX_IMAGE_PIXELS bomb check: `decode` applies the product's own limits.

    Pillow's check reads a process-wide setting; turning it off for everyone would also disarm it for
    every other library in the process, so instead the format plugins are tried here as Image.open
    tries them, and the header's size is judged by `max_pixels` and `max_decoded_bytes` before any
    pixel is decoded.
    """
    Image.init()
    prefix = data[:16]
    fp = io.BytesIO(data)
    for name in Image.ID:
        factory, accept = Image.OPEN[name]
        accepted = not accept or accept(prefix)
        if not accepted or isinstance(accepted, str):
            continue
        fp.seek(0)
        try:
            return factory(fp, "")
        except (SyntaxError, IndexError, TypeError, struct.error):
            continue
    raise UnidentifiedImageError("cannot identify image file")


_MODE_SAMPLE_BYTES = {"I": 4, "F": 4, "I;16": 2, "I;16L": 2, "I;16B": 2, "I;16N": 2}


def sample_layout(image: Image.Image) -> tuple[int, int]:
    """(channels, bytes per sample) as the opened, not yet decoded, image declares them.

    The bytes per sample come from the decoder's raw mode where the file stores more bits than the mode
    keeps (a 16-bit RGBA PNG opens as 'RGBA' read from 'RGBA;16B').
    """
    sample = _MODE_SAMPLE_BYTES.get(image.mode, 1)
    for tile in image.tile or ():
        args = tile[3] if len(tile) > 3 else None
        raw = args if isinstance(args, str) else (args[0] if isinstance(args, tuple) and args else None)
        if isinstance(raw, str) and ";16" in raw:
            sample = max(sample, 2)
        elif isinstance(raw, str) and ";32" in raw:
            sample = max(sample, 4)
    return len(image.getbands()), sample


class DecodeBudget:
    """At most `limit` bytes of decoding work in flight across this process's threads.

    A decode is charged its decoded samples plus the RGB result it returns; the result's share is given
    back only when that array is garbage collected (after detection and cropping), so images waiting
    their turn cannot pile full-size copies on top of each other at any --workers. An image larger than
    `limit` runs alone. A thread that already holds a charge (the full-size fallback decode while the
    reduced copy is still alive) never waits, so two such threads cannot wait on each other.
    """

    def __init__(self, limit: int) -> None:
        self.limit, self.in_use = limit, 0
        self._holding: dict[int, int] = {}
        self._changed = threading.Condition()

    def acquire(self, amount: int) -> int:
        """Wait for room for `amount`; returns the owner token to release with."""
        owner = threading.get_ident()
        with self._changed:
            if not self._holding.get(owner):
                self._changed.wait_for(lambda: self.in_use == 0 or self.in_use + amount <= self.limit)
            self.in_use += amount
            self._holding[owner] = self._holding.get(owner, 0) + amount
        return owner

    def release(self, amount: int, owner: int | None = None) -> None:
        owner = threading.get_ident() if owner is None else owner
        with self._changed:
            self.in_use -= amount
            left = self._holding.get(owner, 0) - amount
            if left > 0:
                self._holding[owner] = left
            else:
                self._holding.pop(owner, None)
            self._changed.notify_all()


DECODE_BUDGET = DecodeBudget(DEFAULT_MAX_DECODED_BYTES)


_BAND = 256  # rows converted at a time, so a large image needs its own pixels and the result, no more


def _to_rgb(image: Image.Image) -> np.ndarray:
    if image.mode == "RGB":
        return np.asarray(image)
    # Converted in bands of rows, so a large image needs its own pixels and the RGB result, not full-size
    # intermediate copies (float32 samples, RGBA copy, white background, composite).
    width, height = image.size
    rgb = np.empty((height, width, 3), np.uint8)
    transparent = image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info)
    wide = image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")
    if wide:  # 16-bit to 8-bit; 'I' files may hold 8-bit values; 'F' is clipped as is
        divisor = 257.0 if image.mode != "F" and image.getextrema()[1] > 255 else 1.0
    for top in range(0, height, _BAND):
        band = image.crop((0, top, width, min(height, top + _BAND)))
        if wide:
            grey = np.clip(np.asarray(band, dtype=np.float32) / divisor, 0, 255).astype(np.uint8)
            rgb[top : top + _BAND] = grey[..., None]
        elif transparent:
            # Transparent areas become white, as a viewer would show them on a page.
            rgba = np.asarray(band.convert("RGBA"), dtype=np.uint16)
            alpha = rgba[..., 3:4]
            rgb[top : top + _BAND] = (rgba[..., :3] * alpha + 255 * (255 - alpha) + 127) // 255
        else:
            rgb[top : top + _BAND] = np.asarray(band.convert("RGB"))
    return rgb


def _to_grey(image: Image.Image) -> np.ndarray:
    if image.mode == "L":  # a grey file, or a colour JPEG drafted to its luma
        return np.asarray(image)
    return cv2.cvtColor(_to_rgb(image), cv2.COLOR_RGB2GRAY)  # as crop_faces turns RGB grey


def _jpeg_reduction(width: int, height: int, ratio: float | None, full_bytes: int, max_bytes: int) -> int:
    """The DCT scale denominator (1, 2, 4 or 8) for a JPEG: as Pillow's draft picks it for `ratio`, then
    halved further while the decoded bytes would be over `max_bytes`."""
    denominator = 1
    if ratio is not None:
        fits = min(width // math.ceil(width * ratio), height // math.ceil(height * ratio))
        denominator = next(s for s in (8, 4, 2, 1) if fits >= s)
    while full_bytes > max_bytes * denominator**2 and denominator < 8:
        denominator *= 2
    return denominator


def decode(
    data: bytes,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    *,
    min_long_side: int | None = None,
    known_id: str | None = None,
    max_decoded_bytes: int = DEFAULT_MAX_DECODED_BYTES,
    grey: bool = False,
) -> DecodedImage:
    """Decode image bytes to upright RGB, or grey with `grey`; raises ImageError with a short reason.

    With `min_long_side`, a larger JPEG is decoded at the smallest DCT scale (1/2, 1/4, 1/8) that
    keeps its long side at least that long: several times cheaper than a full decode and then a resize.
    An elongated JPEG (long side at least twice the short side) keeps its short side that long instead,
    so a panorama's faces are not shrunk away before detection. `max_pixels` and `max_decoded_bytes`
    are judged from the header, before any pixel is decoded. A colour JPEG decoded grey skips the chroma
    planes (luma only): 3.5 times cheaper than colour for a 12 MP photo, 1.5 for 1080p.
    """
    try:
        # No warnings.catch_warnings() here: it swaps the process-wide filter list and is not thread-safe.
        # Pillow's open-time bomb check is bypassed (_open); its crop/GIF-frame checks see sizes already
        # within max_pixels, so no DecompressionBombWarning is due at the default limit.
        image = _open(_without_oversized_png_text(data))
        width, height = image.size
        if width * height > max_pixels:
            raise ImageError(f"too large: {width}x{height} pixels is over the limit of {max_pixels:,}")
        if width < 1 or height < 1:
            raise ImageError(f"empty image: {width}x{height}")
        image.seek(0)  # first frame of a GIF, WebP or TIFF
        channels, sample = sample_layout(image)
        if image.format == "JPEG":  # decoded reduced for speed, and to fit max_decoded_bytes
            side = min(width, height) if max(width, height) >= 2 * min(width, height) else max(width, height)
            ratio = min_long_side / side if min_long_side and side > min_long_side else None
            reduce = _jpeg_reduction(width, height, ratio, width * height * channels * sample, max_decoded_bytes)
            if reduce > 1 or grey:
                image.draft("L" if grey else None, (width // reduce, height // reduce))
                channels = len(image.getbands())  # 1 once a colour JPEG is drafted to luma
        needed = image.size[0] * image.size[1] * channels * sample  # after draft: what really decodes
        if needed > max_decoded_bytes:
            reduced = f" (at {image.size[0]}x{image.size[1]})" if image.size != (width, height) else ""
            raise ImageError(
                f"too large to decode: {width}x{height} pixels x {channels} channels x {8 * sample}-bit"
                f"{reduced} is {needed / 1e6:,.0f} MB decoded, over the limit of {max_decoded_bytes / 1e6:,.0f} MB"
            )
        scale = image.size[0] / width
        # the decoded samples and the RGB or grey result
        charge = needed + (1 if grey else 3) * image.size[0] * image.size[1]
        owner = DECODE_BUDGET.acquire(charge)
        try:
            taken_at = _taken_at(image)  # may load the pixels (PNG EXIF can follow them): inside the budget
            stored = image.size
            ImageOps.exif_transpose(image, in_place=True)
            if image.size != stored:  # a quarter turn: the upright image is height x width
                width, height = height, width
            pixels = np.ascontiguousarray(_to_grey(image) if grey else _to_rgb(image))
            image.close()
        except BaseException:
            DECODE_BUDGET.release(charge, owner)
            raise
        # The samples are freed now; the result's share when the caller lets go of the array.
        DECODE_BUDGET.release(charge - pixels.nbytes, owner)
        weakref.finalize(pixels, DECODE_BUDGET.release, pixels.nbytes, owner)
    except ImageError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageError(f"decompression bomb refused: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise ImageError("not an image (unknown format)") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:  # truncated or corrupt data
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ImageError(f"corrupt or truncated image: {reason}") from exc
    return DecodedImage(known_id or image_id(data), pixels, taken_at, width, height, scale)
