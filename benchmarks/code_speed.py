"""Scoring speed of two versions of the code side by side: marginal images/s on crowd-like photos.

    git worktree add /tmp/before REV
    python benchmarks/code_speed.py /tmp/before . [--model VERSION] [--faces 7] [--repeats 3]

Each tree's own benchmarks/score.py `real` child (run_scoring with YuNet, the model and the report writing)
scores the first 100 and then all 400 photos of one corpus, in fresh processes with that tree first on the
import path, interleaved (A 100, B 100, A 400, B 400, then again), so a busy machine slows both alike. The
models come from this tree's registry. Prints each tree's marginal rate, (400 - 100) / (t400 - t100), per
repeat and its median, the ratio of the second to the first, and the core count.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def score_seconds(tree: Path, corpus: Path, model: str | None, models_dir: Path) -> float:
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, str(tree / "benchmarks" / "score.py"), "--child", "real", "--corpus", str(corpus),
                   "--out", out, "--models-dir", str(models_dir), "--workers", "2", "--detector-size", "960",
                   "--shard-size", "500", "--decode-long-side", "960", "--baseline-detector-size", "0",
                   "--baseline-call", "predict"] + (["--model", model] if model else [])
        done = subprocess.run(command, capture_output=True, text=True, cwd=tree,
                              env={**os.environ, "PYTHONPATH": str(tree)})
        if done.returncode != 0:
            raise RuntimeError(f"{tree}: the scoring child failed ({done.returncode}):\n{done.stderr[-2000:]}")
        return json.loads(done.stdout.strip().splitlines()[-1])["seconds"]


def main() -> None:
    sys.path.insert(0, str(HERE))
    from corpus import build_corpus

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trees", nargs=2, type=Path, help="two source trees: before, after")
    parser.add_argument("--model", default=None, help="model version (default: the current one)")
    parser.add_argument("--models-dir", type=Path, default=HERE.parent / "models")
    parser.add_argument("--faces", type=int, default=7)
    parser.add_argument("--large-share", type=float, default=0.1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    trees = [tree.resolve() for tree in args.trees]
    with tempfile.TemporaryDirectory() as scratch:
        large = build_corpus(Path(scratch) / "400", 400, faces=args.faces, large_share=args.large_share)
        small = Path(scratch) / "100"
        small.mkdir()
        for photo in sorted(large.glob("*.jpg"))[:100]:
            shutil.copy(photo, small / photo.name)
        rates: dict[Path, list[float]] = {tree: [] for tree in trees}
        for repeat in range(args.repeats):
            seconds = {(tree, n): score_seconds(tree, corpus, args.model, args.models_dir)
                       for n, corpus in ((100, small), (400, large)) for tree in trees}
            for tree in trees:
                rates[tree].append(300 / (seconds[tree, 400] - seconds[tree, 100]))
                print(f"repeat {repeat + 1}: {tree}: {rates[tree][-1]:.1f} images/s", flush=True)
    medians = [statistics.median(rates[tree]) for tree in trees]
    for tree, median in zip(trees, medians, strict=True):
        print(f"{tree}: marginal images/s {', '.join(f'{r:.1f}' for r in rates[tree])}; median {median:.1f}")
    print(f"ratio {medians[1] / medians[0]:.2f}; {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
