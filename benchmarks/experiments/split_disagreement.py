"""Where two models part on a FER2013 split, and which of them the FER+ crowd's majority sides with.

    python benchmarks/experiments/split_disagreement.py --data ../shared/data/fer2013.csv.gz \\
        --labels ../shared/data/ferplus_fer2013new.csv \\
        --model 20261127-212938-3xcrop_cnn --model 20261207-042754-crop_cnn [--split PublicTest]

Prints each model's plain-argmax accuracy against FER2013's labels and against the FER+ majority (faces
with a usable majority), its negative share (Angry, Disgust, Fear, Sad), and, for the faces one model reads
right by FER2013's label and the other wrong, how often the crowd agrees with the one FER2013 calls wrong.
A model that reads ambiguous faces the crowd's way loses FER2013 accuracy it does not lose against the crowd.
"""

from __future__ import annotations

import argparse

import numpy as np

from ferbatch.classes import CLASS_NAMES, SPLITS
from ferbatch.models import NEGATIVE_CLASSES, ModelRegistry
from ferbatch.training import apply_ferplus_labels, load_fer2013


def split_faces(data_path: str, labels_path: str, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(images, FER2013 labels, FER+ majority labels or -1 where FER+ has no usable majority) of one split."""
    original = load_fer2013(data_path)
    relabelled = apply_ferplus_labels(original, labels_path)
    crowd = np.full(original.n_source_rows, -1, dtype=np.int64)
    crowd[relabelled.source_row] = relabelled.labels
    rows = original.split == SPLITS.index(split)
    return original.images[rows], original.labels[rows].astype(np.int64), crowd[original.source_row[rows]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="FER2013 CSV")
    parser.add_argument("--labels", required=True, help="FER+ votes CSV (fer2013new.csv)")
    parser.add_argument("--model", action="append", required=True, help="two model versions")
    parser.add_argument("--split", choices=SPLITS[1:], default="PublicTest")
    parser.add_argument("--models-dir", default=None)
    args = parser.parse_args()
    if len(args.model) != 2:
        raise SystemExit("give exactly two --model versions")
    images, labels, crowd = split_faces(args.data, args.labels, args.split)
    registry = ModelRegistry.at(args.models_dir)
    faces = images[..., None].astype("float32")
    reads = [registry.load_model(registry.resolve(v)).predict(faces, batch_size=512, verbose=0).argmax(axis=1)
             for v in args.model]
    usable = crowd >= 0
    negative = [CLASS_NAMES.index(name) for name in NEGATIVE_CLASSES]
    neutral = CLASS_NAMES.index("Neutral")
    print(f"{args.split}: {len(labels)} faces, {int(usable.sum())} with a FER+ majority")
    print(f"  negative share by FER2013's labels {np.isin(labels, negative).mean():.3f}, "
          f"by FER+ {np.isin(crowd[usable], negative).mean():.3f}")
    names = ("A", "B")
    for name, version, read in zip(names, args.model, reads, strict=True):
        print(f"{name} = {version}")
        print(f"  accuracy by FER2013 {(read == labels).mean():.4f}, by FER+ {(read == crowd)[usable].mean():.4f}; "
              f"negative share {np.isin(read, negative).mean():.3f}")
    for right, wrong in ((0, 1), (1, 0)):
        parted = (reads[right] == labels) & (reads[wrong] != labels)
        sided = parted & (reads[wrong] == crowd)
        print(f"{names[right]} right and {names[wrong]} wrong by FER2013: {int(parted.sum())} faces")
        print(f"  the crowd reads {int(sided.sum())} as {names[wrong]} does; {names[wrong]} reads "
              f"{int((parted & (reads[wrong] == neutral)).sum())} Neutral")


if __name__ == "__main__":
    main()
