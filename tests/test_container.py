"""The image from deploy/Dockerfile, built and run for real: `docker run ... score` without network, and the
`score-container` deployment run by a Prefect docker worker; both must write the rows a local run writes.

Marked `docker` (not in the default run; `.ci/run` runs them after it). They skip where Docker cannot run.
The image is built by deploy/build-image.sh, from python:3.11-slim where it can be pulled and otherwise from
the local debootstrapped base (`--local-base`, root and debootstrap needed). $FERBATCH_DOCKER_BASE forces it:
`local`, `pull`, or a base image name; $FERBATCH_TEST_IMAGE names the image to build (default ferbatch:test).
Under CI=true a Docker that cannot run fails them instead (.ci/run installs and starts it first).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest
from imagefactory import PHOTOS

PROJECT = Path(__file__).resolve().parents[1]
IMAGE = os.environ.get("FERBATCH_TEST_IMAGE", "ferbatch:test")
SLIM = "python:3.11-slim"


def test_entrypoint_passes_every_ferbatch_subcommand_to_ferbatch():
    """Not marked docker: the entrypoint's list of subcommands must follow the CLI's."""
    from ferbatch.cli import cli

    text = (PROJECT / "deploy" / "entrypoint.sh").read_text()
    listed = re.search(r'"" \| -\* \| ([a-z |]+)\)', text).group(1).split(" | ")
    assert sorted(listed) == sorted(cli.commands)


def _docker(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)


def _cannot_run(reason: str) -> None:
    """Skip where Docker cannot run; under CI=true (.ci/run starts Docker first) that is a failure."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true and {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def docker_available():
    if shutil.which("docker") is None:
        _cannot_run("no docker client")
    try:
        info = _docker("info", "--format", "{{.ServerVersion}}", timeout=30)
    except subprocess.TimeoutExpired:
        _cannot_run("docker info timed out")
    if info.returncode != 0:
        _cannot_run(f"no Docker daemon: {info.stderr.strip()[:200]}")


def _base_option() -> list[str]:
    choice = os.environ.get("FERBATCH_DOCKER_BASE", "auto")
    if choice == "local":
        return ["--local-base"]
    if choice not in ("auto", "pull"):
        return ["--base", choice]
    if _docker("image", "inspect", SLIM).returncode == 0:
        return []
    try:
        pulled = _docker("pull", SLIM, timeout=300)
    except subprocess.TimeoutExpired:
        pulled = None
    if choice == "pull" or (pulled is not None and pulled.returncode == 0):
        return []
    if os.geteuid() != 0 or shutil.which("debootstrap") is None:
        _cannot_run(f"cannot pull {SLIM}, and the local base needs root and debootstrap")
    return ["--local-base"]


@pytest.fixture(scope="session")
def image(docker_available):
    """deploy/build-image.sh, as documented; cached layers make a rebuild take seconds."""
    built = subprocess.run(["bash", "deploy/build-image.sh", "--tag", IMAGE, *_base_option()], cwd=PROJECT,
                           capture_output=True, text=True, timeout=2400)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    print(built.stdout.strip().splitlines()[-1])
    return IMAGE


@pytest.fixture(scope="session")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    for path in PHOTOS.iterdir():
        if path.suffix in (".jpg", ".png"):
            shutil.copy(path, folder / path.name)
    folder.chmod(0o755)
    return folder


@pytest.fixture(scope="session")
def local_report(photos, tmp_path_factory, run_ferbatch) -> Path:
    """The same photos scored here, with the shipped model: the rows every container run must reproduce."""
    out = tmp_path_factory.mktemp("local") / "reports"
    result = run_ferbatch("score", photos, "--out", out, "--models-dir", PROJECT / "models", "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    return out


def _writable_out(tmp_path: Path) -> tuple[Path, int, int]:
    """A report folder and the uid:gid to run the container as: this user, or, as root, an arbitrary one,
    which shows the image needs no particular user."""
    out = tmp_path / "reports"
    out.mkdir()
    uid, gid = (os.getuid(), os.getgid()) if os.getuid() != 0 else (4321, 4321)
    os.chown(out, uid, gid)
    tmp_path.chmod(0o755)
    return out, uid, gid


def _rows(out: Path) -> dict[str, list[tuple]]:
    def query(sql: str) -> list[tuple]:
        return duckdb.sql(sql.format(out=out)).fetchall()

    return {
        "images": query("select path, status, n_faces, emotion, sentiment, model_version "
                        "from read_parquet('{out}/images/*/*.parquet') order by path"),
        "faces": query("select path, face_index, x, y, w, h, emotion, sentiment, p_happy, p_neutral, p_sad "
                       "from read_parquet('{out}/faces/*/*.parquet') order by path, face_index"),
        "aggregates": query("select * exclude (run_id, run_date) from read_parquet('{out}/aggregates/*/*.parquet') "
                            "order by all"),
    }


def _assert_same_rows(container: Path, local: Path) -> None:
    got, expected = _rows(container), _rows(local)
    assert len(expected["images"]) == 7 and len(expected["faces"]) >= 7
    assert got["images"] == expected["images"]
    assert [row[:8] for row in got["faces"]] == [row[:8] for row in expected["faces"]]
    assert [row[8:] for row in got["faces"]] == [pytest.approx(row[8:], abs=1e-4) for row in expected["faces"]]
    assert len(got["aggregates"]) == len(expected["aggregates"]) > 0


def _owners(folder: Path) -> set[int]:
    return {path.stat().st_uid for path in folder.rglob("*")}


@pytest.mark.docker
def test_container_scores_photos_without_network_like_a_local_run(image, photos, local_report, tmp_path):
    out, uid, gid = _writable_out(tmp_path)
    run = _docker("run", "--rm", "--network", "none", "--user", f"{uid}:{gid}",
                  "-v", f"{photos}:/data/photos:ro", "-v", f"{out}:/reports",
                  image, "score", "/data/photos", "--out", "/reports", "--json", timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    summary = json.loads(run.stdout)
    assert summary["scored"] == 7
    assert {p.name for p in out.iterdir() if p.is_dir()} >= {"images", "faces", "aggregates"}
    assert _owners(out) == {uid}
    _assert_same_rows(out, local_report)


@pytest.mark.docker
def test_entrypoint_runs_other_commands_as_given(image):
    run = _docker("run", "--rm", "--network", "none", "--user", "4321:4321", image,
                  "python", "-c",
                  "import ferbatch, ferbatch_flows.score, os; print(os.getcwd(), os.access('/tmp', os.W_OK))")
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split() == ["/app", "True"]


@pytest.mark.docker
def test_score_container_deployment_runs_in_a_docker_work_pool(image, photos, local_report, tmp_path,
                                                              prefect_harness):
    from prefect import get_client
    from prefect.settings import get_current_settings

    out, uid, gid = _writable_out(tmp_path)
    api = str(get_current_settings().api.url)
    env = {**os.environ, "PREFECT_API_URL": api}

    def prefect(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        done = subprocess.run([sys.executable, "-m", "prefect", *args], cwd=PROJECT, env=env,
                              capture_output=True, text=True, timeout=timeout)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return done

    # The commands of deploy/README.md, with this test's image, folders and user. The harness server listens
    # on 127.0.0.1, so the worker gives the flow-run container the host's network.
    spec = tmp_path / "prefect.yaml"
    spec.write_text((PROJECT / "deploy" / "prefect.yaml").read_text().replace("image: ferbatch:latest",
                                                                              f"image: {image}"))
    env.update(FERBATCH_PHOTOS_DIR=str(photos), FERBATCH_REPORTS_DIR=str(out), FERBATCH_CONTAINER_USER=f"{uid}:{gid}")
    prefect("work-pool", "create", "ferbatch-docker", "--type", "docker", "--overwrite")
    prefect("--no-prompt", "deploy", "--prefect-file", str(spec), "-n", "score-container")
    started = prefect("deployment", "run", "score/score-container",
                      "--param", 'settings={"folders": ["/data/photos"], "out": "/reports"}')
    flow_run_id = re.search(r"UUID: ([0-9a-f-]{36})", started.stdout).group(1)
    prefect("worker", "start", "--pool", "ferbatch-docker", "--run-once", timeout=900)

    with get_client(sync_client=True) as client:
        state = client.read_flow_run(flow_run_id).state
    assert state.is_completed(), state
    assert _owners(out) == {uid}
    _assert_same_rows(out, local_report)
