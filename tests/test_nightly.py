"""The nightly flow end to end, in a subprocess against the harness server: retrain once, then skip;
score only what arrived between runs. And the Dask runner gives the same rows as the local one."""

from __future__ import annotations

import gzip
import json
import re
import shutil

import duckdb
import pytest
from conftest import SAMPLE_CSV
from imagefactory import PHOTOS

from ferbatch.models import ModelRegistry

pytestmark = pytest.mark.usefixtures("prefect_harness")


def _nightly(run_ferbatch, config) -> dict:
    result = run_ferbatch("--config", config, "nightly", "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def test_nightly_retrains_once_then_skips_and_scores_only_new_files(tmp_path, run_ferbatch):
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in ("fr_obama.jpg", "fr_biden.jpg"):
        shutil.copy(PHOTOS / name, photos / name)
    data = tmp_path / "fer.csv.gz"
    shutil.copy(SAMPLE_CSV, data)
    config = tmp_path / "ferbatch.toml"
    config.write_text(f'models_dir = "models"\n[train]\ndata = "{data}"\npreset = "smoke"\n'
                      '[score]\nfolders = ["photos"]\nout = "reports"\n')

    first = _nightly(run_ferbatch, config)
    assert first["retrain"] | {"result": None} == {"ran": True, "action": "retrain", "reason": "no current model",
                                                  "result": None}
    assert first["retrain"]["result"]["promoted"] is True
    assert (first["score"]["scored"], first["score"]["faces"]) == (2, 2)
    assert first["score"]["model_version"] == first["retrain"]["result"]["version"]

    shutil.copy(PHOTOS / "fr_two_people.jpg", photos / "fr_two_people.jpg")
    data.write_bytes(data.read_bytes())  # rewritten, same bytes (a new mtime): still the same data
    second = _nightly(run_ferbatch, config)
    assert second["retrain"]["ran"] is False
    assert "same data with the same config" in second["retrain"]["reason"]
    assert (second["score"]["already_scored"], second["score"]["scored"], second["score"]["faces"]) == (2, 1, 2)
    assert len(ModelRegistry(tmp_path / "models").versions()) == 1

    paths = duckdb.sql(f"select path, count(*) n from read_parquet('{tmp_path}/reports/images/*/*.parquet') "
                       "group by path order by path").fetchall()
    assert paths == [("fr_biden.jpg", 1), ("fr_obama.jpg", 1), ("fr_two_people.jpg", 1)]

    # A training file with other bytes: tonight's plan (what `ferbatch nightly` asks first, the flow again) is
    # to fine-tune the model. The whole night that follows: test_a_changed_training_file_makes_the_nightly_run_retrain.
    from ferbatch.config import load_config
    from ferbatch.training import tonight

    rows = gzip.decompress(data.read_bytes()).decode().splitlines()
    data.write_bytes(gzip.compress("\n".join(rows[:-1]).encode()))  # one row fewer
    plan, _ = tonight(load_config(config)[0], ModelRegistry(tmp_path / "models"))
    assert plan.action == "fine_tune" and "training data differs" in plan.reason


@pytest.mark.slow  # the whole night after a changed file; its plan is checked in the test above, by default
def test_a_changed_training_file_makes_the_nightly_run_retrain(tmp_path, run_ferbatch):
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(PHOTOS / "fr_obama.jpg", photos)
    data = tmp_path / "fer.csv.gz"
    shutil.copy(SAMPLE_CSV, data)
    config = tmp_path / "ferbatch.toml"
    config.write_text(f'models_dir = "models"\n[train]\ndata = "{data}"\npreset = "smoke"\n'
                      '[score]\nfolders = ["photos"]\nout = "reports"\n')
    assert _nightly(run_ferbatch, config)["retrain"]["ran"] is True
    rows = gzip.decompress(data.read_bytes()).decode().splitlines()
    data.write_bytes(gzip.compress("\n".join(rows[:-1]).encode()))  # one row fewer
    third = _nightly(run_ferbatch, config)
    assert third["retrain"]["ran"] is True and "training data differs" in third["retrain"]["reason"]


def _faces(out):
    return duckdb.sql(
        f"select image_id, face_index, emotion, p_happy from read_parquet('{out}/faces/*/*.parquet') "
        "order by image_id, face_index"
    ).fetchall()


def test_dask_runner_on_a_two_worker_local_cluster_gives_the_same_rows_as_local(tmp_path, models_dir, run_ferbatch):
    from ferbatch.scoring import Components, ScoreSettings, run_scoring

    # The local rows from the one run_scoring in this process (the command around it is tested elsewhere), the
    # Dask rows through the real command, its LocalCluster and its workers' own TensorFlow.
    local = ScoreSettings(folders=[PHOTOS], out=tmp_path / "local", shard_size=3)
    run_scoring(local, Components.for_run(local, None, models_dir))
    dask = run_ferbatch("score", PHOTOS, "--out", tmp_path / "dask", "--runner", "dask", "--dask-workers", "2",
                        "--models-dir", models_dir, "--shard-size", "3", "--json")
    assert dask.returncode == 0, dask.stderr[-3000:]
    assert len(json.loads(dask.stdout)["files"]["images"]) == 3  # 7 photos in shards of 3
    assert "scored 7/7 image(s)" in dask.stderr  # progress counted per finished shard
    # the workers are subprocesses: their TensorFlow and OpenCV start-up lines are filtered too
    assert not re.search(r"absl::InitializeLog|oneDNN|cuda drivers|cuInit|setPreferableTarget", dask.stderr)
    local_faces, dask_faces = _faces(tmp_path / "local"), _faces(tmp_path / "dask")
    assert len(local_faces) == 9
    assert [row[:3] for row in dask_faces] == [row[:3] for row in local_faces]
    assert [row[3] for row in dask_faces] == pytest.approx([row[3] for row in local_faces], abs=1e-5)
    images = "select path, status, n_faces from read_parquet('{}/images/*/*.parquet') order by path"
    assert duckdb.sql(images.format(tmp_path / "dask")).fetchall() == duckdb.sql(
        images.format(tmp_path / "local")).fetchall()


def test_a_nightly_run_with_a_missing_training_file_stops_with_its_name(tmp_path, run_ferbatch):
    config = tmp_path / "ferbatch.toml"
    config.write_text(f'models_dir = "models"\n[train]\ndata = "missing.csv.gz"\n[score]\nfolders = ["{PHOTOS}"]\n')
    result = run_ferbatch("--config", config, "nightly")
    assert result.returncode == 1
    assert f"train.data: {tmp_path / 'missing.csv.gz'}: no such file" in result.stderr.splitlines()
