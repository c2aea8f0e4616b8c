"""`ferbatch models`: list, calibrate, promote and register the registry's versions."""

from __future__ import annotations

from pathlib import Path

import click

from ferbatch.cli._app import EXISTING_DIR, EXISTING_FILE, _FiniteFloat, _Group, _models_dir, _models_dir_option, cli
from ferbatch.training import CALIBRATION_OBJECTIVES


@cli.group(cls=_Group)
def models() -> None:
    """Inspect the model registry; calibrate and promote its versions."""


@models.command("list")
@_models_dir_option
@click.pass_context
def list_models(ctx: click.Context, models_dir: Path | None) -> None:
    """Registered versions with their key metrics; * marks the current one."""
    from ferbatch.errors import RegistryError
    from ferbatch.models import ModelRegistry

    registry = ModelRegistry.at(_models_dir(ctx, models_dir))
    problems = registry.card_problems()  # a card that cannot be read hides its own version, said in one line
    versions = [version for version in registry.versions() if version not in problems]
    unfinished = registry.unfinished_versions()
    for problem in problems.values():
        click.echo(f"warning: {problem}", err=True)
    if not versions and not unfinished:
        click.echo(f"no models registered in {registry.root}")
        return
    try:
        current = registry.current_version()
    except RegistryError as exc:  # the list is still worth showing; nothing is marked current
        click.echo(f"warning: {exc}", err=True)
        current = None
    rows = []
    for version in versions:
        card = registry.card(version)
        metrics = card["metrics"]
        private = metrics.get("PrivateTest") or {}
        rows.append({"version": version, "current": version == current, "parameters": card.get("parameters"),
                     "public": metrics["PublicTest"]["plain"]["accuracy"],
                     "private": _accuracy(private, "plain"), "private_flip": _accuracy(private, "flip_tta"),
                     "labels": card.get("label_source") or "-",
                     "real_photos": (card.get("real_photos") or {}).get("sets") or {}})
    runs = []
    for version in unfinished:
        try:
            card = registry.unfinished_card(version)
        except RegistryError as exc:
            click.echo(f"warning: {exc}", err=True)
            continue
        runs.append({"version": version, "epochs_done": card["epochs_done"],
                     "epochs": card["training_config"]["epochs"], "best_public": card["best_public_accuracy"]})
    from ferbatch.present.console import print_models

    print_models(rows, runs)


def _accuracy(split: dict, mode: str) -> float | None:
    value = split.get(mode) if isinstance(split, dict) else None
    return value.get("accuracy") if isinstance(value, dict) else None


@models.command("calibrate")
@click.argument("version")
@click.option("--data", "data_path", type=EXISTING_FILE, required=True,
              help="FER2013 CSV, plain or .gz: the biases are chosen on its PublicTest.")
@click.option("--objective", type=click.Choice(list(CALIBRATION_OBJECTIVES)), default="macro_f1", show_default=True,
              help="macro_f1_keep_neutral leaves Neutral's bias at 0 (for FER+ vote-trained models).")
@click.option("--guard-folder", type=EXISTING_DIR, default=None,
              help="Labelled faces the model trained beside (--extra-folder): their held-out fifth may lose at "
                   "most half a point of accuracy to the biases.")
@_models_dir_option
@click.pass_context
def calibrate_model(ctx: click.Context, version: str, data_path: Path, objective: str, guard_folder: Path | None,
                    models_dir: Path | None) -> None:
    """Register a copy of VERSION with per-class biases chosen on PublicTest (macro-F1, accuracy kept);
    the copy is not promoted."""
    import tempfile

    from ferbatch.models import ModelRegistry
    from ferbatch.training import calibrate_registered, metrics_markdown

    registry = ModelRegistry.at(_models_dir(ctx, models_dir))
    source = registry.resolve(version)
    with tempfile.TemporaryDirectory(prefix="ferbatch-calibrate-") as report_dir:
        calibrated = calibrate_registered(registry, source, data_path, Path(report_dir), objective, guard_folder)
    click.echo(metrics_markdown(registry.card(calibrated)))
    click.echo(f"registered {calibrated}: {source} with PublicTest class biases; "
               f"promote it with `ferbatch models promote {calibrated}`")


@models.command("promote")
@click.argument("version")
@click.option("--force", is_flag=True, help="Promote even if its PublicTest accuracy is below the current one's.")
@click.option("--tolerance", type=_FiniteFloat(min=0), default=0.0, show_default=True,
              help="Promote when PublicTest accuracy is at most this much below the current model's.")
@_models_dir_option
@click.pass_context
def promote_model(ctx: click.Context, version: str, force: bool, tolerance: float, models_dir: Path | None) -> None:
    """Make VERSION the current model (what score and nightly use) if it passes the PublicTest gate."""
    from ferbatch.models import ModelRegistry

    registry = ModelRegistry.at(_models_dir(ctx, models_dir))
    decision = registry.promote(registry.resolve(version), force=force, tolerance=tolerance)
    if not decision.promoted:
        raise click.ClickException(f"{decision.version} not promoted: {decision.reason} (--force overrides)")
    click.echo(f"{decision.version} is the current model ({decision.reason}; was {decision.previous or 'none'})")


@models.command("register-unfinished")
@click.option("--data", "data_path", type=EXISTING_FILE, required=True, help="The FER2013 CSV the run trains on.")
@click.option("--preset", "preset_name", default=None, help="The preset the run was started with (for the card).")
@click.option("--labels", type=(click.Choice(["ferplus"]), EXISTING_FILE), default=None, metavar="ferplus FILE",
              help="The FER+ file the run trains on, if any (for the card's data sources).")
@_models_dir_option
@click.pass_context
def register_unfinished_run(ctx: click.Context, data_path: Path, preset_name: str | None,
                            labels: tuple[str, Path] | None, models_dir: Path | None) -> None:
    """Register the work folder's run (in progress or interrupted) as an unfinished version to commit and
    continue elsewhere with `train --resume-from`."""
    from ferbatch.models import ModelRegistry
    from ferbatch.training import checkpoint_dir, source_digests, unfinished_card_for, work_dir

    registry = ModelRegistry.at(_models_dir(ctx, models_dir))
    workdir = checkpoint_dir(work_dir(registry.root))
    version = registry.register_unfinished(
        workdir, unfinished_card_for(workdir, preset_name,
                                     sources=source_digests(data_path, labels[1] if labels else None)))
    card = registry.unfinished_card(version)
    click.echo(f"registered unfinished run {version}: epoch {card['epochs_done']} of "
               f"{card['training_config']['epochs']}, {card['bytes'] / 1e6:.1f} MB")


# Defaults for the `ferbatch` process, set before TensorFlow or Prefect load (importing ferbatch changes nothing).
