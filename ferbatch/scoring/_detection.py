"""Face detection (OpenCV YuNet) and FER-style face crops.

A detector is anything with `detect(rgb) -> list[Face]`; tests inject fakes through the same interface.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import cv2
import numpy as np

from ferbatch.classes import IMAGE_SIZE
from ferbatch.config import ScoreSettings

YUNET_FILE = "face_detection_yunet_2023mar.onnx"


@dataclass(frozen=True)
class Face:
    """A detected face in original image coordinates."""

    x: float
    y: float
    w: float
    h: float
    score: float
    # Five landmarks (x, y): right eye, left eye, nose tip, right and left mouth corners (subject's sides);
    # None when a detector gives none.
    landmarks: tuple[tuple[float, float], ...] | None = None

    @property
    def area(self) -> float:
        return self.w * self.h

    def scaled(self, factor: float) -> Face:
        """The same face in an image `factor` times the size."""
        landmarks = tuple((x * factor, y * factor) for x, y in self.landmarks) if self.landmarks else None
        return Face(self.x * factor, self.y * factor, self.w * factor, self.h * factor, self.score, landmarks)


@runtime_checkable
class FaceDetector(Protocol):
    name: str

    def detect(self, rgb: np.ndarray, scale: float = 1.0) -> list[Face]:
        """Faces in original coordinates; `scale` is rgb's size relative to the original image."""
        ...


@dataclass(frozen=True, kw_only=True)
class DetectorSettings:
    input_long_side: int
    score_threshold: float
    nms_threshold: float = 0.3
    min_face: int  # pixels, in original coordinates
    # Images at least this elongated (long side / short side) are also searched in overlapping tiles, so
    # shrinking the long side to input_long_side cannot take their faces under what YuNet finds (a
    # 10000x100 panorama shrunk whole would make a 100 px face 10 px).
    tile_aspect: float = 2.0
    # The smallest face side (px) YuNet finds reliably in its own input: of faces from the sample photos pasted
    # at one size on a grey 960 px canvas, it found 0.88 at 20 px, 0.78 at 18, 0.24 at 14-16, none at 12.
    reach: int = 20
    # Photos over this many pixels (larger than phone photos) whose shrink to input_long_side would take a
    # min_face face under `reach` are also searched in tiles, at the scale that keeps min_face at `reach`;
    # smaller photos keep the one whole-image pass (at 960 px it finds faces from 20 px in a 960 px photo to
    # 40 px in a 1920x1080 and 84 px in a 4032x3024 one).
    tile_above_pixels: int = 16_000_000

    @classmethod
    def from_settings(cls, settings: ScoreSettings) -> DetectorSettings:
        return cls(input_long_side=settings.detector_size, score_threshold=settings.score_threshold,
                   min_face=settings.min_face)


class YuNetDetector:
    """cv2.FaceDetectorYN on a copy resized to at most `input_long_side`; one instance per thread."""

    def __init__(self, model_path: str | Path, settings: DetectorSettings) -> None:
        self.model_path = str(model_path)
        if not Path(self.model_path).is_file():
            raise FileNotFoundError(f"face detector model not found: {self.model_path}")
        self.settings = settings
        self.name = f"yunet_2023mar@{settings.input_long_side}px,score>={settings.score_threshold}"
        self._local = threading.local()

    def _detector(self, width: int, height: int) -> cv2.FaceDetectorYN:
        detector = getattr(self._local, "detector", None)
        if detector is None:
            detector = cv2.FaceDetectorYN.create(
                self.model_path, "", (width, height), self.settings.score_threshold, self.settings.nms_threshold, 5000
            )
            self._local.detector = detector
        detector.setInputSize((width, height))
        return detector

    def _rows(self, rgb: np.ndarray) -> np.ndarray:
        """YuNet's rows (box, 5 landmarks, score) in `rgb` coordinates, for a copy shrunk to input_long_side."""
        height, width = rgb.shape[:2]
        shrink = min(1.0, self.settings.input_long_side / max(height, width))
        small = rgb if shrink == 1.0 else cv2.resize(
            rgb, (max(1, round(width * shrink)), max(1, round(height * shrink))), interpolation=cv2.INTER_AREA
        )
        bgr = cv2.cvtColor(np.ascontiguousarray(small), cv2.COLOR_RGB2BGR)
        _, rows = self._detector(bgr.shape[1], bgr.shape[0]).detect(bgr)
        if rows is None:
            return np.zeros((0, 15), np.float32)
        rows = rows[:, :15].astype(np.float64)
        rows[:, :14] /= shrink
        return rows

    def _window_rows(self, rgb: np.ndarray, tile: tuple[int, int], overlap: tuple[int, int]) -> np.ndarray:
        """Rows from the whole image and from overlapping (height, width) windows over it, de-duplicated.

        Every face up to the overlap lies whole in some window; a box touching a window's inner edge is a cut
        face and is dropped (its whole copy is in the neighbour). The whole-image pass keeps the faces larger
        than the overlap. Then non-maximum suppression, as within one YuNet call.
        """
        height, width = rgb.shape[:2]
        found = [self._rows(rgb)]
        edge = 2.0  # pixels: a box this close to an inner window edge is cut by it
        for top in _starts(height, tile[0], overlap[0]):
            for left in _starts(width, tile[1], overlap[1]):
                bottom, right = min(height, top + tile[0]), min(width, left + tile[1])
                rows = self._rows(rgb[top:bottom, left:right])
                x, y, w, h = rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3]
                cut = (((left > 0) & (x < edge)) | ((right < width) & (x + w > right - left - edge))
                       | ((top > 0) & (y < edge)) | ((bottom < height) & (y + h > bottom - top - edge)))
                rows = rows[~cut]
                rows[:, [0, *range(4, 14, 2)]] += left
                rows[:, [1, *range(5, 14, 2)]] += top
                found.append(rows)
        rows = np.concatenate(found)
        if len(rows) < 2:
            return rows
        keep = cv2.dnn.NMSBoxes(rows[:, :4].tolist(), rows[:, 14].tolist(), self.settings.score_threshold,
                                self.settings.nms_threshold)
        return rows[np.asarray(keep, dtype=int).reshape(-1)]

    def _tiled_rows(self, rgb: np.ndarray) -> np.ndarray:
        """An elongated image: the whole, and windows along its long side as long as the short side or
        input_long_side, whichever is more, so each is shrunk no more than a square photo of the short side
        would be. They overlap by the short side (at most half a window), so every face up to that size lies
        whole in some window."""
        height, width = rgb.shape[:2]
        short_side = min(height, width)
        tile = max(short_side, self.settings.input_long_side)
        overlap = min(short_side, tile // 2)
        if height > width:
            return self._window_rows(rgb, (tile, width), (overlap, 0))
        return self._window_rows(rgb, (height, tile), (0, overlap))

    def search_scale(self, width: int, height: int) -> float | None:
        """The scale (of the full-size photo) its tiles are searched at, or None when one whole-image pass
        reaches min_face: photos up to tile_above_pixels, and those whose shrink keeps min_face at `reach`."""
        settings = self.settings
        whole = min(1.0, settings.input_long_side / max(width, height))
        if width * height <= settings.tile_above_pixels or settings.min_face * whole >= settings.reach:
            return None
        return min(1.0, settings.reach / settings.min_face)

    def _grid_rows(self, rgb: np.ndarray, factor: float) -> np.ndarray:
        """A large photo: the whole, and square windows searched `factor` times their size in `rgb`.

        The windows overlap by twice the smallest face the whole-image pass reaches (at most half a window),
        so each face too small for that pass lies whole in some window.
        """
        height, width = rgb.shape[:2]
        tile = max(1, round(self.settings.input_long_side / min(1.0, factor)))
        whole_reach = self.settings.reach * max(height, width) / self.settings.input_long_side
        overlap = min(tile // 2, math.ceil(2 * whole_reach))
        return self._window_rows(rgb, (tile, tile), (overlap, overlap))

    def detect(self, rgb: np.ndarray, scale: float = 1.0) -> list[Face]:
        height, width = rgb.shape[:2]
        elongated = max(height, width) >= self.settings.tile_aspect * min(height, width)
        search = self.search_scale(round(width / scale), round(height / scale))
        if elongated and max(height, width) > self.settings.input_long_side:
            rows = self._tiled_rows(rgb)
        elif search is not None and max(height, width) > self.settings.input_long_side:
            rows = self._grid_rows(rgb, search / scale)  # rgb may be reduced: searched at most at its own size
        else:
            rows = self._rows(rgb)
        faces = []
        for row in rows:  # rgb coordinates -> original coordinates
            x, y, w, h = (float(v) / scale for v in row[:4])
            if min(w, h) < self.settings.min_face:
                continue
            landmarks = tuple((float(row[4 + 2 * i]) / scale, float(row[5 + 2 * i]) / scale) for i in range(5))
            faces.append(Face(x, y, w, h, float(row[14]), landmarks))
        return sorted(faces, key=lambda f: (f.y, f.x))


def _starts(extent: int, tile: int, overlap: int) -> list[int]:
    """Where windows of `tile` overlapping by `overlap` start so they cover 0..extent (one when it fits)."""
    if extent <= tile:
        return [0]
    return [*range(0, extent - tile, tile - overlap), extent - tile]


def eye_angle(face: Face) -> float:
    """Degrees to rotate the image so the eyes are level (0 without landmarks)."""
    if not face.landmarks:
        return 0.0
    # Order the eyes by x so a detector's left/right convention cannot turn a face upside down.
    (ax, ay), (bx, by) = sorted(face.landmarks[:2])
    return math.degrees(math.atan2(by - ay, bx - ax))


def crop_face(grey: np.ndarray, face: Face, margin: float = 0.0, size: int = IMAGE_SIZE, shift: float = 0.0,
              level_above: float | None = 0.0) -> np.ndarray:
    """A size x size grey crop around the face, framed about like FER2013 faces.

    The crop is a square of side max(w, h) * (1 + 2 * margin) centred on the box moved down by `shift`
    times that side, rotated about its centre to level the eyes when they tilt by more than `level_above`
    degrees (0: always; None: never). Pixels outside the image repeat the border.
    benchmarks/experiments/through_detection.py chooses the framing on PublicTest.
    """
    angle = eye_angle(face)
    align = level_above is not None and abs(angle) > level_above
    side = max(face.w, face.h) * (1 + 2 * margin)
    centre = (face.x + face.w / 2, face.y + face.h / 2 + shift * side)
    # Rotate about the face centre and move it to the centre of a side x side canvas, then shrink
    # with INTER_AREA (warpAffine alone would alias when a large face becomes 48 px).
    canvas = max(size, math.ceil(side))
    matrix = cv2.getRotationMatrix2D(centre, angle if align else 0.0, canvas / side)
    matrix[:, 2] += (canvas / 2 - centre[0], canvas / 2 - centre[1])
    upright = cv2.warpAffine(grey, matrix, (canvas, canvas), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    if canvas == size:
        return upright
    return cv2.resize(upright, (size, size), interpolation=cv2.INTER_AREA)


def default_detector_path(models_dir: str | Path | None = None) -> Path:
    """The YuNet model in `models_dir`, else the one shipped in the project's models/."""
    candidates = [Path(models_dir) / YUNET_FILE] if models_dir else []
    candidates.append(Path(__file__).resolve().parents[2] / "models" / YUNET_FILE)
    return next((p for p in candidates if p.is_file()), candidates[0])
