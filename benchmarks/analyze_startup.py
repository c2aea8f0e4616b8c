"""How long `ferbatch analyze IMAGE` takes from a cold start, model load included, beside `ferbatch --help`.

    python benchmarks/analyze_startup.py [IMAGE] [--runs 3]      # default: tests/photos/fr_obama.jpg

Runs each command in a fresh process, alternating them, and prints per run the wall time and the CPU time
(user + system, from the child's rusage). On a machine that other work shares, the wall time grows with the
load while the CPU time does not: both are printed, with the load average before and after.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
FERBATCH = Path(sys.executable).parent / "ferbatch"


def _timed(args: list[str]) -> tuple[float, float]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    subprocess.run([str(FERBATCH), *args], check=True, capture_output=True, cwd=PROJECT)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("image", nargs="?", default="tests/photos/fr_obama.jpg")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(f"load average before: {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPU(s)")
    for run in range(1, args.runs + 1):
        analyze_wall, analyze_cpu = _timed(["analyze", args.image])
        help_wall, help_cpu = _timed(["--help"])
        print(f"run {run}: analyze {analyze_wall:5.2f} s wall, {analyze_cpu:5.2f} s CPU; "
              f"--help {help_wall:4.2f} s wall, {help_cpu:4.2f} s CPU")
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
