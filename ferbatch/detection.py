"""Face detection (OpenCV YuNet) and FER-style face crops.

A detector is anything with `detect(rgb) -> list[Face]`; tests inject fakes through the same interface.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from ferbatch.classes import IMAGE_SIZE

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


class FaceDetector(Protocol):
    name: str

    def detect(self, rgb: np.ndarray, scale: float = 1.0) -> list[Face]:
        """Faces in original coordinates; `scale` is rgb's size relative to the original image."""
        ...


@dataclass(frozen=True)
class DetectorSettings:
    # At 960 px YuNet finds exactly the faces in the sample photos and every face pasted into the 1080p
    # benchmark corpus, in under half the time of 1280 px (benchmarks/score.py; the README has figures).
    input_long_side: int = 960
    score_threshold: float = 0.8
    nms_threshold: float = 0.3
    min_face: int = 20  # pixels, in original coordinates


class YuNetDetector:
    """cv2.FaceDetectorYN on a copy resized to at most `input_long_side`; one instance per thread."""

    def __init__(self, model_path: str | Path, settings: DetectorSettings = DetectorSettings()) -> None:
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

    def detect(self, rgb: np.ndarray, scale: float = 1.0) -> list[Face]:
        height, width = rgb.shape[:2]
        shrink = min(1.0, self.settings.input_long_side / max(height, width))
        small = rgb if shrink == 1.0 else cv2.resize(
            rgb, (max(1, round(width * shrink)), max(1, round(height * shrink))), interpolation=cv2.INTER_AREA
        )
        to_input = shrink * scale  # original coordinates -> detector input coordinates
        bgr = cv2.cvtColor(small, cv2.COLOR_RGB2BGR)
        _, rows = self._detector(bgr.shape[1], bgr.shape[0]).detect(bgr)
        faces = []
        for row in rows if rows is not None else ():
            x, y, w, h = (float(v) / to_input for v in row[:4])
            if min(w, h) < self.settings.min_face:
                continue
            landmarks = tuple((float(row[4 + 2 * i]) / to_input, float(row[5 + 2 * i]) / to_input) for i in range(5))
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
    candidates.append(Path(__file__).resolve().parent.parent / "models" / YUNET_FILE)
    return next((p for p in candidates if p.is_file()), candidates[0])
