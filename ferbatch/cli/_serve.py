"""`ferbatch serve`: deployments of the three flows, served from this process (deploy/prefect.yaml declares the
same for work pools)."""

from __future__ import annotations

from pathlib import Path

import click

from ferbatch.cli._app import _config, cli
from ferbatch.config import FerbatchConfig, retrain_parameters

TAGS = ["ferbatch"]


def build_deployments(config: FerbatchConfig, config_file: Path | None = None) -> list:
    """nightly on the configured cron schedule and time zone; score and retrain run on demand."""
    from ferbatch_flows.nightly import nightly
    from ferbatch_flows.retrain import retrain
    from ferbatch_flows.score import score
    from prefect.schedules import Cron

    nightly_parameters = {"config_file": str(Path(config_file).resolve())} if config_file else {}
    # The ad hoc deployments default to the configuration too; a run may override any parameter.
    score_defaults = {"settings": config.score.model_dump(mode="json"), "sentiment": config.sentiment,
                      "models_dir": str(config.models_dir) if config.models_dir else None}
    retrain_defaults = retrain_parameters(config)
    return [
        nightly.to_deployment(
            name="nightly", schedules=[Cron(config.schedule.cron, timezone=config.schedule.timezone)],
            parameters=nightly_parameters, concurrency_limit=1, tags=TAGS,
            description="Retrain when the training data or recipe changed, then score the configured folders.",
        ),
        score.to_deployment(name="score", parameters=score_defaults, tags=TAGS,
                            description="Score image folders into Parquet reports (ad hoc)."),
        retrain.to_deployment(name="retrain", parameters=retrain_defaults, tags=TAGS,
                              description="Train, evaluate, register and maybe promote a FER model."),
    ]


def serve_deployments(config: FerbatchConfig, config_file: Path | None = None) -> None:
    """Register the deployments and run their flow runs from this process until interrupted."""
    from prefect import serve

    from ferbatch.runtime.prefect_api import configured_api_url, temporary_server_running

    if temporary_server_running() or not configured_api_url():
        import logging

        logging.getLogger(__name__).warning(
            "PREFECT_API_URL is not set: Prefect's temporary server does not fire schedules. "
            "Start `prefect server start` and set PREFECT_API_URL=http://127.0.0.1:4200/api"
        )
    serve(*build_deployments(config, config_file))


@cli.command()
@click.pass_context
def serve(ctx: click.Context) -> None:
    """Serve the nightly (on its cron schedule), score and retrain deployments from this process.

    Needs a Prefect server (`prefect server start`, then PREFECT_API_URL) or Prefect Cloud: the
    temporary server Prefect starts on its own does not fire schedules.
    """
    from ferbatch.runtime.prefect_api import prefect_api

    config = _config(ctx)
    config_file = ctx.find_root().meta.get("config", (None, None))[1]
    with prefect_api(config.prefect.startup_timeout):
        serve_deployments(config, config_file)
