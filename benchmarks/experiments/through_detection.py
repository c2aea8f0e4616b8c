"""FER2013 through the scoring path: detection, alignment, crop, classification, beside direct classification.

Each 48x48 face is upscaled (4x by default) and pasted at the centre of a larger grey canvas so YuNet can find
it, as a face in a photo would be found; the crop scoring makes of it is then classified. Reports the detection
rate and, on the faces found, the accuracy through detection beside direct classification of the same faces.
The crop framing (margin, vertical shift, eye levelling) is chosen on PublicTest only; PrivateTest is reported
for the chosen framing and for the current default.

    python benchmarks/experiments/through_detection.py --data ../shared/data/fer2013.csv.gz \
        [--model VERSION] [--limit N]
"""

from __future__ import annotations

import argparse
import itertools
import json
import pickle
import time
from pathlib import Path

import cv2
import numpy as np

from ferbatch.models import ModelRegistry
from ferbatch.scoring import DetectorSettings, KerasClassifier, YuNetDetector, crop_face, default_detector_path
from ferbatch.training import load_fer2013

MARGINS = (-0.1, -0.075, -0.05, -0.025, 0.0)
SHIFTS = (-0.04, 0.0, 0.04)
# Eye levelling: always (0), only past the training augmentation's 10 degrees, never (None).
LEVEL_ABOVE = (0.0, 10.0, None)


def on_canvas(face: np.ndarray, upscale: int, canvas: int) -> np.ndarray:
    big = cv2.resize(face, (48 * upscale, 48 * upscale), interpolation=cv2.INTER_CUBIC)
    out = np.full((canvas, canvas), 128, np.uint8)
    top = (canvas - big.shape[0]) // 2
    out[top : top + big.shape[0], top : top + big.shape[1]] = big
    return out


def detect_all(faces: np.ndarray, detector: YuNetDetector, upscale: int, canvas: int):
    """(index, grey canvas, detected face nearest the centre) for every face YuNet finds."""
    found = []
    for i, face in enumerate(faces):
        grey = on_canvas(face, upscale, canvas)
        detections = detector.detect(cv2.cvtColor(grey, cv2.COLOR_GRAY2RGB))
        if detections:
            centre = canvas / 2
            best = min(detections, key=lambda f: (f.x + f.w / 2 - centre) ** 2 + (f.y + f.h / 2 - centre) ** 2)
            found.append((i, grey, best))
    return found


def accuracy(classifier: KerasClassifier, crops: np.ndarray, labels: np.ndarray) -> float:
    return float((classifier.predict(crops).argmax(axis=1) == labels).mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--model", default=None, help="registered version (default: the current one)")
    parser.add_argument("--models-dir", default=None)
    parser.add_argument("--upscale", type=int, default=4)
    parser.add_argument("--canvas", type=int, default=480)
    parser.add_argument("--score-threshold", type=float, default=0.5)
    parser.add_argument("--limit", type=int, default=0, help="first N faces of each split (0: all)")
    parser.add_argument("--json", default=None, help="also write the figures to this file")
    parser.add_argument("--cache", default=None, help="keep the detections in this file and reuse them")
    parser.add_argument("--margins", type=float, nargs="+", default=MARGINS)
    parser.add_argument("--shifts", type=float, nargs="+", default=SHIFTS)
    args = parser.parse_args()

    registry = ModelRegistry.at(args.models_dir)
    classifier = KerasClassifier(registry.load_model(args.model), registry.resolve(args.model))
    detector = YuNetDetector(default_detector_path(registry.root),
                             DetectorSettings(input_long_side=args.canvas, score_threshold=args.score_threshold,
                                              min_face=20))
    data = load_fer2013(args.data)
    report: dict = {"model": classifier.version, "upscale": args.upscale, "canvas": args.canvas,
                    "score_threshold": args.score_threshold}
    found_by_split = {}
    for split in ("PublicTest", "PrivateTest"):
        faces, labels = data.subset(split)
        if args.limit:
            faces, labels = faces[: args.limit], labels[: args.limit]
        started = time.perf_counter()
        cache = Path(f"{args.cache}.{split}.{args.upscale}x{args.canvas}.{args.limit}") if args.cache else None
        if cache and cache.is_file():
            found = pickle.loads(cache.read_bytes())
        else:
            found = detect_all(faces, detector, args.upscale, args.canvas)
            if cache:
                cache.write_bytes(pickle.dumps(found))
        index = np.array([i for i, _, _ in found], dtype=int)
        boxes = np.array([(f.w, f.h) for _, _, f in found]) / (48 * args.upscale)
        found_by_split[split] = (found, labels[index])
        report[split] = {
            "faces": len(faces), "found": len(found), "detection_rate": round(len(found) / len(faces), 4),
            "box_to_fer_frame": [round(float(v), 3) for v in np.median(boxes, axis=0)] if len(boxes) else None,
            "direct_accuracy_all": round(accuracy(classifier, faces, labels), 4),
            "direct_accuracy_found": round(accuracy(classifier, faces[index], labels[index]), 4),
            "detect_s": round(time.perf_counter() - started, 1),
        }

    def through(split: str, margin: float, shift: float, level_above: float | None) -> float:
        found, labels = found_by_split[split]
        crops = np.stack([crop_face(grey, face, margin, shift=shift, level_above=level_above)
                          for _, grey, face in found])
        return round(accuracy(classifier, crops, labels), 4)

    grid = {}
    for margin, shift, level in itertools.product(args.margins, args.shifts, LEVEL_ABOVE):
        grid[(margin, shift, level)] = value = through("PublicTest", margin, shift, level)
        print(f"PublicTest  margin {margin:+.3f} shift {shift:+.2f} level above {level!s:5}: {value:.4f}", flush=True)
    chosen = max(grid, key=lambda k: (grid[k], -abs(k[0]), -abs(k[1])))
    report["grid_PublicTest"] = [{"margin": m, "shift": s, "level_above": a, "accuracy": v}
                                 for (m, s, a), v in grid.items()]
    report["chosen_on_PublicTest"] = {"margin": chosen[0], "shift": chosen[1], "level_above": chosen[2],
                                      "PublicTest": grid[chosen]}
    for name, framing in (("chosen", chosen), ("before_issue_11", (0.0, 0.0, 0.0))):
        report[f"PrivateTest_{name}"] = {"framing": framing, "through_detection": through("PrivateTest", *framing)}
    print(json.dumps({k: v for k, v in report.items() if k != "grid_PublicTest"}, indent=1))
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(report, handle, indent=1)


if __name__ == "__main__":
    main()
