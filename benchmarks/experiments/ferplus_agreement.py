"""How often the FER+ majority label equals the original FER2013 label, per split.

    python benchmarks/experiments/ferplus_agreement.py --data ../shared/data/fer2013.csv.gz \
        --labels ../shared/data/ferplus_fer2013new.csv

FER2013 accuracy is judged against the original labels. A model that learned the FER+ majority
perfectly would score about this agreement against them, so it bounds what FER+ targets alone can give.
Rows FER+ drops (not a face, majority unknown or contempt) count as disagreements in "of all rows".
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from ferbatch.classes import SPLITS
from ferbatch.training import apply_ferplus_labels, load_fer2013


def agreement(data_path: str, labels_path: str) -> dict[str, dict[str, float | int]]:
    original = load_fer2013(data_path)
    relabelled = apply_ferplus_labels(original, labels_path)
    original_label = np.full(original.n_source_rows, -1, dtype=np.int64)
    original_label[original.source_row] = original.labels
    results = {}
    for index, split in enumerate(SPLITS):
        rows = original.split == index
        kept = relabelled.split == index
        same = int((relabelled.labels[kept] == original_label[relabelled.source_row[kept]]).sum())
        results[split] = {
            "rows": int(rows.sum()),
            "ferplus_usable": int(kept.sum()),
            "agree_of_usable": round(same / max(int(kept.sum()), 1), 4),
            "agree_of_all_rows": round(same / max(int(rows.sum()), 1), 4),
        }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--labels", required=True)
    args = parser.parse_args()
    print(json.dumps(agreement(args.data, args.labels), indent=2))


if __name__ == "__main__":
    main()
