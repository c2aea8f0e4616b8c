"""The nightly fine-tune of the current model with N new labelled faces: wall time against the budget, and the
gate's figures before and after.

    python benchmarks/nightly_finetune.py --data ../shared/data/fer2013.csv.gz [--faces 50] [--minutes 30]

Copies the current model (only its version folder) into a temporary registry, writes N labelled faces there (FER2013
PrivateTest faces, upscaled to 96 px as `ferbatch label export` writes crops: stand-ins for a user's own faces,
which this script cannot have), and runs the `fine-tune` flow as the nightly run would. Nothing is written into
the project's models/.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import cv2

from ferbatch.classes import CLASS_NAMES
from ferbatch.models import CURRENT_FILE, ModelRegistry
from ferbatch.training import load_fer2013


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="FER2013 CSV (the one the current model was trained on)")
    parser.add_argument("--faces", type=int, default=50)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--models-dir", default=None, help="registry to take the current model from")
    args = parser.parse_args()

    source = ModelRegistry.at(args.models_dir)
    version = source.current_version()
    with tempfile.TemporaryDirectory(prefix="nightly-finetune-") as tmp:
        models, labelled = Path(tmp) / "models", Path(tmp) / "labelled"
        models.mkdir()
        shutil.copytree(source.root / version, models / version)
        (models / CURRENT_FILE).write_text(json.dumps({"version": version}))
        faces, labels = load_fer2013(args.data).subset("PrivateTest")
        for i in range(args.faces):
            target = labelled / CLASS_NAMES[labels[i]] / f"face{i:03d}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(target), cv2.resize(faces[i], (96, 96), interpolation=cv2.INTER_LINEAR))

        from ferbatch_flows.retrain import fine_tune

        started = time.time()
        result = fine_tune(data=args.data, extra_folder=str(labelled), models_dir=str(models),
                           max_minutes=args.minutes, started_at=started)
        card = ModelRegistry(models).card(result["version"])
        print(json.dumps({"base": version, "faces": args.faces, "budget_minutes": args.minutes,
                          "wall_minutes": round((time.time() - started) / 60, 2), "promoted": result["promoted"],
                          "reason": result["reason"], "gate": result["gate"],
                          "networks": [{k: n.get(k) for k in ("seed", "fine_tuned", "epochs_run", "wall_time_s",
                                                              "best_public_accuracy")}
                                       for n in card["fine_tune"]["networks"]],
                          "PrivateTest": round(card["metrics"]["PrivateTest"]["plain"]["accuracy"], 4)}, indent=1))


if __name__ == "__main__":
    main()
