"""Weight averages ("model soups") of networks fine-tuned from one start, on FER2013 and on labelled real photos.

    python benchmarks/experiments/weight_average.py --data ../shared/data/fer2013.csv.gz \\
        --mix 20261127-212524-crop_cnn=1,20261130-011927-crop_cnn=1 [--mix ...] \\
        [--holdout-folder ../shared/data/train_wild/images] \\
        [--real-photos ../shared/data/dev_wild --real-photos ../shared/data/dev_posed]

Each --mix is VERSION=WEIGHT,...: every weight of the networks (batch-norm statistics included) averaged with
those weights, served as one network at one network's cost. Only networks that share their architecture and
their start (fine-tuned from one version) average into something sensible. Prints FER2013 PublicTest and
PrivateTest accuracy (plain argmax, float32); with --holdout-folder, the held-out fifth of a labelled folder
the networks trained beside (accuracy, Neutral recall, negative-share bias) and the selection score a training
run chooses its epoch on (the mean of PublicTest and held-out accuracy); with --real-photos, each set's
acc7 / sent3 / macro recall through the scoring path with the scoring defaults. Nothing is registered.
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def parse_mix(text: str) -> dict[str, float]:
    mix = {}
    for part in text.split(","):
        version, _, weight = part.partition("=")
        mix[version.strip()] = float(weight or 1)
    if sum(mix.values()) <= 0:
        raise SystemExit(f"--mix {text}: the weights must add up to more than 0")
    return mix


def averaged(registry, mix: dict[str, float]):
    """The first version's network with every weight replaced by the mix's weighted mean."""
    models = {version: registry.load_model(version) for version in mix}
    first = next(iter(models.values()))
    shapes = [tuple(w.shape) for w in first.weights]
    for version, model in models.items():
        if [tuple(w.shape) for w in model.weights] != shapes:
            raise SystemExit(f"{version}: its weights do not match {next(iter(mix))}'s; only one architecture averages")
    total = sum(mix.values())
    values = {version: [w.numpy() for w in model.weights] for version, model in models.items()}
    for i, variable in enumerate(first.weights):
        variable.assign(sum(mix[version] * values[version][i] for version in mix) / total)
    return first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="FER2013 CSV")
    parser.add_argument("--mix", action="append", required=True, type=parse_mix, metavar="VERSION=WEIGHT,...")
    parser.add_argument("--real-photos", action="append", default=[], metavar="DIR",
                        help="a labelled set (labels.csv), repeatable")
    parser.add_argument("--holdout-folder", default=None, metavar="DIR",
                        help="a labelled class-folder set trained beside; its held-out fifth is measured")
    parser.add_argument("--models-dir", default=None)
    args = parser.parse_args()

    from ferbatch.config import ScoreSettings
    from ferbatch.models import ModelRegistry
    from ferbatch.scoring import Components, KerasClassifier, PipelineSettings
    from ferbatch.training import load_fer2013
    from ferbatch.training._real_photos import evaluate_real_photos

    registry = ModelRegistry.at(args.models_dir)
    data = load_fer2013(args.data)
    splits = {name: data.subset(name) for name in ("PublicTest", "PrivateTest")}
    if args.holdout_folder:
        from ferbatch.training import TrainConfig
        from ferbatch.training._labelled import load_labelled_folder
        from ferbatch.training._loop import monitored_figures, selection_score

        held_out = load_labelled_folder(args.holdout_folder).held_out()
    settings = ScoreSettings()
    detector = Components.for_run(settings, next(iter(args.mix[0])), registry.root).detector()
    for mix in args.mix:
        model = averaged(registry, mix)
        shown = " + ".join(f"{weight:g} x {version}" for version, weight in mix.items())
        exact = KerasClassifier(model, version=shown)
        accuracy = {name: float((exact.predict(faces).argmax(1) == labels).mean())
                    for name, (faces, labels) in splits.items()}
        figures = [f"{name} {value:.4f}" for name, value in accuracy.items()]
        if args.holdout_folder:
            held = monitored_figures(model, *held_out, TrainConfig())  # the serving model takes the whole face
            score = selection_score({"val_accuracy": accuracy["PublicTest"], **held})
            figures.append(f"held out {held['holdout_accuracy']:.4f} (Neutral {held['holdout_neutral_recall']:.3f}"
                           f", bias {held['holdout_negative_bias']:+.3f}), selection {score:.4f}")
        if args.real_photos:
            served = KerasClassifier(model, version=shown, precision=settings.precision)
            results = evaluate_real_photos(args.real_photos, detector, served, PipelineSettings.from_settings(settings))
            figures += [f"{name} {m['acc7']:.3f} / {m['sent3']:.3f} / {m['macro_recall']:.3f}"
                        for name, m in results.items()]
        print(shown)
        print("  " + "; ".join(figures), flush=True)


if __name__ == "__main__":
    main()
