"""The `score` flow: wiring of ferbatch.scoring.run_scoring onto a Prefect task runner, plus its artifacts."""

from __future__ import annotations

import logging
import sys
from dataclasses import replace

from prefect import flow, task, unmapped
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.futures import as_completed
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from ferbatch import scoring
from ferbatch.config import ScoreSettings
from ferbatch.errors import FerbatchError
from ferbatch.present.console import ScoringProgress, summary_markdown
from ferbatch.runtime.interrupts import deferred, keep_deadline


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
        with ScoringProgress(n_images if progress else 0, terminal=sys.stderr.isatty()) as counter, runner:
            if local and progress:  # per image decoded and detected here (classification is batched by chunk);
                scorer = replace(scorer, on_prepared=counter.advance)  # Dask: counted as each shard ends
            futures = runner.map(score_shard, {"shard": shards, "scorer": unmapped(scorer)})
            outcomes: list = [None] * len(futures)
            index = {id(future): i for i, future in enumerate(futures)}
            for future in as_completed(list(futures)):
                i = index[id(future)]
                try:
                    outcomes[i] = future.result()
                except Exception as exc:
                    outcomes[i] = exc
                if progress and not local:
                    counter.advance(len(shards[i].files))
        return outcomes

    return map_shards


def task_runner(settings: ScoreSettings) -> TaskRunner:
    """The task runner for the shards: one shard at a time in-process, or prefect-dask's DaskTaskRunner."""
    if settings.runner == "local":
        return ThreadPoolTaskRunner(max_workers=1)  # the classifier already uses every core
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError:
        raise FerbatchError("--runner dask needs the dask extra: pip install 'ferbatch[dask]'") from None
    if settings.dask_address:
        scoring.require_dask_scheduler(settings.dask_address)  # one line now, not a minute of retries
        return DaskTaskRunner(address=settings.dask_address)
    # A private LocalCluster on loopback: one thread per worker process, each with its own model.
    return DaskTaskRunner(cluster_kwargs={"n_workers": settings.dask_workers, "threads_per_worker": 1,
                                          "processes": True, "host": "127.0.0.1", "dashboard_address": None})


@flow(name="score", log_prints=True)
def score(
    settings: ScoreSettings,
    sentiment: dict[str, str] | None = None,
    model: str | None = None,
    models_dir: str | None = None,
    rescore: bool = False,
    annotate: str | None = None,
    progress: bool = False,
) -> dict:
    """Score the faces in every new image under `settings.folders` into Parquet reports under `settings.out`.

    `sentiment` changes the default emotion -> sentiment map; `model` defaults to the current one.
    """
    keep_deadline()  # SIGTERM during the flow still ends the `ferbatch` process within seconds
    committed = scoring.run_scoring(
        settings, scoring.Components.for_run(settings, model, models_dir),
        sentiment=scoring.SentimentMap.with_overrides(sentiment), rescore=rescore, annotate=annotate,
        map_shards=shard_mapper(task_runner(settings), progress),
        defer_signals=deferred,  # a signal during the commit's renames takes effect after them
    )
    summary = committed.to_dict()
    try:  # the reports are committed: losing the Prefect server now must not fail the run
        create_markdown_artifact(summary_markdown(summary), key="score-summary", description="Scoring run summary")
        if committed.aggregates:  # a run that scored nothing writes no aggregates; the summary artifact records it
            create_table_artifact(
                [{k: (str(v) if k == "run_date" else v) for k, v in row.items()} for row in committed.aggregates],
                key="score-aggregates", description="Aggregates of this run",
            )
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        logging.getLogger("ferbatch.flows").warning("run %s committed; its Prefect artifacts were not saved: %s",
                                                    committed.run_id, first)
    return summary
