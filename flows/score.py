"""The `score` flow: wiring of ferbatch.scoring.run_scoring onto a Prefect task runner, plus its artifacts."""

from __future__ import annotations

from dataclasses import asdict, replace

from prefect import flow, task, unmapped
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from ferbatch import scoring
from ferbatch.console import progress_bar, summary_dict, summary_markdown
from ferbatch.errors import FerbatchError
from ferbatch.registry import ModelRegistry, default_models_dir
from ferbatch.scoring import DEFAULT_MAX_PIXELS, Components, DetectorSettings, SentimentMap, default_detector_path

RUNNERS = ("local", "dask")


@task(name="score-shard", cache_policy=NO_CACHE)
def score_shard(shard: scoring.Shard, scorer: scoring.ShardScorer) -> scoring.ShardResult:
    """Runs wherever the task runner puts it; the detector and model are built once per process."""
    return scorer(shard)


def shard_mapper(runner: TaskRunner, progress: bool = False) -> scoring.ShardMapper:
    """Maps the shard task over `runner`, waiting for every shard so none is still writing at cleanup.

    The runner is entered here rather than being the flow's, so the `runner` parameter can choose it
    at run time (also in deployments), and the file lists never become flow-run parameters.
    """

    def map_shards(scorer: scoring.ShardScorer, shards: list[scoring.Shard]) -> list:
        local = isinstance(runner, ThreadPoolTaskRunner)
        n_images = sum(len(shard.files) for shard in shards)
        print(f"scoring {n_images} image(s) in {len(shards)} shard(s) on the {'local' if local else 'dask'} runner")
        with progress_bar(n_images, progress and local) as advance, runner:
            if local and progress:
                scorer = replace(scorer, on_image=lambda _: advance())
            futures = runner.map(score_shard, {"shard": shards, "scorer": unmapped(scorer)})
            outcomes = []
            for future in futures:
                try:
                    outcomes.append(future.result())
                except Exception as exc:
                    outcomes.append(exc)
        return outcomes

    return map_shards


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
    mapper = shard_mapper(task_runner(runner, dask_address, dask_workers), progress)
    registry = ModelRegistry(models_dir or default_models_dir())
    detector_settings = DetectorSettings(input_long_side=detector_size, score_threshold=score_threshold,
                                         min_face=min_face)
    components = Components(str(registry.root), registry.resolve(model), str(default_detector_path(registry.root)),
                            detector_settings, batch_size, flip_tta)
    settings = scoring.ScoreSettings(max_pixels=max_pixels, workers=workers, decode_long_side=detector_size)
    committed = scoring.run_scoring(
        paths, out, components, settings=settings, sentiment=SentimentMap.with_overrides(sentiment_map),
        include=include or (), exclude=exclude or (), rescore=rescore, annotate=annotate, shard_size=shard_size,
        map_shards=mapper, metadata={"flip_tta": flip_tta, "batch_size": batch_size,
                                     "detector_settings": asdict(detector_settings), "runner": runner},
    )
    summary = summary_dict(committed)
    create_markdown_artifact(summary_markdown(summary), key="score-summary", description="Scoring run summary")
    create_table_artifact(
        [{k: (str(v) if k == "run_date" else v) for k, v in row.items()} for row in committed.aggregates],
        key="score-aggregates", description="Aggregates of this run",
    )
    return summary
