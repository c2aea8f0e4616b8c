"""The `score` flow: scan folders, score the new images shard by shard on a task runner, commit the reports."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import asdict

from prefect import flow, task, unmapped
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from ferbatch import scoring
from ferbatch.annotate import annotator
from ferbatch.components import Components
from ferbatch.console import progress_bar, summary_dict, summary_markdown
from ferbatch.detection import DetectorSettings, default_detector_path
from ferbatch.errors import FerbatchError
from ferbatch.images import DEFAULT_MAX_PIXELS
from ferbatch.registry import ModelRegistry, default_models_dir
from ferbatch.reports import OutDirLock, abort_parts
from ferbatch.sentiment import SentimentMap

RUNNERS = ("local", "dask")

scan_images = task(scoring.plan_run, name="scan", cache_policy=NO_CACHE)
write_reports = task(scoring.commit_run, name="aggregate-and-commit", cache_policy=NO_CACHE)


@task(name="score-shard", cache_policy=NO_CACHE)
def score_shard(
    shard: scoring.Shard,
    components: Components,
    settings: scoring.ScoreSettings,
    annotate: str | None = None,
    on_image: Callable[[scoring.ScoredImage], None] | None = None,
) -> scoring.ShardResult:
    """Runs wherever the task runner puts it; the detector and model are built once per process."""
    draw = annotator(annotate, shard.run.sentiment) if annotate else None

    def after_image(scored: scoring.ScoredImage) -> None:
        if draw:
            draw(scored)
        if on_image:
            on_image(scored)

    return scoring.score_shard(shard, components.detector(), components.classifier, settings, after_image)


def map_shards(
    runner: TaskRunner,
    shards: list[scoring.Shard],
    components: Components,
    settings: scoring.ScoreSettings,
    annotate: str | None = None,
    on_image: Callable[[scoring.ScoredImage], None] | None = None,
) -> list[scoring.ShardResult]:
    """Map the shard task over `runner`; if any shard fails, drop every shard's files.

    The runner is entered here rather than being the flow's, so the `runner` parameter can choose it
    at run time (also in deployments), and the file lists never become flow-run parameters.
    """
    with runner:
        futures = runner.map(score_shard, {
            "shard": shards, "components": unmapped(components), "settings": unmapped(settings),
            "annotate": unmapped(annotate), "on_image": unmapped(on_image),
        })
        results, failures = [], []
        for future in futures:
            try:
                results.append(future.result())
            except Exception as exc:  # wait for the rest, so no shard is still writing when we clean up
                failures.append(exc)
    if failures:
        abort_parts([move for result in results for move in result.moves])
        raise failures[0]
    return results


def task_runner(runner: str, dask_address: str | None = None, dask_workers: int = 2) -> TaskRunner:
    """The task runner for the shards: one shard at a time in-process, or prefect-dask's DaskTaskRunner."""
    if runner == "local":
        return ThreadPoolTaskRunner(max_workers=1)  # the classifier already uses every core
    if runner != "dask":
        raise FerbatchError(f"runner must be one of {', '.join(RUNNERS)}, not {runner!r}")
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError:
        raise FerbatchError("--runner dask needs the dask extra: pip install 'ferbatch[dask]'") from None
    if dask_address:
        return DaskTaskRunner(address=dask_address)
    # A private LocalCluster on loopback: one thread per worker process, each with its own model.
    return DaskTaskRunner(cluster_kwargs={"n_workers": dask_workers, "threads_per_worker": 1, "processes": True,
                                          "host": "127.0.0.1", "dashboard_address": None})


@flow(name="score", log_prints=True)
def score(
    paths: list[str],
    out: str,
    model: str | None = None,
    models_dir: str | None = None,
    rescore: bool = False,
    batch_size: int = 256,
    detector_size: int = 960,
    min_face: int = 20,
    score_threshold: float = 0.8,
    flip_tta: bool = False,
    include: list[str] | None = None,
    exclude: list[str] | None = None,
    sentiment_map: str | None = None,
    annotate: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    workers: int = 2,
    runner: str = "local",
    dask_address: str | None = None,
    dask_workers: int = 2,
    shard_size: int = 500,
    progress: bool = False,
) -> dict:
    """Score the faces in every new image under `paths` into Parquet reports under `out`."""
    # A path that is not there at all stops the run (a broken symlink named directly still becomes an error
    # row): a deployment run in a container whose volume was not mounted must fail, not report one error.
    missing = [path for path in paths if not os.path.lexists(path)]
    if missing:
        raise FerbatchError(f"{', '.join(map(str, missing))}: no such file or folder")
    runner_for_shards = task_runner(runner, dask_address, dask_workers)
    registry = ModelRegistry(models_dir or default_models_dir())
    version = registry.resolve(model)
    sentiment = SentimentMap.with_overrides(sentiment_map)
    components = Components(
        str(registry.root), version, str(default_detector_path(registry.root)),
        DetectorSettings(input_long_side=detector_size, score_threshold=score_threshold, min_face=min_face),
        batch_size, flip_tta,
    )
    detector = components.detector()
    settings = scoring.ScoreSettings(max_pixels=max_pixels, workers=workers, decode_long_side=detector_size)
    with OutDirLock(out):  # one run at a time per output folder, from scan to commit
        plan = scan_images(paths, out, version, detector.name, sentiment=sentiment, include=include or (),
                           exclude=exclude or (), rescore=rescore, skip_dirs=[annotate] if annotate else ())
        metadata = scoring.run_metadata(plan.run, settings, flip_tta=flip_tta, batch_size=batch_size,
                                        detector_settings=asdict(detector.settings), runner=runner)
        shards = scoring.shard_plan(plan, shard_size, metadata)
        results: list[scoring.ShardResult] = []
        if shards:
            print(f"scoring {len(plan.todo)} image(s) in {len(shards)} shard(s) on the {runner} runner")
            with progress_bar(len(plan.todo), progress and runner == "local") as advance:
                results = map_shards(runner_for_shards, shards, components, settings, annotate,
                                     (lambda _: advance()) if runner == "local" else None)
        committed = write_reports(plan, results, metadata)
        summary = summary_dict(committed)
        create_markdown_artifact(summary_markdown(summary), key="score-summary", description="Scoring run summary")
        create_table_artifact(
            [{k: (str(v) if k == "run_date" else v) for k, v in row.items()} for row in committed.aggregates],
            key="score-aggregates", description="Aggregates of this run",
        )
        return summary
