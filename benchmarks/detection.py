"""What face detection costs per photo, by worker threads and OpenCV's own thread count.

    python benchmarks/detection.py [--n 100] [--faces 7] [--large-share 0.1] [--corpus-dir DIR]

Decodes each photo once as scoring does (reduced to the detector's input size), then times YuNet alone over
all of them: with 1 and 2 worker threads (scoring's --workers) and OpenCV's thread pool at 1 and at its
default. Prints wall milliseconds per photo for each, and the faces found, which must not change.
"""

from __future__ import annotations

import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    from corpus import corpus_photos

    from ferbatch.config import ScoreSettings
    from ferbatch.scoring import decode
    from ferbatch.scoring._detection import DetectorSettings, YuNetDetector, default_detector_path

    photos = corpus_photos(__doc__.splitlines()[0])
    settings = ScoreSettings()
    images = []
    for data in photos:
        decoded = decode(data, settings.max_pixels, min_long_side=settings.detector_size)
        # A copy: the decode budget is given back only when the decoded array goes.
        images.append((np.array(decoded.pixels), decoded.scale))
        del decoded
    detector = YuNetDetector(default_detector_path(), DetectorSettings.from_settings(settings))

    def faces_in(index: int) -> int:
        pixels, scale = images[index]
        return len(detector.detect(pixels, scale))

    default_threads = cv2.getNumThreads()
    print(f"{len(images)} photos, detector at {settings.detector_size} px, OpenCV default threads "
          f"{default_threads}")
    for workers in (1, 2):
        for cv_threads in sorted({1, default_threads}):
            cv2.setNumThreads(cv_threads)
            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(faces_in, range(min(8, len(images)))))  # each thread's detector, warmed up
                started = time.perf_counter()
                found = sum(pool.map(faces_in, range(len(images))))
                per_photo = (time.perf_counter() - started) / len(images) * 1000
            print(f"workers {workers}, OpenCV threads {cv_threads}: {per_photo:5.1f} ms a photo, {found} faces")
    cv2.setNumThreads(default_threads)


if __name__ == "__main__":
    main()
