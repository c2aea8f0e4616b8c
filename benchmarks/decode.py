"""What each JPEG decode costs on benchmark photos: full colour, full grey, and reduced for the detector.

    python benchmarks/decode.py [--n 100] [--faces 7] [--large-share 0.1] [--corpus-dir DIR]

One thread (OpenCV's own threads off), each decode of each photo timed once after a warm-up, grouped by photo
size. Also prints how far the grey decode is from the colour decode turned grey (mean and largest difference
in grey levels), which is what cropping small faces from the grey decode changes.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    from corpus import corpus_photos

    from ferbatch.scoring import decode

    photos = corpus_photos(__doc__.splitlines()[0])
    cv2.setNumThreads(1)
    kinds = {"colour, full size": {}, "grey, full size": {"grey": True},
             "colour, reduced to 960 px": {"min_long_side": 960}}
    timings: dict[tuple[str, str], list[float]] = {}
    differences = []
    for data in photos:
        size = "12 MP" if len(decode(data, min_long_side=960).pixels) > 600 else "1080p"
        for kind, options in kinds.items():
            decode(data, **options)  # warm-up: file cache, allocator
            started = time.perf_counter()
            decode(data, **options)
            timings.setdefault((size, kind), []).append(time.perf_counter() - started)
        grey = decode(data, grey=True).pixels.astype(np.int16)
        turned = cv2.cvtColor(decode(data).pixels, cv2.COLOR_RGB2GRAY).astype(np.int16)
        differences.append((np.abs(grey - turned).mean(), np.abs(grey - turned).max()))
    print(f"{'photos':8} {'decode':28} {'n':>4} {'median ms':>10}")
    for (size, kind), seconds in sorted(timings.items()):
        print(f"{size:8} {kind:28} {len(seconds):>4} {1000 * statistics.median(seconds):>10.1f}")
    print(f"grey decode vs colour turned grey: mean |difference| {np.mean([d[0] for d in differences]):.3f}, "
          f"largest {max(d[1] for d in differences)} grey levels")


if __name__ == "__main__":
    main()
