"""Deployments: `ferbatch serve`'s and deploy/prefect.yaml's, registered against the test harness server
and read back, schedule and time zone included."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml

from ferbatch.config import load_config

pytestmark = pytest.mark.usefixtures("prefect_harness")
PROJECT = Path(__file__).resolve().parents[1]


def _next_run(cron: str, timezone: str) -> datetime:
    from prefect.server.schemas.schedules import CronSchedule

    return asyncio.run(CronSchedule(cron=cron, timezone=timezone).get_dates(1))[0]


def _read_back(name: str):
    from prefect import get_client

    with get_client(sync_client=True) as client:
        return client.read_deployment_by_name(name)


def test_serve_deployments_carry_the_configured_schedule_and_zone(tmp_path):
    from ferbatch.cli._serve import build_deployments

    path = tmp_path / "ferbatch.toml"
    path.write_text('models_dir = "m"\n[score]\nfolders = ["photos"]\nbatch_size = 64\n'
                    '[train]\ndata = "fer.csv"\npreset = "smoke"\n[schedule]\ntimezone = "Asia/Tokyo"\n')
    config, _ = load_config(path)
    for deployment in build_deployments(config, path):
        deployment.apply()

    nightly = _read_back("nightly/nightly")
    assert nightly.parameters == {"config_file": str(path.resolve())}
    (schedule,) = nightly.schedules
    assert (schedule.schedule.cron, schedule.schedule.timezone) == ("0 2 * * *", "Asia/Tokyo")
    next_run = _next_run(schedule.schedule.cron, schedule.schedule.timezone).astimezone(ZoneInfo("Asia/Tokyo"))
    assert (next_run.hour, next_run.minute) == (2, 0)
    assert timedelta(0) < next_run - datetime.now(ZoneInfo("Asia/Tokyo")) <= timedelta(days=1)
    score = _read_back("score/score").parameters
    assert (score["settings"]["folders"], score["settings"]["batch_size"]) == ([str(tmp_path / "photos")], 64)
    assert _read_back("retrain/retrain").parameters == {
        "data": str(tmp_path / "fer.csv"), "models_dir": str(tmp_path / "m"), "preset_name": "smoke", "tolerance": 0.0}
    assert not _read_back("score/score").schedules


def test_prefect_yaml_deploys_to_a_process_pool_with_the_nightly_cron(tmp_path):
    from prefect.settings import get_current_settings

    env = {**os.environ, "PREFECT_API_URL": str(get_current_settings().api.url)}

    def prefect(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "prefect", *args], cwd=PROJECT, env=env, capture_output=True,
                              text=True, timeout=300)

    created = prefect("work-pool", "create", "ferbatch-process", "--type", "process", "--overwrite")
    assert created.returncode == 0, created.stdout + created.stderr
    deployed = prefect("--no-prompt", "deploy", "--prefect-file", "deploy/prefect.yaml",
                       "-n", "nightly", "-n", "score", "-n", "retrain")
    assert deployed.returncode == 0, deployed.stdout + deployed.stderr

    nightly = _read_back("nightly/nightly")
    (schedule,) = nightly.schedules
    assert (schedule.schedule.cron, schedule.schedule.timezone) == ("0 2 * * *", "UTC")
    assert nightly.work_pool_name == "ferbatch-process"
    assert nightly.entrypoint == "flows/nightly.py:nightly"
    assert nightly.job_variables["env"]["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    assert _read_back("retrain/retrain").entrypoint == "flows/retrain.py:retrain"


def test_prefect_yaml_entrypoints_name_real_flows():
    from prefect.flows import load_flow_from_entrypoint

    spec = yaml.safe_load((PROJECT / "deploy" / "prefect.yaml").read_text())
    loaded_before = set(sys.modules)
    try:
        for deployment in spec["deployments"]:
            path, _, name = deployment["entrypoint"].partition(":")
            assert load_flow_from_entrypoint(f"{PROJECT / path}:{name}").name == name  # by file, as a worker does
    finally:  # the loader registers the files under their bare names ('score'): leave those free for others,
        # and leave the installed package (ferbatch_flows, also a file under flows/) as other tests imported it
        for module_name in set(sys.modules) - loaded_before:
            module = sys.modules[module_name]
            if str(getattr(module, "__file__", "")).startswith(str(PROJECT / "flows")) and "." not in module_name:
                del sys.modules[module_name]
