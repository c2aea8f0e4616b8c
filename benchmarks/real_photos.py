"""A model on labelled real photos, through the scoring path: found, acc7, sent3, macro recall, negative-share
bias (share read Angry/Disgust/Fear/Sad minus the true share), per-class recall and the confusion matrix of
each set, for one or more models and crop framings.

The verdict on a photo is what the images table says (the argmax of its faces' area-weighted probabilities,
plain, no flip), with the scoring defaults unless an option changes them. Use the sets to measure and to choose
among a few candidates, never to fit anything.

    python benchmarks/real_photos.py ../shared/data/dev_wild ../shared/data/dev_posed [--model VERSION ...]
        [--margin M] [--shift S] [--level-above DEG|never] [--light none|equalize|clahe] [--grid] [--json FILE]

--grid tries every framing of MARGINS x SHIFTS x LEVELS x LIGHTS with each model and prints one line each.
--checkpoint DIR measures the best epoch so far of a training run's work folder (models/.work/checkpoints, or an
unfinished version's folder) instead of a registered model: a look at a long run between its chunks.
--calibrate-on FER2013.csv also measures each model with per-class logit biases fitted on PublicTest (the
training flow's calibration; --objective, repeatable, picks which: macro_f1 by default, macro_f1_keep_neutral):
whether a FER2013-fitted calibration carries over to real photos.
--width-scale F scores copies of every photo with its width times F (written to a temporary folder, removed
after): dev_posed's copy squashed its portrait originals to squares, so 0.8 shows what that squash costs.
--flip-tta averages each face with its mirror image; --precision sets the classifier's arithmetic (default: the
scoring default, "auto").
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import cv2

from ferbatch.config import CLASSIFIER_PRECISIONS, ScoreSettings
from ferbatch.scoring import Components, PipelineSettings
from ferbatch.scoring._pipeline import LIGHT_NORMALISATIONS
from ferbatch.training import CALIBRATION_OBJECTIVES, load_fer2013
from ferbatch.training._real_photos import evaluate_real_photos, real_photos_markdown

MARGINS = (-0.075, -0.025, 0.025, 0.075)
SHIFTS = (-0.05, 0.0, 0.05)
LEVELS = (None, 0.0)
LIGHTS = ("none", "equalize")


def checkpoint_classifier(folder: Path, precision: str = "float32", flip_tta: bool = False):
    """The best weights so far of a training run's work folder, served as a registered model would be."""
    import json

    import keras
    import numpy as np

    from ferbatch.models import serving_model
    from ferbatch.scoring import KerasClassifier
    from ferbatch.training import TrainConfig
    from ferbatch.training._loop import inference_copy

    state = json.loads((folder / "state.json").read_text())
    config = TrainConfig.from_dict(state["config"])
    # The last checkpoint holds the network with its input normalisation (constants, not weights); the best
    # epoch's weights go into it.
    trainer = keras.saving.load_model(folder / "checkpoint.keras", compile=False)
    network = trainer if config.crop else trainer.get_layer(config.architecture)
    with np.load(folder / "best.weights.npz") as saved:
        network.set_weights([saved[f"arr_{i}"] for i in range(len(saved.files))])
    served = inference_copy(network, config.architecture)
    if config.crop:
        served = serving_model([served], crops=1, flip=False, name=config.architecture)
    name = (f"{folder} (epoch {state['best_epoch']} of {state['epochs_done']}, "
            f"PublicTest {state['best_val_accuracy']:.4f})")
    return KerasClassifier(served, version=name, precision=precision, flip_tta=flip_tta)


def publictest_calibrated(classifier, data, objective: str):
    """A copy of `classifier` with the training flow's class biases for `objective`, fitted on FER2013 PublicTest."""
    from ferbatch.scoring import KerasClassifier
    from ferbatch.training import TrainConfig, calibrate

    model, record = calibrate(TrainConfig(calibration=objective), classifier.model, data)
    shown = ", ".join(f"{name[:3]} {value:+.2f}" for name, value in record["logit_bias"].items() if value)
    return KerasClassifier(model, version=f"{classifier.version} + PublicTest {objective} biases ({shown or 'none'})",
                           precision=classifier.precision, flip_tta=classifier.flip_tta)


def _width_scaled_copy(source: Path, target: Path, factor: float) -> bool:
    image = cv2.imread(str(source), cv2.IMREAD_COLOR)
    if image is None:
        return False
    width = max(1, round(image.shape[1] * factor))
    resized = cv2.resize(image, (width, image.shape[0]), interpolation=cv2.INTER_AREA)
    try:
        return bool(cv2.imwrite(str(target), resized, [cv2.IMWRITE_JPEG_QUALITY, 95]))
    except cv2.error:  # no writer for this extension
        return False


@contextlib.contextmanager
def width_scaled(sets: list[Path], factor: float) -> Iterator[list[Path]]:
    """Copies of labelled sets with every photo's width times `factor`, named SET_widthF; removed on exit."""
    with tempfile.TemporaryDirectory(prefix="real_photos_") as scratch:
        copies = []
        for folder in sets:
            images = folder / "images" if (folder / "images").is_dir() else folder
            copy = Path(scratch) / f"{folder.resolve().name}_width{factor:g}"
            for path in sorted(p for p in images.rglob("*") if p.is_file() and p.name != "labels.csv"):
                target = copy / "images" / path.relative_to(images)
                target.parent.mkdir(parents=True, exist_ok=True)
                if not _width_scaled_copy(path, target, factor):
                    shutil.copyfile(path, target)  # unreadable or unwritable here: kept as is, scored as it is
            shutil.copyfile(folder / "labels.csv", copy / "labels.csv")
            copies.append(copy)
        yield copies


def level(text: str) -> float | None:
    return None if text == "never" else float(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sets", nargs="+", type=Path, help="folders with labels.csv")
    parser.add_argument("--model", action="append", default=None, help="model version (repeatable; default current)")
    parser.add_argument("--models-dir", default=None)
    defaults = PipelineSettings(max_pixels=1, decode_long_side=None, workers=1)
    parser.add_argument("--margin", type=float, default=defaults.crop_margin)
    parser.add_argument("--shift", type=float, default=defaults.crop_shift)
    parser.add_argument("--level-above", type=level, default=defaults.level_above, metavar="DEG|never")
    parser.add_argument("--light", choices=LIGHT_NORMALISATIONS, default=defaults.light)
    parser.add_argument("--grid", action="store_true", help="try every framing in the script's grid")
    parser.add_argument("--flip-tta", action="store_true", help="average each face with its mirror image")
    parser.add_argument("--precision", choices=CLASSIFIER_PRECISIONS, default=ScoreSettings().precision,
                        help="classifier arithmetic (default: the scoring default)")
    parser.add_argument("--checkpoint", type=Path, default=None,
                        help="a training run's work folder: measure its best epoch so far")
    parser.add_argument("--calibrate-on", type=Path, default=None, metavar="FER2013_CSV",
                        help="also measure each model with class biases fitted on this file's PublicTest")
    parser.add_argument("--objective", action="append", choices=list(CALIBRATION_OBJECTIVES), default=None,
                        help="calibration objective for --calibrate-on (repeatable; default macro_f1)")
    parser.add_argument("--width-scale", type=float, default=None, metavar="F",
                        help="score copies of the photos with their width times F")
    parser.add_argument("--json", type=Path, default=None, help="also write every figure to this file")
    args = parser.parse_args()
    if args.width_scale is None:
        measure(args)
    else:
        with width_scaled(args.sets, args.width_scale) as copies:
            measure(argparse.Namespace(**{**vars(args), "sets": copies}))


def measure(args: argparse.Namespace) -> None:

    settings = ScoreSettings(precision=args.precision, flip_tta=args.flip_tta)
    framings = (list(itertools.product(MARGINS, SHIFTS, LEVELS, LIGHTS)) if args.grid
                else [(args.margin, args.shift, args.level_above, args.light)])
    everything = []
    calibration_data = load_fer2013(args.calibrate_on) if args.calibrate_on else None
    for model in [args.checkpoint] if args.checkpoint else args.model or [None]:
        components = Components.for_run(settings, None if args.checkpoint else model, args.models_dir)
        plain = (checkpoint_classifier(args.checkpoint, args.precision, args.flip_tta) if args.checkpoint
                 else components.classifier())
        detector = components.detector()
        classifiers = [plain] + [publictest_calibrated(plain, calibration_data, objective)
                                 for objective in (args.objective or ["macro_f1"]) if calibration_data]
        for classifier in classifiers:
            print(f"model {classifier.version} ({classifier.precision})")
            for margin, shift, level_above, light in framings:
                pipeline = PipelineSettings.from_settings(settings, crop_margin=margin, crop_shift=shift,
                                                          level_above=level_above, light=light)
                started = time.perf_counter()
                results = evaluate_real_photos(args.sets, detector, classifier, pipeline)
                seconds = time.perf_counter() - started
                framing = f"margin {margin:+.3f} shift {shift:+.2f} level {level_above} light {light}"
                if args.grid:
                    print(f"  {framing}: " + "; ".join(
                        f"{name} acc7 {m['acc7']:.3f} sent3 {m['sent3']:.3f} mr {m['macro_recall']:.3f}"
                        f" bias {m['negative_bias']:+.3f}"
                        for name, m in results.items()))
                else:
                    print(f"{framing} ({seconds:.0f} s)\n")
                    print(real_photos_markdown(results))
                everything.append({"model": classifier.version, "precision": classifier.precision, "margin": margin,
                                   "shift": shift, "level_above": level_above, "light": light, "results": results})
    if args.json:
        args.json.write_text(json.dumps(everything, indent=1))


if __name__ == "__main__":
    main()
