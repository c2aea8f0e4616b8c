"""Which members and views to ship: PublicTest accuracy of every subset of trained crop networks.

    python benchmarks/experiments/ensemble_choice.py --data ../shared/data/fer2013.csv.gz VERSION...

Each VERSION is a registered run of a crop preset (unfinished with its training done, or a member). The
probabilities of the centre crop and its mirror are computed once per member; then each candidate (members x
views) is scored by plain argmax on PublicTest, which makes the choice, and on PrivateTest, which is reported
beside it and chooses nothing. Per-member PublicTest curves come from their checkpoint state.
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np


def member_probabilities(version_dir: Path, faces: dict[str, np.ndarray], crop: int) -> dict[str, np.ndarray]:
    import keras

    from ferbatch.training import centre_crops

    network = keras.saving.load_model(version_dir / "checkpoint.keras", compile=False)
    with np.load(version_dir / "best.weights.npz") as saved:
        network.set_weights([saved[f"arr_{i}"] for i in range(len(saved.files))])
    out = {}
    for split, images in faces.items():
        x = centre_crops(images, crop)[..., None].astype("float32")
        out[f"{split}/centre"] = network.predict(x, batch_size=512, verbose=0)
        out[f"{split}/mirror"] = network.predict(x[:, :, ::-1], batch_size=512, verbose=0)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--models-dir", type=Path, default=Path("models"))
    parser.add_argument("--cache", type=Path, default=Path("/tmp/ensemble_choice"))
    parser.add_argument("versions", nargs="+")
    args = parser.parse_args()

    from ferbatch.training import load_training_data

    data = load_training_data(args.data)
    faces = {split: data.subset(split)[0] for split in ("PublicTest", "PrivateTest")}
    labels = {split: data.subset(split)[1] for split in ("PublicTest", "PrivateTest")}
    args.cache.mkdir(parents=True, exist_ok=True)
    members = {}
    for version in args.versions:
        folder = args.models_dir / version
        state = json.loads((folder / "state.json").read_text())
        config = state["config"]
        name = f"e{config['epochs']}-s{config['seed']}"
        cached = args.cache / f"{version}.npz"
        if not cached.is_file():
            np.savez(cached, **member_probabilities(folder, faces, config["crop"]))
        with np.load(cached) as saved:
            members[name] = dict(saved)
        curve = state["history"]["val_accuracy"]
        print(f"{name} ({version}): best PublicTest {state['best_val_accuracy']:.4f} at epoch {state['best_epoch']}; "
              f"curve every 10th epoch: {' '.join(f'{v:.3f}' for v in curve[9::10])}")

    def accuracy(names: tuple[str, ...], views: tuple[str, ...], split: str) -> float:
        mean = np.mean([members[n][f"{split}/{v}"] for n in names for v in views], axis=0)
        return float((mean.argmax(1) == labels[split]).mean())

    rows = []
    for size in range(1, len(members) + 1):
        for names in itertools.combinations(sorted(members), size):
            for views in (("centre",), ("centre", "mirror")):
                rows.append((accuracy(names, views, "PublicTest"), accuracy(names, views, "PrivateTest"), names, views))
    print("\nbest candidate of each size and view set, by PublicTest (PrivateTest reported, not used):")
    print(f"{'members':>7} {'views':>6} {'PublicTest':>10} {'PrivateTest':>11}  networks")
    for size in range(1, len(members) + 1):
        for views in (("centre",), ("centre", "mirror")):
            best = max((r for r in rows if len(r[2]) == size and r[3] == views), key=lambda r: r[0])
            print(f"{size:>7} {len(views):>6} {best[0]:>10.4f} {best[1]:>11.4f}  {' '.join(best[2])}")
    print("\npreset-shaped candidates: the first k seeds of one recipe (how an ensemble preset lists them):")
    print(f"{'recipe':>7} {'k':>2} {'views':>5} {'PublicTest':>10} {'PrivateTest':>11}")
    for epochs in sorted({n.split("-")[0] for n in members}, key=lambda e: int(e[1:])):
        names = [n for n in members if n.startswith(f"{epochs}-")]  # in the order given: the preset's seeds
        for k in range(1, len(names) + 1):
            for views in (("centre",), ("centre", "mirror")):
                chosen = tuple(names[:k])
                print(f"{epochs:>7} {k:>2} {len(views):>5} {accuracy(chosen, views, 'PublicTest'):>10.4f} "
                      f"{accuracy(chosen, views, 'PrivateTest'):>11.4f}")

if __name__ == "__main__":
    main()
