"""The classifier in float32 against bfloat16 on FER2013: accuracy, agreement, probability change and faces/s.

    python benchmarks/precision.py --data ../shared/data/fer2013.csv.gz --model A [--model B] [--split PrivateTest]

bfloat16 is what the scoring default ("auto") uses on a CPU with native bfloat16 (AMX or AVX512-BF16); on
another CPU it is emulated, and this prints how much slower that is. Faces/s is the best of three passes
over 2,048 faces, one after the other in this process; pause anything else running on the machine.
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def faces_per_s(classifier, faces) -> float:
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        classifier.predict(faces)
        best = min(best, time.perf_counter() - started)
    return len(faces) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="FER2013 CSV")
    parser.add_argument("--model", action="append", default=None, help="model version (repeatable; default current)")
    parser.add_argument("--models-dir", default=None)
    parser.add_argument("--split", default="PrivateTest", choices=["Training", "PublicTest", "PrivateTest"])
    args = parser.parse_args()

    from ferbatch.models import ModelRegistry
    from ferbatch.scoring import KerasClassifier
    from ferbatch.scoring._classifier import NATIVE_BFLOAT16_FLAGS, cpu_flags
    from ferbatch.training import load_fer2013

    faces, labels = load_fer2013(args.data).subset(args.split)
    registry = ModelRegistry.at(args.models_dir)
    native = sorted(NATIVE_BFLOAT16_FLAGS & cpu_flags())
    print(f"{os.cpu_count()} cores; native bfloat16: {', '.join(native) or 'none'}; {args.split}, {len(faces)} faces")
    print(f"{'model':30} {'acc f32':>7} {'acc bf16':>8} {'agree':>6} {'max|dp|':>7} {'f32/s':>6} {'bf16/s':>6}")
    for version in args.model or [None]:
        version = registry.resolve(version)
        exact, rounded = (KerasClassifier.from_registry(registry.root, version, precision=p)
                          for p in ("float32", "bfloat16"))
        p_exact, p_rounded = exact.predict(faces), rounded.predict(faces)
        agree = (p_exact.argmax(1) == p_rounded.argmax(1)).mean()
        print(f"{version:30} {(p_exact.argmax(1) == labels).mean():7.4f} {(p_rounded.argmax(1) == labels).mean():8.4f} "
              f"{agree:6.4f} {abs(p_exact - p_rounded).max():7.3f} {faces_per_s(exact, faces[:2048]):6.0f} "
              f"{faces_per_s(rounded, faces[:2048]):6.0f}", flush=True)


if __name__ == "__main__":
    main()
