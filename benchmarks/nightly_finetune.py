"""A user's night with real labelled faces: `ferbatch nightly` fine-tunes a chosen model on them within
train.max_minutes, and the gate decides; then a second night with nothing new skips.

    python benchmarks/nightly_finetune.py --data ../shared/data/fer2013.csv.gz \\
        --faces ../shared/data/user_wild/images --per-class neutral=150,happy=150 \\
        --base 20261127-212938-3xcrop_cnn --minutes 5

Copies the registry (every version, not the work folder) into a temporary folder and makes `--base` its current
model; draws the labelled faces (a fixed seed) from the class folders of `--faces` into a labelling folder there;
writes a ferbatch.toml (train.data, train.extra_folder, train.max_minutes, an empty photo folder to score) and runs
the real `ferbatch nightly` twice in a subprocess, without a configured Prefect API, as a user would. Prints the
night's minutes, PublicTest and user-holdout accuracy before and after, the held-out count, the decision and the
second night's seconds. Nothing is written into the project's models/.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ferbatch.classes import CLASS_NAMES
from ferbatch.models import CURRENT_FILE, ModelRegistry
from ferbatch.scoring import IMAGE_SUFFIXES


def sample_faces(source: Path, per_class: dict[str, int], target: Path, seed: int = 0) -> dict[str, int]:
    """Copy `per_class[name]` files (a fixed-seed draw) from each class folder of `source` into `target/<Class>`."""
    by_name = {name.lower(): name for name in CLASS_NAMES}
    rng = random.Random(seed)
    counts = {}
    for folder, count in per_class.items():
        files = sorted(p for p in (source / folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if len(files) < count:
            raise SystemExit(f"{source / folder}: {len(files)} faces, fewer than the {count} asked for")
        name = by_name.get(folder.lower())
        if name is None:
            raise SystemExit(f"{folder}: not a class name ({', '.join(CLASS_NAMES)})")
        (target / name).mkdir(parents=True, exist_ok=True)
        for file in rng.sample(files, count):
            shutil.copy2(file, target / name / file.name)
        counts[name] = count
    return counts


def night(config: Path, env: dict[str, str], log: Path | None = None) -> tuple[dict, float]:
    """One `ferbatch nightly --json` in a subprocess: its result and its wall time in seconds."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "ferbatch", "--config", str(config), "nightly", "--json"],
                          env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if log is not None:
        log.write_text(done.stderr)
    if done.returncode != 0:
        sys.stderr.write(done.stderr[-4000:])
        raise SystemExit(f"ferbatch nightly failed with exit code {done.returncode}")
    return json.loads(done.stdout[done.stdout.index("{"):]), seconds


def _figure(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, type=Path, help="FER2013 CSV (the one the base was trained on)")
    parser.add_argument("--labels", type=Path, default=None, help="FER+ label CSV, if the base trained on it")
    parser.add_argument("--faces", required=True, type=Path, help="a folder of class folders of labelled faces")
    parser.add_argument("--per-class", default="neutral=150,happy=150", metavar="FOLDER=N,...",
                        help="how many faces to draw from each class folder")
    parser.add_argument("--base", default=None, help="the model to make current (default: the current one)")
    parser.add_argument("--minutes", type=float, default=5.0, help="train.max_minutes")
    parser.add_argument("--models-dir", type=Path, default=None, help="the registry to copy")
    parser.add_argument("--seed", type=int, default=0, help="of the draw of faces")
    parser.add_argument("--keep", type=Path, default=None, help="copy the candidate's card.json here")
    parser.add_argument("--log", type=Path, default=None, help="write the first night's log here")
    args = parser.parse_args()
    per_class = {name: int(count) for name, count in (item.split("=") for item in args.per_class.split(","))}

    source = ModelRegistry.at(args.models_dir)
    base = source.resolve(args.base)
    with tempfile.TemporaryDirectory(prefix="nightly-finetune-") as tmp:
        tmp = Path(tmp)
        shutil.copytree(source.root, tmp / "models", ignore=shutil.ignore_patterns(".work"))
        (tmp / "models" / CURRENT_FILE).write_text(json.dumps({"version": base}))
        counts = sample_faces(args.faces, per_class, tmp / "labelled", args.seed)
        (tmp / "photos").mkdir()
        labels = f'labels = "{args.labels.resolve()}"\n' if args.labels else ""
        config = tmp / "ferbatch.toml"
        config.write_text(f'models_dir = "models"\n[train]\ndata = "{args.data.resolve()}"\n{labels}'
                          f'extra_folder = "labelled"\nmax_minutes = {args.minutes}\n'
                          '[score]\nfolders = ["photos"]\nout = "reports"\n')
        env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PREFECT_PROFILES_PATH")}
        env["PREFECT_HOME"] = str(tmp / "prefect-home")  # no configured API: a user's first `ferbatch nightly`

        first, first_s = night(config, env, args.log)
        second, second_s = night(config, env)

        retrain = first["retrain"]
        result = retrain.get("result") or {}
        registry = ModelRegistry(tmp / "models")
        card = registry.card(result["version"]) if result.get("version") else {}
        base_card = registry.card(base)
        gate = card.get("gate") or {}
        public, holdout = gate.get("PublicTest") or {}, gate.get("user_holdout") or {}
        private_before = base_card["metrics"]["PrivateTest"]["plain"]["accuracy"]
        private_after = (card.get("metrics") or {}).get("PrivateTest", {}).get("plain", {}).get("accuracy")
        if args.keep and card:
            args.keep.write_text(json.dumps(card, indent=1))
        gain = (holdout["after"] - holdout["before"]) * 100 if holdout.get("before") is not None else None
        print(f"base model          {base}")
        print(f"labelled faces      {sum(counts.values())} ({', '.join(f'{n} {c}' for c, n in counts.items())})")
        print(f"budget              train.max_minutes = {args.minutes}")
        print(f"night               {first_s / 60:.2f} min (the retrain step: {result.get('minutes', 'n/a')} min)")
        print(f"action              {retrain['action']} ({retrain['reason']})")
        print(f"PublicTest          {_figure(public.get('before'))} -> {_figure(public.get('after'))}")
        print(f"PrivateTest         {_figure(private_before)} -> {_figure(private_after)}")
        print(f"user holdout        {_figure(holdout.get('before'))} -> {_figure(holdout.get('after'))}"
              + (f" ({gain:+.1f} points)" if gain is not None else ""))
        print(f"held-out faces      {holdout.get('faces', 'n/a')} (on the card: {'yes' if gate else 'no'})")
        print(f"decision            {'promoted' if result.get('promoted') else 'not promoted'}: {result.get('reason')}")
        for index, network in enumerate((card.get("fine_tune") or {}).get("networks", [])):
            trained = (f"{network['steps']} of {network['planned_steps']} planned steps, {network['step_s']:.2f} s "
                       f"each, user faces x{network['user_repeat']}" if network["fine_tuned"] else network["why"])
            print(f"network {index + 1}           {trained}")
        print(f"second night        {second_s:.1f} s: {second['retrain']['action']} ({second['retrain']['reason']})")


if __name__ == "__main__":
    main()
