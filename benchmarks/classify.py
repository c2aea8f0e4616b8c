"""Classification throughput of a registered model: faces per second at a fixed batch size.

    python benchmarks/classify.py [--model VERSION] [--batch-size 256] [--faces 8192]

Measures the scoring path's classifier (KerasClassifier, fixed-size batches) on random 48x48 faces,
after one warm-up batch, and the model file's size. Writes JSON to --json-out.
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

from ferbatch.models import ModelRegistry
from ferbatch.scoring import KerasClassifier


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None)
    parser.add_argument("--models-dir", default=None)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--faces", type=int, default=8192)
    parser.add_argument("--json-out", default="benchmarks/classify.json")
    args = parser.parse_args()

    registry = ModelRegistry.at(args.models_dir)
    version = registry.resolve(args.model)
    faces = np.random.default_rng(0).integers(0, 256, (args.faces, 48, 48), dtype=np.uint8)
    results = {"model": version, "model_bytes": registry.model_path(version).stat().st_size,
               "batch_size": args.batch_size, "faces": args.faces, "cpu_count": os.cpu_count()}
    for flip in (False, True):
        classifier = KerasClassifier.from_registry(registry.root, version, args.batch_size, flip_tta=flip)
        classifier.predict(faces[: args.batch_size])  # warm-up: trace the graph once
        started = time.perf_counter()
        classifier.predict(faces)
        rate = args.faces / (time.perf_counter() - started)
        results["flip_tta" if flip else "plain"] = {"faces_per_s": round(rate, 1)}
        print(f"{version} batch {args.batch_size} {'flip TTA' if flip else 'plain':8}: {rate:8.1f} faces/s")
    print(f"model file {results['model_bytes'] / 1e6:.2f} MB, {os.cpu_count()} CPU cores")
    with open(args.json_out, "w") as handle:
        json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
