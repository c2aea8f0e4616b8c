"""Per-face answers in one call: `analyze(path_or_array) -> list[Face]`, with no Prefect and no output folder.

The same detector, crop framing, classifier and sentiment map as `ferbatch score`, through the same pipeline
functions (`ferbatch.scoring`), so a file gives the numbers its rows in a scoring run's reports hold.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ferbatch.classes import CLASS_NAMES
from ferbatch.config import ScoreSettings
from ferbatch.errors import FerbatchError
from ferbatch.scoring import (
    Components,
    PipelineSettings,
    ScoredImage,
    ScoringComponents,
    SentimentMap,
    crop_faces,
    face_verdicts,
    image_verdict,
    scan,
    score_images,
)
from ferbatch.scoring import Face as DetectedFace

Box = tuple[int, int, int, int]
Point = tuple[float, float]


@dataclass(frozen=True)
class Face:
    """One face in an image, as `ferbatch score` writes it to the faces table.

    `box` is (x, y, width, height) in pixels of the original, upright image; `landmarks` are the detector's
    five points (x, y): right eye, left eye, nose tip, right and left mouth corners (the subject's sides).
    `probabilities` maps each class name (`ferbatch.CLASS_NAMES`) to its probability; `emotion` is the most
    probable one, `sentiment` its positive / negative / neutral label, and `score` the sentiment score in
    [-1, 1]: P(positive emotions) - P(negative emotions).
    """

    box: Box
    landmarks: tuple[Point, ...] | None
    detection_score: float
    probabilities: dict[str, float]
    emotion: str
    sentiment: str
    score: float

    @property
    def probability(self) -> float:
        """The probability of `emotion`."""
        return self.probabilities[self.emotion]

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ImageAnalysis:
    """One image's faces and, when it has any, its verdict: the area-weighted mean of its faces, as the images
    table holds it. `status` is `ok`, `no_face` or `error` (then `error` says why). `path` is the file's absolute
    path and `root` the folder it was found in (a file named directly: its own folder)."""

    path: str
    root: str
    status: str
    error: str | None
    faces: list[Face]
    emotion: str | None = None
    sentiment: str | None = None
    score: float | None = None
    probabilities: dict[str, float] | None = None

    @property
    def probability(self) -> float | None:
        return self.probabilities[self.emotion] if self.probabilities and self.emotion else None

    def to_dict(self) -> dict:
        return {**asdict(self), "probability": self.probability}


def _faces(detected: list[DetectedFace], probabilities: np.ndarray, sentiment: SentimentMap) -> list[Face]:
    return [
        Face(box=(round(face.x), round(face.y), round(face.w), round(face.h)), landmarks=face.landmarks,
             detection_score=float(face.score),
             probabilities={name: float(p) for name, p in zip(CLASS_NAMES, row, strict=True)},
             emotion=verdict["emotion"], sentiment=str(verdict["sentiment"]), score=verdict["sentiment_score"])
        for face, row, verdict in zip(detected, probabilities, face_verdicts(probabilities, sentiment), strict=True)
    ]


def _as_rgb(image: np.ndarray) -> np.ndarray:
    """An (h, w, 3) uint8 RGB array; grey (h, w) and RGBA (h, w, 4) arrays are accepted too."""
    array = np.asarray(image)
    if array.dtype != np.uint8:
        raise FerbatchError(f"an image array must be uint8 (0-255), not {array.dtype}")
    if array.ndim == 2:
        array = np.repeat(array[:, :, None], 3, axis=2)
    elif array.ndim == 3 and array.shape[2] == 4:
        array = array[:, :, :3]
    if array.ndim != 3 or array.shape[2] != 3 or min(array.shape[:2]) < 1:
        raise FerbatchError(f"an image array must be (height, width, 3) RGB, not {array.shape}")
    return np.ascontiguousarray(array)


class Analyzer:
    """The detector and the classifier loaded once, for many calls (`ferbatch.analyze` keeps one per model).

    `settings` are the scoring settings (detector size, thresholds, flip TTA...; default: `ScoreSettings()`),
    `sentiment` changes the default emotion -> sentiment map, e.g. {"Surprise": "positive"}, and `components`
    replaces the registry's model and YuNet (anything with `detector()`, `classifier()` and `model_version`).
    """

    def __init__(self, *, model: str | None = None, models_dir: str | Path | None = None,
                 settings: ScoreSettings | None = None, sentiment: Mapping[str, str] | None = None,
                 components: ScoringComponents | None = None) -> None:
        self.settings = settings or ScoreSettings()
        self.sentiment = SentimentMap.with_overrides(sentiment)
        self.components = components or Components.for_run(self.settings, model, models_dir)
        self.pipeline = PipelineSettings.from_settings(self.settings)
        self.model_version = self.components.model_version
        self._loaded = False

    def _load(self) -> None:
        """Load the detector and the model once, with TensorFlow's, absl's, CUDA's and OpenCV's start-up lines
        kept off stderr (as the command does): a script using the API prints only what it prints."""
        if self._loaded:
            return
        from ferbatch.runtime.quiet import native_stderr_filtered

        with native_stderr_filtered():
            detector = self.components.detector()
            self.components.classifier()
            detector.detect(np.zeros((64, 64, 3), np.uint8), 1.0)  # OpenCV speaks on its first inference
        self._loaded = True

    def images(self, paths: Iterable[str | Path], *, include: Iterable[str] = (), exclude: Iterable[str] = (),
               skip_dirs: Iterable[str | Path] = (),
               on_image: Callable[[ScoredImage], None] | None = None) -> Iterator[ImageAnalysis]:
        """Every image file named or under the folders named, in scan order, as `ferbatch score` reads them.

        A file that cannot be read or decoded comes back with status `error`, never as an exception.
        `on_image(scored)` is called with each pipeline result (the `--annotate` writer is one).
        """
        self._load()
        files = scan(list(paths), list(include), list(exclude), skip_dirs=list(skip_dirs))
        for scored in score_images(files, self.components.detector(), self.components.classifier, self.pipeline):
            if on_image:
                on_image(scored)
            yield self._image(scored)

    def _image(self, scored: ScoredImage) -> ImageAnalysis:
        item = scored.prepared
        path, root = str(item.file.absolute), str(item.file.root)
        if item.error:
            return ImageAnalysis(path, root, "error", item.error, [])
        if not item.faces:
            return ImageAnalysis(path, root, "no_face", None, [])
        verdict = image_verdict(item.faces, scored.probabilities, self.sentiment)
        return ImageAnalysis(
            path, root, "ok", None, _faces(item.faces, scored.probabilities, self.sentiment),
            emotion=verdict["emotion"], sentiment=str(verdict["sentiment"]), score=verdict["sentiment_score"],
            probabilities={name: verdict[f"p_{name.lower()}"] for name in CLASS_NAMES},
        )

    def faces(self, image: str | Path | np.ndarray) -> list[Face]:
        """The faces in one image file or RGB array (an array is taken at its full size, as given)."""
        if isinstance(image, np.ndarray):
            pixels = int(np.prod(image.shape[:2])) if image.ndim >= 2 else 0
            if pixels > self.settings.max_pixels:  # the limit files have (decompression bombs), for arrays too
                raise FerbatchError(f"an image array of {image.shape[1]}x{image.shape[0]} pixels is over the "
                                    f"limit of {self.settings.max_pixels:,} (ScoreSettings.max_pixels)")
            rgb = _as_rgb(image)
            self._load()
            detected = self.components.detector().detect(rgb, 1.0)
            if not detected:
                return []
            probabilities = self.components.classifier().predict(crop_faces(rgb, detected, 1.0, self.pipeline))
            return _faces(detected, probabilities, self.sentiment)
        path = Path(image)
        if not path.exists():
            raise FerbatchError(f"{path}: no such file")
        if path.is_dir():
            raise FerbatchError(f"{path}: is a folder; analyze takes one image (Analyzer.images takes folders)")
        (result,) = self.images([path])
        if result.error:
            raise FerbatchError(f"{path}: {result.error}")
        return result.faces


_ANALYZERS: dict[tuple, Analyzer] = {}
_ANALYZERS_LOCK = threading.Lock()


def analyze(image: str | Path | np.ndarray, *, model: str | None = None, models_dir: str | Path | None = None,
            sentiment: Mapping[str, str] | None = None) -> list[Face]:
    """The faces in one image file or RGB uint8 array, each with its emotion probabilities and sentiment.

    Uses the registry's current model (or `model`) with the same detector and framing as `ferbatch score`;
    the model is loaded on the first call and kept for the next ones. A file that cannot be read or decoded
    raises `ferbatch.FerbatchError`; an image without faces gives an empty list.
    """
    key = (model, str(models_dir) if models_dir else None, tuple(sorted((sentiment or {}).items())))
    with _ANALYZERS_LOCK:
        if key not in _ANALYZERS:
            _ANALYZERS[key] = Analyzer(model=model, models_dir=models_dir, sentiment=sentiment)
        analyzer = _ANALYZERS[key]
    return analyzer.faces(image)
