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
import os
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def main() -> None:
    from corpus import build_corpus, first_photos
    from score import parse_args, run_child

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trees", nargs=2, type=Path, help="two source trees: before, after")
    parser.add_argument("--model", default=None, help="model version (default: the current one)")
    parser.add_argument("--models-dir", type=Path, default=HERE.parent / "models")
    parser.add_argument("--faces", type=int, default=7)
    parser.add_argument("--large-share", type=float, default=0.1)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    trees = [tree.resolve() for tree in args.trees]
    child_args = parse_args(["--models-dir", str(args.models_dir.resolve())]
                            + (["--model", args.model] if args.model else []))
    rates: dict[Path, list[float]] = {tree: [] for tree in trees}
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        large = build_corpus(work / "400", 400, faces=args.faces, large_share=args.large_share)
        corpora = {100: first_photos(large, 100, work / "100"), 400: large}
        for repeat in range(args.repeats):
            seconds = {(tree, n): run_child("real", corpus, work / f"out-{repeat}-{n}-{i}", child_args,
                                            tree=tree)["seconds"]
                       for n, corpus in corpora.items() for i, tree in enumerate(trees)}
            for tree in trees:
                rates[tree].append(300 / (seconds[tree, 400] - seconds[tree, 100]))
                print(f"repeat {repeat + 1}: {tree}: {rates[tree][-1]:.1f} images/s", flush=True)
    medians = [statistics.median(rates[tree]) for tree in trees]
    for tree, median in zip(trees, medians, strict=True):
        print(f"{tree}: marginal images/s {', '.join(f'{r:.1f}' for r in rates[tree])}; median {median:.1f}")
    print(f"ratio {medians[1] / medians[0]:.2f}; {os.cpu_count()} cores")


if __name__ == "__main__":
    main()
