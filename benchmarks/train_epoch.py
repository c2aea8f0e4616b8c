"""Seconds per training epoch, per precision, on the full FER2013 file; and its parse time.

    python benchmarks/train_epoch.py --data ../shared/data/fer2013.csv.gz [--architecture fer_cnn] [--epochs 2]

Prints a table and writes the figures as JSON (--json-out). Epoch 1 includes graph tracing, so the
steady-state figure is the mean over the later epochs.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from ferbatch.training import load_fer2013, preset, train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--architecture", default="fer_cnn")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--precisions", nargs="+", default=["float32", "mixed_bfloat16"])
    parser.add_argument("--json-out", default="benchmarks/train_epoch.json")
    args = parser.parse_args()

    started = time.perf_counter()
    data = load_fer2013(args.data)
    parse_s = time.perf_counter() - started
    results = {"data": args.data, "parse_s": round(parse_s, 2), "cpu_count": os.cpu_count(), "runs": []}
    print(f"parse {args.data}: {parse_s:.2f} s for {len(data.labels)} rows")
    for precision in args.precisions:
        config = preset("default").with_overrides(
            architecture=args.architecture, precision=precision, epochs=args.epochs, batch_size=args.batch_size,
            early_stopping_patience=args.epochs + 1,
        )
        with tempfile.TemporaryDirectory() as workdir:
            result = train(config, *data.subset("Training"), *data.subset("PublicTest"), workdir)
        epoch_times = result.history["epoch_s"]
        steady = epoch_times[1:] or epoch_times
        run = {"architecture": args.architecture, "precision": precision, "batch_size": args.batch_size,
               "epoch_s": [round(t, 1) for t in epoch_times], "steady_epoch_s": round(sum(steady) / len(steady), 1)}
        results["runs"].append(run)
        print(f"{args.architecture} {precision:15} batch {args.batch_size}: epochs {run['epoch_s']} s, "
              f"steady {run['steady_epoch_s']} s/epoch")
    base = results["runs"][0]["steady_epoch_s"]
    for run in results["runs"][1:]:
        print(f"{run['precision']} vs {results['runs'][0]['precision']}: {base / run['steady_epoch_s']:.2f}x faster")
    with open(args.json_out, "w") as handle:
        json.dump(results, handle, indent=2)


if __name__ == "__main__":
    main()
