"""The scoring pipeline: decode, detect, crop, classify in batches across images.

The pipeline works through chunks of images, so memory stays flat however many images there are:
threads decode and detect a chunk (OpenCV and Pillow release the GIL), then every face of the chunk
goes to the classifier in fixed-size batches.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from itertools import islice

import cv2
import numpy as np

from ferbatch.classes import CLASS_NAMES, IMAGE_SIZE
from ferbatch.config import DEFAULT_MAX_BYTES, ScoreSettings
from ferbatch.safe.text import printable
from ferbatch.scoring._classifier import EmotionClassifier
from ferbatch.scoring._detection import Face, FaceDetector, crop_face
from ferbatch.scoring._images import ImageError, ImageFile, as_text, decode, image_id, read

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class PipelineSettings:
    """How the pipeline treats each image: the scoring settings' share, plus fixed internals."""

    # The crop framing, chosen on FER2013 PublicTest for the shipped model by
    # benchmarks/experiments/through_detection.py (docs/model.md): YuNet's box is about 0.81 x 1.03 of the FER
    # frame; a square of 0.95 times its side, not levelled by the eyes, gave PublicTest 0.697 through detection
    # (0.703 direct on the same faces).
    crop_margin: float = -0.025
    level_above: float | None = None  # level the eyes past this tilt in degrees (None: never, 0: always)
    crop_shift: float = 0.0  # move the crop down by this fraction of its side (negative: up)
    light: str = "none"  # "equalize": histogram-equalise each 48x48 crop (see LIGHT_NORMALISATIONS)
    max_pixels: int
    max_bytes: int = DEFAULT_MAX_BYTES  # larger files are refused from fstat, unread
    # JPEGs are decoded at reduced size down to this long side (None: always full size); match the
    # detector's input size, since the detector would shrink the image to that anyway.
    decode_long_side: int | None
    # Faces smaller than this in the reduced copy are cropped from a full decode instead. Measured on
    # the benchmark corpus, top-1 agreement of reduced and full crops is 0.91 at 24-48 px and 0.93
    # above; mean |p| difference 0.021 vs 0.013.
    min_crop_source: int = 24
    workers: int
    chunk_images: int = 64

    def __post_init__(self) -> None:
        if self.light not in LIGHT_NORMALISATIONS:
            raise ValueError(f"light must be one of {', '.join(LIGHT_NORMALISATIONS)}, not {self.light!r}")

    @classmethod
    def from_settings(cls, settings: ScoreSettings, **overrides: object) -> PipelineSettings:
        values = {"max_pixels": settings.max_pixels, "max_bytes": int(settings.max_bytes),
                  "decode_long_side": settings.detector_size,
                  "workers": settings.workers}
        return cls(**{**values, **overrides})


@dataclass
class PreparedImage:
    """One image after decode and detection: its faces cropped, or the reason it failed."""

    file: ImageFile
    image_id: str | None = None
    width: int | None = None
    height: int | None = None
    taken_at: datetime | None = None
    faces: list[Face] = field(default_factory=list)
    crops: np.ndarray = field(default_factory=lambda: np.zeros((0, IMAGE_SIZE, IMAGE_SIZE), np.uint8))
    error: str | None = None
    seconds: Counter = field(default_factory=Counter)  # per stage, this image's share


def prepare(file: ImageFile, detector: FaceDetector, settings: PipelineSettings) -> PreparedImage:
    """Decode, detect and crop one image; every failure becomes `error`, never an exception."""
    result = PreparedImage(file)
    clock = _Clock(result.seconds)
    try:
        # bytes and mtime from the same read as the content (image_id)
        data, result.file = read(file, max_bytes=settings.max_bytes)
        result.image_id = image_id(data)
        clock.lap("read")
        decoded = decode(data, settings.max_pixels, min_long_side=settings.decode_long_side, known_id=result.image_id)
        result.width, result.height, result.taken_at = decoded.width, decoded.height, decoded.taken_at
        clock.lap("decode")
        search = getattr(detector, "search_scale", None)  # a detector that tiles large photos says how finely
        wanted = search(decoded.width, decoded.height) if search else None
        if wanted is not None and decoded.scale < wanted:
            long_side = math.ceil(max(decoded.width, decoded.height) * wanted)
            decoded = decode(data, settings.max_pixels, min_long_side=long_side, known_id=result.image_id)
            clock.lap("decode")
        faces = detector.detect(decoded.pixels, decoded.scale)
        clock.lap("detect")
        if faces:
            if decoded.scale < 1 and min(min(f.w, f.h) for f in faces) * decoded.scale < settings.min_crop_source:
                # A face too small in the reduced copy: crop every face from the full-resolution image, decoded
                # grey since crops are grey (a 12 MP JPEG's luma decodes 3.5x faster than its colour).
                decoded = decode(data, settings.max_pixels, known_id=result.image_id, grey=True)
                clock.lap("decode")
            result.crops = crop_faces(decoded.pixels, faces, decoded.scale, settings)
            result.faces = faces
            clock.lap("crop")
    except ImageError as exc:
        result.error = str(exc)
    except Exception as exc:  # one odd file must not stop a night's run
        log.exception("unexpected failure on %s", printable(as_text(file.absolute)))
        result.error = f"internal error: {type(exc).__name__}: {exc}"
    return result


LIGHT_NORMALISATIONS = ("none", "equalize", "clahe")


def normalise_light(crop: np.ndarray, light: str) -> np.ndarray:
    """A 48x48 grey crop as is ("none"), histogram-equalised ("equalize") or with CLAHE ("clahe")."""
    if light == "equalize":
        return cv2.equalizeHist(crop)
    if light == "clahe":
        return cv2.createCLAHE(clipLimit=2.0, tileGridSize=(4, 4)).apply(crop)  # one per call: threads
    return crop


def crop_faces(pixels: np.ndarray, faces: Sequence[Face], scale: float, settings: PipelineSettings) -> np.ndarray:
    """The classifier's (n, 48, 48) grey crops of `faces` (original coordinates) from `pixels` (RGB or grey),
    which is `scale` times the original size: the one place the framing is applied, for files and arrays alike."""
    grey = pixels if pixels.ndim == 2 else cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY)
    return np.stack([normalise_light(crop_face(grey, face.scaled(scale), settings.crop_margin,
                                               shift=settings.crop_shift, level_above=settings.level_above),
                                     settings.light)
                     for face in faces])


class _Clock:
    """Adds the seconds since the previous lap to a per-stage total."""

    def __init__(self, totals: Counter) -> None:
        self.totals, self.last = totals, time.perf_counter()

    def lap(self, stage: str) -> None:
        now = time.perf_counter()
        self.totals[stage] += now - self.last
        self.last = now


@dataclass
class ScoredImage:
    prepared: PreparedImage
    probabilities: np.ndarray  # (n_faces, 7)


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def score_images(
    files: Iterable[ImageFile],
    detector: FaceDetector,
    classifier: EmotionClassifier | Callable[[], EmotionClassifier],
    settings: PipelineSettings,
    on_prepared: Callable[[], None] | None = None,
) -> Iterator[ScoredImage]:
    """Prepared and classified images, in input order, one chunk at a time.

    The threads decode and detect the next chunk while the classifier works on this one. `on_prepared` is
    called (from a worker thread) as each image is decoded and detected, before its chunk is classified:
    a chunk holds many images, so this is what lets a progress display move image by image. `classifier` may
    be a loader, called once the first chunk is submitted, so loading the model overlaps its detection.
    """
    with ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="ferbatch-detect") as pool:
        chunks = _chunks(files, settings.chunk_images)

        def prepare_one(file: ImageFile) -> PreparedImage:
            item = prepare(file, detector, settings)
            if on_prepared:
                on_prepared()  # before the future completes: counted by the time its chunk is classified
            return item

        def submit(chunk: list[ImageFile]) -> list:
            return [pool.submit(prepare_one, file) for file in chunk]

        pending = submit(next(chunks, []))
        if pending and not isinstance(classifier, EmotionClassifier):
            classifier = classifier()  # while the threads detect the first chunk; no files, no model
        while pending:
            upcoming = submit(next(chunks, []))
            prepared = [future.result() for future in pending]
            pending = upcoming
            crops = [p.crops for p in prepared if len(p.crops)]
            started = time.perf_counter()
            probabilities = classifier.predict(np.concatenate(crops)) if crops else np.zeros((0, len(CLASS_NAMES)))
            classify_share = (time.perf_counter() - started) / len(prepared)
            offset = 0
            for item in prepared:
                n = len(item.faces)
                item.seconds["classify"] += classify_share
                yield ScoredImage(item, probabilities[offset : offset + n])
                offset += n


def image_probabilities(faces: Sequence[Face], probabilities: np.ndarray) -> np.ndarray:
    """The area-weighted mean of an image's face probabilities."""
    areas = np.array([face.area for face in faces], dtype=np.float64)
    return (probabilities * (areas / areas.sum())[:, None]).sum(axis=0)
