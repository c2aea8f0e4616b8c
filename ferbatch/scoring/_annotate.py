"""Copies of scored images with face boxes and labels drawn, for a person to check results by eye.

ferbatch writes only its own files here: the folder must be new, empty or one an earlier --annotate wrote (it
holds ANNOTATIONS_MARKER), and never a scanned folder or the report folder, nor inside or around one. Each copy
carries a JPEG comment naming the photo it was drawn from; a file without it, or drawn from another photo (x.jpg
and x.png), is never written over: the copy takes the next free name instead.
"""

from __future__ import annotations

import logging
import os
import stat
import struct
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import cv2
import numpy as np

from ferbatch.classes import CLASS_NAMES
from ferbatch.errors import FerbatchError
from ferbatch.safe.files import create_new, replace_atomically
from ferbatch.safe.text import printable
from ferbatch.scoring._images import ANNOTATIONS_MARKER, ImageError, as_text, decode, normalise_roots, read_bytes
from ferbatch.scoring._pipeline import ScoredImage
from ferbatch.scoring._sentiment import SentimentMap

log = logging.getLogger(__name__)

_COLOURS = {"positive": (60, 180, 75), "negative": (40, 40, 220), "neutral": (200, 160, 40)}  # BGR
# A JPEG comment (COM segment) right after the start-of-image marker: who wrote the file, and from which photo.
_SIGNATURE = b"ferbatch annotated copy of "
_MAX_PAYLOAD = 65533 - len(_SIGNATURE)  # a segment's length field counts itself and holds at most 65535
_MAX_NAMES = 100  # copies of different photos that want one name: x.jpg, x.png.jpg, x.png-2.jpg, ...
MARKER_TEXT = ("Annotated copies by `ferbatch score --annotate` or `ferbatch analyze --annotate`; "
               "ferbatch never scans this folder.\n")


def draw(rgb: np.ndarray, scored: ScoredImage, sentiments: list[str]) -> np.ndarray:
    """BGR image with a box and 'Emotion 87%' per face, coloured by sentiment."""
    canvas = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    thickness = max(2, round(max(canvas.shape[:2]) / 500))
    for face, probabilities, sentiment in zip(scored.prepared.faces, scored.probabilities, sentiments, strict=True):
        colour = _COLOURS[sentiment]
        top = int(probabilities.argmax())
        x, y, w, h = (round(v) for v in (face.x, face.y, face.w, face.h))
        cv2.rectangle(canvas, (x, y), (x + w, y + h), colour, thickness)
        label = f"{CLASS_NAMES[top]} {probabilities[top]:.0%}"
        scale = max(0.5, w / 250)
        (tw, th), _ = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        cv2.rectangle(canvas, (x, max(0, y - th - 8)), (x + tw + 6, y), colour, -1)
        cv2.putText(canvas, label, (x + 3, y - 5), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thickness)
    return canvas


def _overlap(a: Path, b: Path) -> str | None:
    """How folder `a` lies against folder `b`: "is", "inside" or "holds"; None when apart."""
    if a == b:
        return "is"
    if b in a.parents:
        return "inside"
    if a in b.parents:
        return "holds"
    return None


def _real(path: Path) -> Path:
    try:
        return Path(os.path.realpath(path))
    except OSError:
        return Path(os.path.abspath(path))


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:
        return False


def check_annotations_folder(folder: str | Path, scanned: Sequence[str | Path] = (),
                             out_dir: str | Path | None = None) -> Path:
    """Refuse, in one line, an --annotate folder whose copies could replace or hide a file ferbatch did not write.

    Refused: a scanned folder, a folder inside one or holding one (for a file named directly: its own folder or one
    above it, a folder below it is fine), the report folder or one inside or around it, something that is not a
    folder, and an existing folder with other files in it that no earlier --annotate marked. Returns the folder.
    """
    folder = Path(folder)
    real = _real(folder)
    what = "--annotate"
    for root in normalise_roots(list(scanned)):
        directory = _is_dir(root)
        base = _real(root if directory else root.parent)
        relation = _overlap(real, base)
        if relation is None or (not directory and relation == "inside"):
            continue
        place = {"is": "is", "inside": "is inside", "holds": "holds"}[relation]
        kind = "the scanned folder" if directory else "the folder of"
        named = printable(str(root))
        raise FerbatchError(f"{printable(str(folder))}: {what} {place} {kind} {named}; the copies would replace "
                            "or hide photos there. Give a folder of its own, outside the photos' folders")
    if out_dir is not None:
        relation = _overlap(real, _real(Path(out_dir)))
        if relation is not None:
            place = {"is": "is", "inside": "is inside", "holds": "holds"}[relation]
            raise FerbatchError(f"{printable(str(folder))}: {what} {place} the report folder {printable(str(out_dir))}"
                                "; give a folder of its own")
    try:
        status = os.stat(folder)
    except FileNotFoundError:
        return folder
    except OSError as exc:
        raise FerbatchError(f"{printable(str(folder))}: cannot use it for annotated copies "
                            f"({exc.strerror or exc})") from None
    if not stat.S_ISDIR(status.st_mode):
        raise FerbatchError(f"{printable(str(folder))}: not a folder; {what} takes a folder for the copies")
    try:
        marked = os.path.isfile(folder / ANNOTATIONS_MARKER)
        others = not marked and next(os.scandir(folder), None) is not None
    except OSError as exc:
        raise FerbatchError(f"{printable(str(folder))}: cannot use it for annotated copies "
                            f"({exc.strerror or exc})") from None
    if others:
        raise FerbatchError(f"{printable(str(folder))}: holds files ferbatch did not write; {what} takes a new or "
                            "empty folder, or one an earlier --annotate wrote")
    return folder


def _signed(jpeg: bytes, source: bytes) -> bytes:
    payload = _SIGNATURE + source[:_MAX_PAYLOAD]
    return jpeg[:2] + b"\xff\xfe" + struct.pack(">H", len(payload) + 2) + payload + jpeg[2:]


def _signed_by(path: Path) -> bytes | None:
    """The photo a copy at `path` was drawn from, by its comment; None when ferbatch did not write it."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    with open(descriptor, "rb", closefd=True) as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            return None
        head = handle.read(6)
        if len(head) < 6 or head[:4] != b"\xff\xd8\xff\xfe":
            return None
        payload = handle.read(struct.unpack(">H", head[4:])[0] - 2)
    return payload[len(_SIGNATURE):] if payload.startswith(_SIGNATURE) else None


def _names(name: str) -> Iterator[str]:
    primary = Path(name).with_suffix(".jpg").name
    yield primary
    if f"{name}.jpg" != primary:
        yield f"{name}.jpg"
    for n in range(2, _MAX_NAMES):
        yield f"{name}-{n}.jpg"


def _place(out_dir: Path, relative: Path, data: bytes, source: bytes) -> Path | None:
    folder = out_dir / relative.parent
    folder.mkdir(parents=True, exist_ok=True)
    if _overlap(_real(folder), _real(out_dir)) not in ("is", "inside"):  # a subfolder swapped for a link elsewhere
        log.warning("%s: not a folder inside %s; annotated copy not written", printable(as_text(folder)),
                    printable(as_text(out_dir)))
        return None
    for name in _names(relative.name):
        target = folder / name
        if create_new(target, data):
            return target
        if _signed_by(target) == source:  # this photo's copy from an earlier run
            replace_atomically(target, data)
            return target
    log.warning("%s: no free name for its annotated copy in %s", printable(as_text(relative)),
                printable(as_text(folder)))
    return None


def write_annotated(scored: ScoredImage, sentiments: list[str], out_dir: str | Path) -> Path | None:
    """Write `out_dir/<relative path>.jpg` (or the next free name); images that could not be decoded are skipped,
    and a copy that cannot be written is a warning, never the end of the run."""
    file = scored.prepared.file
    try:
        rgb = decode(read_bytes(file, max_bytes=file.bytes or 0)).pixels  # as scored: a file grown since is left
    except ImageError:
        return None
    ok, encoded = cv2.imencode(".jpg", draw(rgb, scored, sentiments), [cv2.IMWRITE_JPEG_QUALITY, 90])
    if not ok:
        return None
    source = as_text(file.absolute).encode("utf-8")
    try:
        return _place(Path(out_dir), file.path, _signed(encoded.tobytes(), source), source)
    except OSError as exc:
        log.warning("%s: annotated copy not written (%s)", printable(as_text(file.path)), exc.strerror or exc)
        return None


def mark_annotations_folder(out_dir: str | Path) -> Path:
    """Create the folder if needed and mark it with ANNOTATIONS_MARKER, so no later scan scores the copies."""
    folder = Path(out_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        marker = folder / ANNOTATIONS_MARKER
        if not os.path.lexists(marker):
            create_new(marker, MARKER_TEXT.encode())
    except OSError as exc:
        raise FerbatchError(f"{printable(str(folder))}: cannot write annotated copies there "
                            f"({exc.strerror or exc})") from None
    return folder


def annotator(out_dir: str | Path, sentiment: SentimentMap) -> Callable[[ScoredImage], None]:
    """An `on_image` callback that writes an annotated copy of every image with faces.

    Marks `out_dir` with ANNOTATIONS_MARKER first, so no later scan scores the copies. Check the folder with
    `check_annotations_folder` before (the run and the commands do).
    """
    mark_annotations_folder(out_dir)

    def annotate(scored: ScoredImage) -> None:
        if scored.prepared.faces:
            write_annotated(scored, list(sentiment.label(scored.probabilities.argmax(axis=1))), out_dir)

    return annotate
