"""Scoring speed of several models side by side on crowd-like photos: marginal images/s and faces/s.

    python benchmarks/model_speed.py --model A --model B [--untrained ARCH] [--faces 7] [--sizes 100,400]
        [--repeats 2] [--large-share 0.5] [--precision float32 --precision bfloat16]

For each model and corpus size, a fresh process scores the corpus through the real path (benchmarks/score.py's
`real` child: run_scoring with YuNet, the model and the report writing). Runs are interleaved (A small, B small,
A large, B large, then again), so a busy machine slows every model alike. The marginal rate,
(large - small) / (t_large - t_small), leaves out start-up and model loading, which a nightly run pays once.
Prints one line per model, the ratios to the first model, and the core count; writes JSON with --json-out.

--untrained ARCH (repeatable) also times a network of that architecture before any training, served as training
serves it: its cost does not depend on its weights, so an architecture's speed is known before its long run.
The models then come from a scratch registry holding copies of the --model versions and the untrained ones.

--precision (repeatable) times every model with each classifier arithmetic, as MODEL@PRECISION rows; without
it, every model runs with the scoring default ("auto").
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def untrained_registry(models_dir: str | None, versions: list[str], architectures: list[str], root: Path) -> str:
    """A scratch registry with copies of `versions` and one untrained network per architecture, named
    `untrained-ARCH`; returns its folder."""
    import shutil

    from ferbatch.models import INPUT_CONTRACT, ModelRegistry, build_card, create_model, inference_copy, serving_model
    from ferbatch.training import PRESETS

    source = ModelRegistry.at(models_dir)
    for version in versions:
        shutil.copytree(source.root / source.resolve(version), root / version)
    for architecture in architectures:
        side = next((p.crop for p in PRESETS.values() if p.architecture == architecture and p.crop), 48)
        network = create_model(architecture, input_side=side)
        served = serving_model([inference_copy(network, architecture)], crops=1, flip=False, name=architecture)
        card = build_card(architecture=architecture, parameters=int(network.count_params()), training_config={},
                          data_summary={"label_source": "untrained"}, metrics={}, epochs_run=0, best_epoch=0,
                          wall_time_s=0.0, stopped_early=False, input_contract=INPUT_CONTRACT)
        ModelRegistry(root).register(served, {**card, "version": f"untrained-{architecture}"})
    return str(root)


def main() -> None:
    from corpus import build_corpus, first_photos
    from score import parse_args, run_child

    from ferbatch.config import CLASSIFIER_PRECISIONS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True, help="model version (repeatable)")
    parser.add_argument("--faces", type=int, default=7)
    parser.add_argument("--sizes", default="100,400", help="two corpus sizes, small,large")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--large-share", type=float, default=0.5, help="share of 12 MP photos (the rest 1080p)")
    parser.add_argument("--models-dir", default=None)
    parser.add_argument("--untrained", action="append", default=[], metavar="ARCH",
                        help="also time an untrained network of this architecture (repeatable)")
    parser.add_argument("--precision", action="append", default=[], choices=CLASSIFIER_PRECISIONS,
                        help="classifier arithmetic (repeatable; default: the scoring default)")
    parser.add_argument("--json-out", type=Path, default=None)
    args = parser.parse_args()
    small, large = (int(n) for n in args.sizes.split(","))

    versions = args.model + [f"untrained-{architecture}" for architecture in args.untrained]
    precisions = args.precision or [None]
    # (row name, version, precision): MODEL@PRECISION when --precision is given
    models = [(f"{v}@{p}" if p else v, v, p) for v in versions for p in precisions]
    times: dict[str, dict[int, list[float]]] = {name: {small: [], large: []} for name, _, _ in models}
    faces: dict[int, int] = {}
    with tempfile.TemporaryDirectory(prefix="ferbatch-speed-") as tmp:
        work = Path(tmp)
        models_dir = (untrained_registry(args.models_dir, args.model, args.untrained, work / "models")
                      if args.untrained else args.models_dir)
        # The small corpus is the large one's first photos, so the marginal photos are the same for every model.
        full = build_corpus(work / f"corpus-{large}", large, 0, args.large_share, args.faces)
        corpora = {small: first_photos(full, small, work / f"corpus-{small}"), large: full}
        for repeat in range(args.repeats):
            for n in (small, large):
                for name, version, precision in models:
                    child_args = parse_args(["--model", version] + (["--models-dir", models_dir] if models_dir else [])
                                            + (["--precision", precision] if precision else []))
                    out = work / f"out-{name}-{n}-{repeat}"
                    result = run_child("real", corpora[n], out, child_args)
                    times[name][n].append(result["seconds"])
                    faces[n] = result["faces"]
                    print(f"  {name} n={n} run {repeat + 1}: {result['seconds']:.1f} s, {result['faces']} faces",
                          flush=True)

    rows = {}
    for model, by_size in times.items():
        t_small, t_large = statistics.median(by_size[small]), statistics.median(by_size[large])
        marginal = (large - small) / (t_large - t_small)
        rows[model] = {"images_per_s_small": small / t_small, "images_per_s_large": large / t_large,
                       "marginal_images_per_s": marginal,
                       "marginal_faces_per_s": (faces[large] - faces[small]) / (t_large - t_small),
                       "seconds": by_size}
    first = rows[models[0][0]]["marginal_images_per_s"]
    print(f"\n{os.cpu_count()} cores; ~{args.faces} faces a photo; {faces[large] / large:.1f} found a photo; "
          f"median of {args.repeats}")
    print(f"{'model':36} {'img/s':>6} {'img/s':>6} {'marginal':>8} {'faces/s':>7} {'ratio':>5}")
    print(f"{'':36} {'n=' + str(small):>6} {'n=' + str(large):>6} {'img/s':>8} {'':>7} {'':>5}")
    for model, row in rows.items():
        print(f"{model:36} {row['images_per_s_small']:6.1f} {row['images_per_s_large']:6.1f} "
              f"{row['marginal_images_per_s']:8.1f} {row['marginal_faces_per_s']:7.1f} "
              f"{row['marginal_images_per_s'] / first:5.2f}")
    if args.json_out:
        args.json_out.write_text(json.dumps({"cores": os.cpu_count(), "faces": args.faces, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
