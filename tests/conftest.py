from __future__ import annotations

import gzip
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

DATA_DIR = Path(__file__).parent / "data"
SAMPLE_CSV = DATA_DIR / "fer2013_sample.csv.gz"
SAMPLE_FERPLUS = DATA_DIR / "ferplus_sample.csv"
FULL_FER2013 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "fer2013.csv.gz"


def pixels(value: int = 128, n: int = 2304) -> str:
    return " ".join([str(value)] * n)


def write_csv(path: Path, rows: list[tuple[str, str, str]], header: str = "emotion,pixels,Usage") -> Path:
    text = header + "\n" + "".join(f"{e},{p},{u}\n" for e, p, u in rows)
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode()))
    else:
        path.write_text(text)
    return path


@pytest.fixture(scope="session")
def sample_data():
    from ferbatch.training import load_fer2013

    return load_fer2013(SAMPLE_CSV)


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect server (SQLite, 127.0.0.1) for every test that runs a flow."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def prefect_home(tmp_path_factory) -> Path:
    """One PREFECT_HOME for the tests whose `ferbatch` starts Prefect's temporary server (no API configured): its
    database is set up once, by the first of them (tens of seconds on a busy 2-core machine), not by each."""
    return tmp_path_factory.mktemp("prefect-home")


@pytest.fixture(scope="session")
def run_ferbatch(prefect_harness):
    """Run the real `ferbatch` command in a subprocess, talking to the test harness's Prefect server."""
    from prefect.settings import get_current_settings

    env = {**os.environ, "PREFECT_API_URL": str(get_current_settings().api.url)}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "ferbatch", *map(str, args)], env=env, capture_output=True,
                              text=True, timeout=300)

    return run


@pytest.fixture(scope="session")
def random_faces() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, size=(16, 48, 48), dtype=np.uint8)


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory):
    """A real model, trained for one epoch on the bundled sample and registered as current."""
    from ferbatch.models import ModelRegistry, build_card
    from ferbatch.training import load_training_data, preset, train

    folder = tmp_path_factory.mktemp("models")
    data = load_training_data(SAMPLE_CSV)
    config = preset("smoke").with_overrides(epochs=1)
    result = train(config, *data.subset("Training"), *data.subset("PublicTest"), folder / ".work")
    split = {"plain": {"accuracy": result.best_public_accuracy}}
    card = build_card(architecture="tiny", parameters=1, training_config=config.to_dict(), data_summary=data.summary(),
                      metrics={"PublicTest": split}, epochs_run=1, best_epoch=1, wall_time_s=0.0,
                      stopped_early=False, input_contract={})
    registry = ModelRegistry(folder)
    registry.promote(registry.register(result.classifier, card))
    return folder
