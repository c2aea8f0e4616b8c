"""Where a no-op `ferbatch score` run's fixed time goes: imports, Prefect's temporary server, scan, model load.

    python benchmarks/startup.py [FOLDER]        # default: tests/photos

Scores FOLDER once into a temporary --out (not timed), then times, in a fresh interpreter:
  imports        ferbatch.cli, the score flow module (Prefect) and ferbatch.scoring
  prefect        the first flow call: Prefect's temporary server starting, plus a trivial flow run
  no-op run      the real score flow on the already-scored folder (server already up)
  of which scan  plan_run alone (scan + incremental index)
  model load     building the detector and the Keras classifier, which a no-op run should not need
and whether TensorFlow was imported by the no-op run. With PREFECT_API_URL set to a running server
(`prefect server start`), the `prefect` line drops to the trivial flow run alone.

Then the whole command, wall time of a fresh `ferbatch score` process, as a user runs it:
  no-op command        FOLDER again, everything already scored (without PREFECT_API_URL: no Prefect at all)
  no-images command    an empty folder into a new --out (which it does not create)
  no-op command, flow  FOLDER again through the score flow, as with a configured API (here: PREFECT_API_URL
                       pointing at a temporary server started beforehand, so its start-up is not counted)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_PHASES = r"""
import json, sys, time
t = time.perf_counter()
import ferbatch.cli
from ferbatch_flows.score import score
from ferbatch import scoring
from ferbatch.config import ScoreSettings
from ferbatch.reports import ReportStore
from ferbatch.scoring._run import plan_run
timings = {"imports": time.perf_counter() - t}

from prefect import flow

@flow
def trivial() -> int:
    return 1

t = time.perf_counter(); trivial(); timings["prefect"] = time.perf_counter() - t
settings = ScoreSettings(folders=[sys.argv[1]], out=sys.argv[2])
t = time.perf_counter(); summary = score(settings); timings["no-op run"] = time.perf_counter() - t
assert summary["scored"] == 0, summary
timings["tensorflow imported by the no-op run"] = "tensorflow" in sys.modules
components = scoring.Components.for_run(settings)
with ReportStore(sys.argv[2]).open_run() as store:
    t = time.perf_counter()
    plan_run(settings.folders, store, components.model_version, "yunet")
    timings["of which scan"] = time.perf_counter() - t
t = time.perf_counter(); components.detector(); components.classifier()
timings["model load (not needed by a no-op run)"] = time.perf_counter() - t
print(json.dumps(timings))
"""


def _wall(env: dict[str, str], *args: str) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "ferbatch", *args], env=env, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    from ferbatch.runtime.prefect_api import start_temporary_server

    folder = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).parents[1] / "tests" / "photos").resolve()
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PREFECT_LOGGING_LEVEL": "WARNING"}
    env.pop("PREFECT_API_URL", None)
    with tempfile.TemporaryDirectory() as out, tempfile.TemporaryDirectory() as empty:
        subprocess.run([sys.executable, "-m", "ferbatch", "score", str(folder), "--out", out], env=env, check=True,
                       capture_output=True)
        done = subprocess.run([sys.executable, "-c", _PHASES, str(folder), out], env=env, check=True,
                              capture_output=True, text=True)
        timings = json.loads(done.stdout.strip().splitlines()[-1])
        timings["no-op command (wall)"] = _wall(env, "score", str(folder), "--out", out)
        timings["no-images command (wall)"] = _wall(env, "score", empty, "--out", str(Path(out) / "none"))
        server = start_temporary_server(120)
        try:
            timings["no-op command, flow (wall)"] = _wall({**env, "PREFECT_API_URL": server.api_url}, "score",
                                                          str(folder), "--out", out)
        finally:
            server.stop()
    for name, value in timings.items():
        print(f"{name:40} {value if isinstance(value, bool) else f'{value:6.2f} s'}")


if __name__ == "__main__":
    main()
