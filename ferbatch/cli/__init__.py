"""The `ferbatch` command line: thin wrappers over the flows and library functions."""

from __future__ import annotations

import errno
import json
import math
import os
import sys
from pathlib import Path

import click

from ferbatch.config import CLASSIFIER_PRECISIONS, ScoreSettings
from ferbatch.errors import FerbatchError
from ferbatch.runtime.interrupts import interruptible
from ferbatch.runtime.logs import configure_logging, hand_logging_to_prefect
from ferbatch.training import CALIBRATION_OBJECTIVES, CALIBRATIONS

EXISTING_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)
EXISTING_DIR = click.Path(exists=True, file_okay=False, path_type=Path)
_SCORE_DEFAULTS = ScoreSettings()  # for the help texts


class _ByteSize(click.ParamType):
    """A size in bytes: a number, or with a unit (512MiB, 1GB), as the configuration file takes it."""

    name = "size"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> int:
        from pydantic import ByteSize, TypeAdapter, ValidationError

        try:
            size = TypeAdapter(ByteSize).validate_python(value)
        except ValidationError:
            self.fail(f"{value!r} is not a size (a number of bytes, or e.g. 512MiB, 1GB)", param, ctx)
        if size < 1:
            self.fail("must be at least 1 byte", param, ctx)
        return int(size)


_BYTE_SIZE = _ByteSize()


class _FiniteFloat(click.FloatRange):
    """A float option: nan and inf are refused (no comparison with them holds, so a range would let them by)."""

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> float:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


class _UsageError(click.ClickException):
    """A usage error in one line, with where to look, instead of click's usage block (exit code 2 as click's)."""

    exit_code = 2


def _one_line(exc: click.UsageError) -> _UsageError:
    where = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx is not None else ""
    return _UsageError(f"{exc.format_message().rstrip('.')}{where}")


class _Group(click.Group):
    """Turns user errors raised anywhere below into click's one-line `Error: ...` and exit code 1, and usage errors
    into one line too (exit code 2)."""

    def make_context(self, info_name: str | None, args: list[str], parent: click.Context | None = None,
                     **extra: object) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as exc:
            raise _one_line(exc) from None

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except FerbatchError as exc:
            raise click.ClickException(str(exc)) from None
        except click.UsageError as exc:
            raise _one_line(exc) from None


def _models_dir_option(function):
    return click.option(
        "--models-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
        help="Model registry folder (default: $FERBATCH_MODELS_DIR or the project's models/).",
    )(function)


def _image_options(function):
    """The options `score` and `analyze` share: which files, the sentiment map, annotated copies."""
    for option in reversed([
        click.option("--include", multiple=True, help="Only files matching this glob (repeatable)."),
        click.option("--exclude", multiple=True, help="Skip files matching this glob (repeatable)."),
        click.option("--sentiment-map", default=None, metavar="EMOTION=SENTIMENT,...",
                     help="Change the default map, e.g. 'Surprise=positive'."),
        click.option("--annotate", type=click.Path(file_okay=False, path_type=Path), default=None,
                     help="Also write copies of the images with boxes and labels drawn into this folder."),
    ]):
        function = option(function)
    return function


def _config(ctx: click.Context):
    """The effective configuration, read once per command (see `ferbatch config show`)."""
    from ferbatch.config import load_config

    root = ctx.find_root()
    if "config" not in root.meta:
        root.meta["config"] = load_config(root.params.get("config_file"))
    return root.meta["config"][0]


def _models_dir(ctx: click.Context, option: Path | None) -> Path | None:
    """--models-dir, else the configuration's models_dir (file or FERBATCH_MODELS_DIR): every command the same."""
    return option or _config(ctx).models_dir


@click.group(cls=_Group)
@click.version_option(package_name="ferbatch")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@click.option("--config", "config_file", type=EXISTING_FILE, default=None,
              help="Configuration file (default: $FERBATCH_CONFIG, else ./ferbatch.toml if present).")
def cli(verbose: bool, config_file: Path | None) -> None:
    """Facial-sentiment scoring of image folders, with its own FER2013 CNN."""
    configure_logging(verbose)


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
@click.argument("paths", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Report folder: faces/, images/ and aggregates/ Parquet datasets (default: score.out).")
@click.option("--model", "version", default=None, help="Model version (default: models/current.json).")
@_models_dir_option
@click.option("--rescore", is_flag=True, help="Score images again even if this model already scored them.")
@click.option("--batch-size", type=click.IntRange(min=1),
              help=f"Faces per classifier call [default: {_SCORE_DEFAULTS.batch_size}].")
@click.option("--detector-size", type=click.IntRange(min=64),
              help="Long side in pixels of the copy the face detector sees "
                   f"[default: {_SCORE_DEFAULTS.detector_size}].")
@click.option("--min-face", type=click.IntRange(min=1),
              help=f"Smallest face side kept, in original pixels [{_SCORE_DEFAULTS.min_face}].")
@click.option("--score-threshold", type=_FiniteFloat(0, 1),
              help=f"Face detector confidence threshold [{_SCORE_DEFAULTS.score_threshold}].")
@click.option("--flip-tta/--no-flip-tta", default=None, help="Average each face with its mirror image.")
@click.option("--precision", type=click.Choice(CLASSIFIER_PRECISIONS), default=None,
              help="Classifier arithmetic; auto: bfloat16 where the CPU has it natively "
                   f"[{_SCORE_DEFAULTS.precision}].")
@_image_options
@click.option("--max-pixels", type=click.IntRange(min=1),
              help="Images with more pixels become error rows (decompression bomb guard) "
                   f"[{_SCORE_DEFAULTS.max_pixels}].")
@click.option("--max-bytes", type=_BYTE_SIZE, metavar="SIZE",
              help="Larger files become error rows, unread: bytes, or e.g. 512MiB, 1GB "
                   f"[{_SCORE_DEFAULTS.max_bytes.human_readable()}].")
@click.option("--follow-links/--no-follow-links", default=None,
              help="Read symlinked files and folders that lead outside the scanned folders [no].")
@click.option("--workers", type=click.IntRange(min=1),
              help=f"Threads decoding and detecting per process [{_SCORE_DEFAULTS.workers}].")
@click.option("--runner", type=click.Choice(["local", "dask"]), default=None,
              help=f"Where shards run: in this process, or on Dask via prefect-dask [{_SCORE_DEFAULTS.runner}].")
@click.option("--dask-address", default=None, metavar="tcp://HOST:PORT",
              help="Dask scheduler for --runner dask (default: a LocalCluster on 127.0.0.1).")
@click.option("--dask-workers", type=click.IntRange(min=1),
              help=f"LocalCluster worker processes [{_SCORE_DEFAULTS.dask_workers}].")
@click.option("--shard-size", type=click.IntRange(min=1),
              help=f"Images per shard (one Parquet part each) [{_SCORE_DEFAULTS.shard_size}].")
@click.option("--fail-on-error", is_flag=True, help="Exit with code 3 if any image became an error row.")
@click.option("--fail-on-empty", is_flag=True, help="Exit with code 4 if no image files were found at all.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json", "markdown"]), default="table",
              show_default=True, help="How to print the run summary.")
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
@click.pass_context
@interruptible  # SIGTERM / SIGINT: out within seconds, no process left behind, exit code by commit
def score(ctx: click.Context, paths: tuple[Path, ...], out_dir: Path | None, version: str | None,
          models_dir: Path | None, rescore: bool, include: tuple[str, ...], exclude: tuple[str, ...],
          sentiment_map: str | None, annotate: Path | None, fail_on_error: bool, fail_on_empty: bool,
          fmt: str, as_json: bool, **options: object) -> None:
    """Score the faces in image folders into Parquet reports (the `score` flow).

    Without PATHS, scores the configured score.folders; unset options come from the configuration.
    """
    from ferbatch.scoring import SentimentMap, parse_sentiment_map

    config = _config(ctx)
    settings = config.score.with_overrides(
        folders=list(paths) or None, out=out_dir, include=list(include) or None, exclude=list(exclude) or None,
        **options,
    ).require_folders()
    sentiment = parse_sentiment_map(sentiment_map) if sentiment_map else config.sentiment
    SentimentMap.with_overrides(sentiment)  # a bad map fails before anything starts
    models_dir = _models_dir(ctx, models_dir)
    if annotate:
        from ferbatch.scoring import check_annotations_folder

        check_annotations_folder(annotate, settings.folders, settings.out)
    if settings.runner == "dask" and settings.dask_address:
        from ferbatch.scoring import require_dask_scheduler

        require_dask_scheduler(settings.dask_address)
    from ferbatch.runtime.prefect_api import configured_api_url, prefect_api
    from ferbatch.scoring import Components, preview_run, skipped_run_summary

    # Before Prefect's server starts: a corrupt model, a folder another run holds, or nothing to do at all.
    model_version = Components.for_run(settings, version, models_dir).model_version
    preview = preview_run(settings, model_version, rescore=rescore, skip_dirs=[annotate] if annotate else ())
    if not preview.has_new and not configured_api_url():  # with a configured API the run is recorded as usual
        _print_score_summary(skipped_run_summary(settings, preview, model_version).to_dict(), settings, fmt,
                             as_json, fail_on_error, fail_on_empty)
        return
    from ferbatch.reports import committed_runs

    already = len(committed_runs())
    with prefect_api(config.prefect.startup_timeout):
        from ferbatch_flows.score import score as score_flow

        hand_logging_to_prefect()
        try:
            summary = score_flow(settings, sentiment, model=version,
                                 models_dir=str(models_dir) if models_dir else None, rescore=rescore,
                                 annotate=str(annotate) if annotate else None, progress=True)
        except Exception as exc:
            if len(committed_runs()) == already:
                raise
            # The reports are complete: a Prefect server lost after the commit does not make the run a failure.
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            click.echo(f"warning: run {committed_runs()[-1]} committed its reports, but Prefect could not record "
                       f"the end of the run ({first})", err=True)
            return
    _print_score_summary(summary, settings, fmt, as_json, fail_on_error, fail_on_empty)


def _print_score_summary(summary: dict, settings: ScoreSettings, fmt: str, as_json: bool, fail_on_error: bool,
                         fail_on_empty: bool) -> None:
    from ferbatch.present.console import format_summary, print_summary

    if as_json or fmt != "table":
        click.echo(format_summary(summary, "json" if as_json else fmt))
    else:
        print_summary(summary)
    if fail_on_error and summary["error"]:
        raise click.exceptions.Exit(3)
    if fail_on_empty and not summary["images_found"]:
        from ferbatch.scoring import no_images_message

        click.echo(f"Error: {no_images_message(settings.folders)}", err=True)
        raise click.exceptions.Exit(4)


@cli.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--model", "version", default=None, help="Model version (default: models/current.json).")
@_models_dir_option
@_image_options
@click.option("--json", "as_json", is_flag=True, help="Print every image and face as JSON.")
@click.pass_context
def analyze(ctx: click.Context, paths: tuple[Path, ...], version: str | None, models_dir: Path | None,
            include: tuple[str, ...], exclude: tuple[str, ...], sentiment_map: str | None, annotate: Path | None,
            as_json: bool) -> None:
    """Print the faces in images or folders: box, emotion, its probability, sentiment and score.

    The same detector, framing and model as `score`, with the configured score settings, but no Prefect
    and no report folder: nothing is written (except --annotate's copies).
    """
    from ferbatch.scoring import annotator, check_annotations_folder, parse_sentiment_map

    config = _config(ctx)
    sentiment = parse_sentiment_map(sentiment_map) if sentiment_map else config.sentiment
    if annotate:  # before the model loads: a refused folder is the first thing said
        check_annotations_folder(annotate, paths)
    from ferbatch.analysis import Analyzer

    analyzer = Analyzer(model=version, models_dir=_models_dir(ctx, models_dir), settings=config.score,
                        sentiment=sentiment)
    draw = annotator(annotate, analyzer.sentiment) if annotate else None
    images = list(analyzer.images(paths, include=include, exclude=exclude, skip_dirs=[annotate] if annotate else (),
                                  on_image=draw))
    if not images:
        from ferbatch.scoring import no_images_message

        raise FerbatchError(no_images_message(paths))
    if as_json:
        click.echo(json.dumps({"model_version": analyzer.model_version,
                               "images": [image.to_dict() for image in images]}, indent=2))
    else:
        from ferbatch.present.console import print_analysis

        print_analysis(images, analyzer.model_version)
    if all(image.status == "error" for image in images):  # nothing analysed: a script must see it failed
        raise FerbatchError(f"none of the {len(images)} image(s) could be read or decoded (see the errors above)")


@cli.command()
@click.option("--force-retrain", is_flag=True,
              help="Retrain even if the data are unchanged or the same candidate was refused before.")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_context
@interruptible
def nightly(ctx: click.Context, force_retrain: bool, as_json: bool) -> None:
    """Run the nightly job once now: fine-tune the current model if its training files changed (new labelled
    faces), then score the configured folders."""
    from ferbatch.present.console import print_summary

    config = _config(ctx)  # a bad configuration fails here, before Prefect starts
    config_file = ctx.find_root().meta["config"][1]
    result = _quiet_night(config, force_retrain)
    if result is None:
        from ferbatch.runtime.prefect_api import prefect_api

        with prefect_api(config.prefect.startup_timeout):
            from ferbatch_flows.nightly import nightly as nightly_flow

            hand_logging_to_prefect()
            result = nightly_flow(config_file=str(config_file) if config_file else None,
                                  force_retrain=force_retrain)
    if as_json:
        click.echo(json.dumps(result, indent=2, default=str))
        return
    _echo_retrain(result["retrain"])
    print_summary(result["score"])


def _quiet_night(config, force_retrain: bool) -> dict | None:
    """The night's result when it has nothing to train and nothing to score (found in seconds, before Prefect
    starts, as `score` finds it), else None. Every configuration mistake fails here first, a line each."""
    from ferbatch.models import ModelRegistry
    from ferbatch.runtime.prefect_api import configured_api_url
    from ferbatch.training import check_nightly, tonight

    check_nightly(config)
    registry = ModelRegistry.at(config.models_dir)
    plan, _ = tonight(config, registry, force_retrain)
    if plan.action != "skip" or configured_api_url():  # with a configured API the night is recorded as usual
        return None
    from ferbatch.scoring import Components, preview_run, skipped_run_summary

    settings = config.score
    model_version = Components.for_run(settings, None, registry.root).model_version
    preview = preview_run(settings, model_version)
    if preview.has_new:
        return None
    return {"retrain": {"ran": False, "action": "skip", "reason": plan.reason, "result": None},
            "score": skipped_run_summary(settings, preview, model_version).to_dict()}


def _figure(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _echo_retrain(retrain: dict) -> None:
    """What the nightly retrain did, wrapped to 80 columns, with the gate's figures before and after."""
    import textwrap

    action = {"skip": "skipped", "fine_tune": "fine-tuned", "retrain": "retrained"}[retrain.get("action", "skip")]
    click.echo(textwrap.fill(f"retrain: {action} ({retrain['reason']})", 80, subsequent_indent="  "))
    result = retrain.get("result")
    if not result:
        return
    verdict = "promoted" if result.get("promoted") else "not promoted"
    click.echo(textwrap.fill(f"model {result['version']}: {verdict} ({result.get('reason')})", 80,
                             subsequent_indent="  "))
    gate = result.get("gate")
    if gate:
        holdout = gate["user_holdout"]
        click.echo(f"  PublicTest accuracy       {_figure(gate['PublicTest']['before'])} -> "
                   f"{_figure(gate['PublicTest']['after'])}")
        click.echo(f"  user holdout ({holdout['faces']:>3} faces) {_figure(holdout['before'])} -> "
                   f"{_figure(holdout['after'])}")
        if holdout.get("note"):
            click.echo(textwrap.fill(f"  too few held-out faces: {holdout['note']}", 80, subsequent_indent="    "))
    if result.get("minutes") is not None:
        click.echo(f"  took {result['minutes']:.1f} of train.max_minutes = {result.get('budget_minutes')}")


@cli.command()
@click.pass_context
def serve(ctx: click.Context) -> None:
    """Serve the nightly (on its cron schedule), score and retrain deployments from this process.

    Needs a Prefect server (`prefect server start`, then PREFECT_API_URL) or Prefect Cloud: the
    temporary server Prefect starts on its own does not fire schedules.
    """
    from ferbatch.deployments import serve_deployments
    from ferbatch.runtime.prefect_api import prefect_api

    config = _config(ctx)
    config_file = ctx.find_root().meta.get("config", (None, None))[1]
    with prefect_api(config.prefect.startup_timeout):
        serve_deployments(config, config_file)


@cli.group(cls=_Group)
def config() -> None:
    """Inspect the configuration (ferbatch.toml plus FERBATCH_* environment overrides)."""


@config.command("show")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of TOML.")
@click.pass_context
def show_config(ctx: click.Context, as_json: bool) -> None:
    """Print the effective configuration and where it came from."""
    from ferbatch.config import annotated_toml

    effective = _config(ctx)
    source = ctx.find_root().meta["config"][1]
    if as_json:
        click.echo(effective.model_dump_json(indent=2))
        return
    click.echo(f"# from {source or 'defaults'}, with FERBATCH_* environment overrides applied;\n"
               "# commented keys are unset")
    click.echo(annotated_toml(effective), nl=False)


@config.command("init")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path), default="ferbatch.toml")
def init_config(path: Path) -> None:
    """Write a commented ferbatch.toml (default: ./ferbatch.toml) with every key at its default; never overwrites."""
    from ferbatch.config import write_config_template

    click.echo(f"wrote {write_config_template(path)}")


@cli.command()
@click.argument("out_dir", type=EXISTING_DIR)
@click.option("--images", "rows", flag_value="images", default=None,
              help="The rows themselves: one per image (its latest scoring), instead of the aggregates.")
@click.option("--faces", "rows", flag_value="faces", help="The rows themselves: one per face.")
@click.option("--folder", default=None, help="With --images / --faces: only this first-level folder "
              "(or '(top level)').")
@click.option("--emotion", default=None, help="With --images / --faces: only rows whose top emotion is this.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="With --images / --faces: at most N rows.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json", "markdown"]), default="table",
              show_default=True, help="Tables that fit 80 columns, or every column as CSV or JSON, or Markdown.")
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
@click.option("--run", "run_id", default=None, metavar="RUN_ID|latest",
              help="One run's rows from the history instead of the current table (one row per photo).")
@click.option("--html", "html_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Instead, write the charts to one self-contained HTML FILE.")
def report(out_dir: Path, rows: str | None, folder: str | None, emotion: str | None, limit: int | None, fmt: str,
           as_json: bool, run_id: str | None, html_file: Path | None) -> None:
    """Print the aggregates of the current table (every photo once, by its newest scoring), read back from the
    Parquet in OUT_DIR; --run shows one run instead (the latest that scored images, or RUN_ID); --images or
    --faces print the rows themselves (each image's latest scoring)."""
    fmt = "json" if as_json else fmt
    if rows is None:
        unused = [name for name, value in (("--folder", folder), ("--emotion", emotion), ("--limit", limit))
                  if value is not None]
        if unused:
            raise click.UsageError(f"{', '.join(unused)}: only with --images or --faces")
    elif html_file is not None or run_id is not None:
        raise click.UsageError(f"{'--html' if html_file is not None else '--run'} and --{rows} contradict each other")
    if html_file is not None:
        from ferbatch.present.html_report import write_html_report

        click.echo(f"wrote {write_html_report(out_dir, html_file, run_id=run_id)}")
        return
    from ferbatch.reports import ReportStore

    store = ReportStore(out_dir)
    if rows is not None:
        from ferbatch.present.console import print_rows

        print_rows(store.rows(rows, folder=folder, emotion=emotion, limit=limit).to_pylist(), rows, fmt=fmt)
        return
    from ferbatch.present.console import print_aggregates

    table = store.current_aggregates() if run_id is None else None
    if table is None:  # a folder from before the current table, or --run
        table = store.latest_aggregates() if run_id in (None, "latest") else store.run_aggregates(run_id)
    if table is None:
        raise FerbatchError(f"{out_dir}: no scored run yet (a run with nothing new writes no report)"
                            if store.is_report_folder() else f"{out_dir}: not a ferbatch --out folder (no scored run)")
    print_aggregates(table.to_pylist(), fmt=fmt)


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


@cli.group(cls=_Group)
def label() -> None:
    """The labelling loop: export faces to sort into class folders for the nightly fine-tune."""


@label.command("export")
@click.argument("out_dir", type=EXISTING_DIR)
@click.option("--to", "destination", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Labelling folder: crops go to DIR/_unsorted/, sort them into DIR/Happy/, DIR/Sad/, ...")
@click.option("--uncertain", type=click.IntRange(min=1), default=None, metavar="N",
              help="The N least confident faces (the default, N = 100).")
@click.option("--sample", type=click.IntRange(min=1), default=None, metavar="N", help="N faces at random.")
@click.option("--since", type=click.DateTime(formats=["%Y-%m-%d"]), default=None, metavar="DATE",
              help="Only faces of runs on or after DATE (YYYY-MM-DD).")
@click.pass_context
def export_labels(ctx: click.Context, out_dir: Path, destination: Path, uncertain: int | None, sample: int | None,
                  since) -> None:
    """Write 96 px face crops of a scored output folder, plus a CSV linking each to its image."""
    from ferbatch.labelling import export_faces

    if uncertain is not None and sample is not None:
        raise click.UsageError("--uncertain and --sample choose faces differently: give one of them")
    if sample is None and uncertain is None:
        uncertain = 100
    result = export_faces(out_dir, destination, uncertain=uncertain, sample=sample,
                          since=since.date() if since else None, scanned=list(_config(ctx).score.folders))
    click.echo(f"wrote {len(result.written)} face crop(s) to {destination / '_unsorted'}")
    if result.csv_path:
        click.echo(f"wrote {result.csv_path}")
    for reason, count in sorted(result.skipped.items()):
        click.echo(f"skipped {count}: {reason.replace('_', ' ')}", err=True)
    if result.written:
        click.echo("next: move each crop into a class folder (Happy/, Sad/, ...) or _skip/,")
        click.echo("then set train.extra_folder to this folder for the nightly fine-tune")


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
_ENVIRONMENT = {
    "PREFECT_LOGGING_EXTRA_LOGGERS": "ferbatch",  # ferbatch's own log lines go to Prefect's run logs too
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",  # keep Prefect quiet on offline machines
    "DO_NOT_TRACK": "1",  # and without its telemetry notice on a first run
    "PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW": "ignore",  # progress lines from worker threads: no warning
}


def _verbose(argv: list[str]) -> bool:
    """`-v`/`--verbose` among the group's options, i.e. before the command name."""
    args = iter(argv)
    for arg in args:
        if arg in ("-v", "--verbose"):
            return True
        if arg == "--config":
            next(args, None)  # its value
        elif not arg.startswith("-"):
            return False
    return False


_OUTPUT_ERRORS = {errno.ENOSPC, errno.EPIPE, errno.EIO, errno.EDQUOT, errno.EFBIG, errno.EBADF, errno.ECONNRESET}


def _output_failed(exc: OSError) -> None:
    """The output cannot be written (`> /dev/full`, a closed pipe): one line on stderr, exit code 1, and no second
    complaint from Python as it flushes stdout on its way out."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
    if exc.errno != errno.EPIPE:  # a reader that went away needs no message
        sys.stderr.write(f"Error: cannot write the output ({exc.strerror or exc})\n")
        sys.stderr.flush()
    sys.exit(1)


def main() -> None:
    from ferbatch.runtime.quiet import quiet_environment, silence_native_stderr

    for name, value in _ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    if not _verbose(sys.argv[1:]):  # -v shows TensorFlow's, absl's, CUDA's and OpenCV's own lines
        quiet_environment()
        silence_native_stderr()
    code: object = 0
    try:
        cli()
    except SystemExit as done:
        code = done.code
    except OSError as exc:
        # A write to stdout that failed (a full disk, a closed pipe) carries no file name; every other OSError the
        # commands meet names its file in a FerbatchError. Said in one line; anything else here is a bug.
        if exc.filename is None and exc.errno in _OUTPUT_ERRORS:
            _output_failed(exc)
        raise
    try:
        sys.stdout.flush()
    except OSError as exc:
        _output_failed(exc)
    sys.exit(code)
