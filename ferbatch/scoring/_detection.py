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

    def _tiled_rows(self, rgb: np.ndarray) -> np.ndarray:
        """Rows from the whole image and from overlapping tiles along its long side, de-duplicated.

        Tiles are as long as the short side or input_long_side, whichever is more, so each is shrunk no
        more than a square photo of the short side would be. They overlap by the short side (at most half a
        tile), so every face up to that size lies whole in some tile; a box touching a tile's inner edge
        is a cut face and is dropped (its whole copy is in the neighbour). The whole-image pass keeps the
        faces larger than the overlap. Then non-maximum suppression, as within one YuNet call.
        """
        height, width = rgb.shape[:2]
        transposed = height > width
        long_side, short_side = max(height, width), min(height, width)
        tile = max(short_side, self.settings.input_long_side)
        overlap = min(short_side, tile // 2)
        starts = [*range(0, long_side - tile, tile - overlap), long_side - tile]
        found = [self._rows(rgb)]
        edge = 2.0  # pixels: a box this close to an inner tile edge is cut by it
        for start in starts:
            piece = rgb[start : start + tile] if transposed else rgb[:, start : start + tile]
            rows = self._rows(piece)
            lo, size = (rows[:, 1], rows[:, 3]) if transposed else (rows[:, 0], rows[:, 2])
            cut = ((start > 0) & (lo < edge)) | ((start + tile < long_side) & (lo + size > tile - edge))
            rows = rows[~cut]
            rows[:, 1 if transposed else 0] += start
            rows[:, slice(5, 14, 2) if transposed else slice(4, 14, 2)] += start
            found.append(rows)
        rows = np.concatenate(found)
        if len(rows) < 2:
            return rows
        keep = cv2.dnn.NMSBoxes(rows[:, :4].tolist(), rows[:, 14].tolist(), self.settings.score_threshold,
                                self.settings.nms_threshold)
        return rows[np.asarray(keep, dtype=int).reshape(-1)]

    def detect(self, rgb: np.ndarray, scale: float = 1.0) -> list[Face]:
        height, width = rgb.shape[:2]
        elongated = max(height, width) >= self.settings.tile_aspect * min(height, width)
        if elongated and max(height, width) > self.settings.input_long_side:
            rows = self._tiled_rows(rgb)
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
    benchmarks/through_detection.py chooses the framing on PublicTest.
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
