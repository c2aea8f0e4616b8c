"""`ferbatch nightly`: the night's retrain and scoring once now, ended before Prefect starts when there is
nothing to do."""

from __future__ import annotations

import json

import click

from ferbatch.cli._app import _config, cli
from ferbatch.runtime.interrupts import interruptible
from ferbatch.runtime.logs import hand_logging_to_prefect


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
