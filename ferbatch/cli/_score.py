"""`ferbatch score` (the `score` flow, into a report folder) and `ferbatch analyze` (printed, nothing written)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ferbatch.cli._app import _BYTE_SIZE, _config, _FiniteFloat, _image_options, _models_dir, _models_dir_option, cli
from ferbatch.config import CLASSIFIER_PRECISIONS, ScoreSettings
from ferbatch.errors import FerbatchError
from ferbatch.runtime.interrupts import interruptible
from ferbatch.runtime.logs import hand_logging_to_prefect

_SCORE_DEFAULTS = ScoreSettings()  # for the help texts


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
