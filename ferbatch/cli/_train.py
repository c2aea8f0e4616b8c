"""`ferbatch train`, `evaluate` and `presets`: train, measure and list the models' recipes."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ferbatch.cli._app import EXISTING_DIR, EXISTING_FILE, _config, _FiniteFloat, _models_dir, _models_dir_option, cli
from ferbatch.runtime.logs import hand_logging_to_prefect
from ferbatch.training import CALIBRATIONS


@cli.command()
@click.option("--data", "data_path", type=EXISTING_FILE, default=None,
              help="FER2013 CSV, plain or .gz (default: train.data in the configuration).")
@click.option("--preset", "preset_name", default=None,
              help="Named training recipe (see `ferbatch presets`; default: train.preset, else 'default').")
@click.option("--epochs", type=click.IntRange(min=1), help="Override the preset's epochs.")
@click.option("--batch-size", type=click.IntRange(min=1), help="Override the preset's batch size.")
@click.option("--precision", type=click.Choice(["float32", "mixed_bfloat16", "mixed_float16"]),
              help="Compute precision (default: the preset's; mixed_bfloat16 is faster on bf16 CPUs).")
@click.option("--seed", type=int, help="Override the preset's seed.")
@click.option("--class-weights/--no-class-weights", default=None, help="Weight classes by inverse frequency.")
@click.option("--calibration", type=click.Choice(CALIBRATIONS), default=None,
              help="After training, fold PublicTest-chosen class biases into the model (default: the preset's).")
@click.option("--labels", type=(click.Choice(["ferplus"]), EXISTING_FILE), default=None,
              metavar="ferplus FILE", help="Train on FER+ majority-vote labels from FILE.")
@click.option("--targets", type=click.Choice(["labels", "ferplus_votes"]), default=None,
              help="What each training face is trained towards: its label, or the distribution of its FER+ votes "
                   "(with --labels ferplus FILE) (default: the preset's).")
@click.option("--teacher-weight", type=_FiniteFloat(0, 1), default=None,
              help="A distilling recipe's share of each target taken from its teacher (default: the preset's).")
@click.option("--extra-folder", type=EXISTING_DIR,
              help="Add labelled faces from class-named subfolders to Training (every fifth, by content, is held "
              "out; _unsorted/ and _skip/ are ignored).")
@click.option("--resume", is_flag=True, help="Continue the interrupted run from its last checkpoint.")
@click.option("--resume-from", metavar="VERSION", default=None,
              help="Continue a registered unfinished run (see `ferbatch models list`) to the end of its schedule.")
@click.option("--init-from", metavar="VERSION", default=None,
              help="Start a new run from a registered model's weights (e.g. fine-tune with --extra-folder).")
@click.option("--stop-after", "stop_after_minutes", type=_FiniteFloat(min=0, min_open=True), default=None,
              metavar="MINUTES", help="Stop after the last epoch that ends in time and register the run as an "
              "unfinished version that --resume-from continues, here or on another machine.")
@click.option("--real-photos", "photo_sets", type=EXISTING_DIR, multiple=True,
              help="A folder of labelled real photos (labels.csv) to measure the new model on, onto its card "
                   "(repeatable; default: train.real_photos).")
@click.option("--no-promote", is_flag=True, help="Register the model but leave the current one in place.")
@click.option("--force-promote", is_flag=True, help="Promote even if PublicTest accuracy is worse.")
@click.option("--tolerance", type=_FiniteFloat(min=0), default=0.0, show_default=True,
              help="Promote when PublicTest accuracy is at most this much below the current model's.")
@_models_dir_option
@click.pass_context
def train(ctx: click.Context, data_path: Path | None, preset_name: str | None,
          epochs: int | None, batch_size: int | None, precision: str | None,
          seed: int | None, class_weights: bool | None, calibration: str | None, labels: tuple[str, Path] | None,
          targets: str | None, teacher_weight: float | None, extra_folder: Path | None, resume: bool,
          resume_from: str | None, init_from: str | None,
          stop_after_minutes: float | None, photo_sets: tuple[Path, ...], no_promote: bool, force_promote: bool,
          tolerance: float, models_dir: Path | None) -> None:
    """Train, evaluate and register a FER model (the `retrain` flow)."""
    if no_promote and force_promote:
        raise click.UsageError("--no-promote and --force-promote contradict each other")
    config = _config(ctx)
    data_path = data_path or config.train.data
    if data_path is None:
        raise click.UsageError("give --data FILE or set train.data in the configuration")
    preset_name = preset_name or config.train.preset or "default"
    models_dir = _models_dir(ctx, models_dir)
    from ferbatch.training import recipe

    chosen = recipe(preset_name)  # fail on an unknown preset before anything starts
    if (targets or getattr(chosen, "targets", "labels")) == "ferplus_votes" and labels is None and not resume_from:
        raise click.UsageError(f"{preset_name} with FER+ vote targets needs the votes: give --labels ferplus FILE")
    if teacher_weight is not None and not getattr(chosen, "teacher", None):
        raise click.UsageError(f"--teacher-weight: {preset_name} has no teacher to distil from")
    from ferbatch.runtime.prefect_api import prefect_api

    with prefect_api(config.prefect.startup_timeout):
        from ferbatch_flows.retrain import retrain

        hand_logging_to_prefect()
        result = retrain(
            data=str(data_path),
            labels=str(labels[1]) if labels else None,
            extra_folder=str(extra_folder) if extra_folder else None,
            models_dir=str(models_dir) if models_dir else None,
            preset_name=preset_name,
            overrides={"epochs": epochs, "batch_size": batch_size, "precision": precision, "seed": seed,
                       "class_weights": class_weights, "calibration": calibration, "targets": targets,
                       "teacher_weight": teacher_weight},
            resume=resume,
            promote="never" if no_promote else "force" if force_promote else "auto",
            tolerance=tolerance,
            resume_from=resume_from,
            init_from=init_from,
            stop_after_minutes=stop_after_minutes,
            real_photos=[str(folder) for folder in (photo_sets or config.train.real_photos)] or None,
        )
    if result["unfinished"]:
        click.echo(f"unfinished run {result['version']}: epoch {result['epochs_done']} of {result['epochs']}, "
                   f"best PublicTest accuracy so far {result['best_public_accuracy']:.4f}; continue it with "
                   f"`ferbatch train --data ... --resume-from {result['version']}`")
        return
    private = result["metrics"].get("PrivateTest", {}).get("plain", {})
    click.echo(
        f"model {result['version']}: PublicTest accuracy {result['metrics']['PublicTest']['plain']['accuracy']:.4f}"
        + (f", PrivateTest accuracy {private['accuracy']:.4f}" if private else "")
        + f"; {'promoted' if result['promoted'] else 'not promoted'} ({result['reason']})"
    )



@cli.command()
@click.option("--data", "data_path", type=EXISTING_FILE, default=None, help="FER2013 CSV, plain or .gz.")
@click.option("--model", "version", default=None, help="Model version (default: the current one).")
@click.option("--labels", type=(click.Choice(["ferplus"]), EXISTING_FILE), default=None, metavar="ferplus FILE",
              help="Evaluate against FER+ majority-vote labels instead of the file's own.")
@click.option("--real-photos", "photo_sets", type=EXISTING_DIR, multiple=True,
              help="A folder of labelled real photos (labels.csv: file,label), scored as `score` scores "
                   "them; the figures go onto the model card (repeatable).")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
@_models_dir_option
@click.pass_context
def evaluate(ctx: click.Context, data_path: Path | None, version: str | None, labels: tuple[str, Path] | None,
             photo_sets: tuple[Path, ...], as_json: bool, models_dir: Path | None) -> None:
    """Re-evaluate a registered model on PublicTest and PrivateTest, and on labelled real photos."""
    from ferbatch.models import ModelRegistry

    if data_path is None and not photo_sets:
        raise click.UsageError("give --data FILE, --real-photos DIR, or both")
    registry = ModelRegistry.at(_models_dir(ctx, models_dir))
    card = registry.card(version)
    report: dict = {}
    if data_path is not None:
        from ferbatch.training import apply_ferplus_labels, evaluate_splits, load_fer2013, metrics_markdown

        data = load_fer2013(data_path)
        if labels:
            data = apply_ferplus_labels(data, labels[1])
        report["metrics"] = evaluate_splits(registry.load_model(card["version"]), data)
        if not as_json:
            click.echo(metrics_markdown({**card, "metrics": report["metrics"]}))
    if photo_sets:
        from ferbatch.training import real_photos_markdown, real_photos_on_card

        settings = _config(ctx).score
        report["real_photos"] = real_photos_on_card(registry, card["version"], photo_sets, settings)
        if not as_json:
            click.echo(real_photos_markdown(report["real_photos"]["sets"]))
    if as_json:
        click.echo(json.dumps(report if photo_sets else report["metrics"], indent=2))



@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print every setting of every recipe as JSON.")
def presets(as_json: bool) -> None:
    """List the named training recipes: key settings and what each is for."""
    from ferbatch.training import ENSEMBLES, PRESETS

    if as_json:
        click.echo(json.dumps({name: config.to_dict() for name, config in [*PRESETS.items(), *ENSEMBLES.items()]},
                              indent=2))
        return
    from ferbatch.present.console import print_presets

    print_presets(PRESETS, ENSEMBLES)
