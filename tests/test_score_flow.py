"""End to end: the real YuNet detector and a real trained model through the score flow and the CLI,
with the reports read back by DuckDB the way a BI tool would."""

from __future__ import annotations

import json
import shutil

import duckdb
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from imagefactory import PHOTO_FACES, PHOTOS, exif_rotated_jpeg

from ferbatch.cli import cli
from ferbatch.scoring import Components, ScoreSettings, run_scoring

pytestmark = pytest.mark.usefixtures("prefect_harness")

EXPECTED_TYPES = {
    "images": {
        "run_id": "VARCHAR", "run_date": "DATE", "scored_at": "TIMESTAMP WITH TIME ZONE", "root": "VARCHAR",
        "path": "VARCHAR", "image_id": "VARCHAR", "bytes": "BIGINT", "width": "INTEGER", "height": "INTEGER",
        "taken_at": "TIMESTAMP WITH TIME ZONE", "status": "VARCHAR", "error": "VARCHAR", "n_faces": "INTEGER",
        "emotion": "VARCHAR", "sentiment": "VARCHAR", "sentiment_score": "FLOAT", "p_angry": "FLOAT",
        "p_disgust": "FLOAT", "p_fear": "FLOAT", "p_happy": "FLOAT", "p_sad": "FLOAT", "p_surprise": "FLOAT",
        "p_neutral": "FLOAT", "model_version": "VARCHAR", "detector": "VARCHAR",
    },
    "faces": {
        "run_id": "VARCHAR", "run_date": "DATE", "image_id": "VARCHAR", "path": "VARCHAR", "face_index": "INTEGER",
        "x": "INTEGER", "y": "INTEGER", "w": "INTEGER", "h": "INTEGER", "det_score": "FLOAT", "p_happy": "FLOAT",
        "emotion": "VARCHAR", "sentiment": "VARCHAR", "sentiment_score": "FLOAT", "model_version": "VARCHAR",
    },
    "aggregates": {
        "run_id": "VARCHAR", "run_date": "DATE", "group_by": "VARCHAR", "group_value": "VARCHAR",
        "n_images": "BIGINT", "n_ok": "BIGINT", "n_no_face": "BIGINT", "n_error": "BIGINT", "n_faces": "BIGINT",
        "share_positive": "DOUBLE", "share_negative": "DOUBLE", "share_neutral": "DOUBLE",
        "mean_sentiment_score": "DOUBLE", "n_happy": "BIGINT", "n_disgust": "BIGINT",
    },
}


def _read(out, table):
    return duckdb.sql(f"select * from read_parquet('{out}/{table}/*/*.parquet', hive_partitioning=true)")


@pytest.fixture(scope="module")
def scored_photos(tmp_path_factory, models_dir, run_ferbatch):
    """tests/photos scored once by the real command with the session's model: (report folder, JSON summary)."""
    out = tmp_path_factory.mktemp("scored") / "out"
    first = run_ferbatch("score", PHOTOS, "--out", out, "--models-dir", models_dir, "--json")
    assert first.returncode == 0, first.stderr
    return out, json.loads(first.stdout)


def test_score_finds_the_listed_faces_writes_three_datasets_and_a_rerun_scores_nothing(
    scored_photos, models_dir, run_ferbatch
):
    out, summary = scored_photos
    assert summary["scored"] == 7 and summary["faces"] == sum(PHOTO_FACES.values())
    counts = dict(_read(out, "images").select("path, n_faces").fetchall())
    assert counts == PHOTO_FACES
    assert _read(out, "faces").count("*").fetchall()[0][0] == sum(PHOTO_FACES.values())
    metadata = pq.read_schema(summary["files"]["images"][0]).metadata
    assert json.loads(metadata[b"ferbatch.detector_settings"]) == {
        "input_long_side": 960, "score_threshold": 0.8, "nms_threshold": 0.3, "min_face": 20, "tile_aspect": 2.0,
        "reach": 20, "tile_above_pixels": 16_000_000}

    files = sorted(out.rglob("*.parquet"))
    second = run_ferbatch("score", PHOTOS, "--out", out, "--models-dir", models_dir, "--json")
    assert second.returncode == 0, second.stderr
    again = json.loads(second.stdout)
    assert again["scored"] == 0 and again["already_scored"] == 7
    assert again["files"] == {} and sorted(out.rglob("*.parquet")) == files  # a no-op run
    assert _read(out, "images").count("*").fetchall()[0][0] == 7

    report = CliRunner().invoke(cli, ["report", str(out), "--json"])
    assert report.exit_code == 0, report.output
    rows = json.loads(report.stdout)
    everything = next(r for r in rows if r["group_by"] == "all")
    assert everything["n_images"] == 7 and everything["n_no_face"] == 1 and everything["run_id"] == "current"
    latest = json.loads(CliRunner().invoke(cli, ["report", str(out), "--json", "--run", "latest"]).stdout)
    assert next(r for r in latest if r["group_by"] == "all")["run_id"] == summary["run_id"]
    current = duckdb.sql(f"select count(*) from read_parquet('{out}/current/images/*/*.parquet')")
    assert current.fetchall()[0][0] == 7


def test_duckdb_reads_every_dataset_with_the_documented_columns_and_types(scored_photos):
    out, _ = scored_photos
    for table, expected in EXPECTED_TYPES.items():
        relation = _read(out, table)
        types = dict(zip(relation.columns, map(str, relation.types), strict=True))
        for column, type_name in expected.items():
            assert types.get(column) == type_name, (table, column, types.get(column))
    probabilities = _read(out, "images").filter("status = 'ok'").select(
        "p_angry + p_disgust + p_fear + p_happy + p_sad + p_surprise + p_neutral").fetchall()
    assert all(abs(total - 1) < 1e-4 for (total,) in probabilities)


def test_exif_rotated_copy_and_bad_files_in_one_run_with_annotations(tmp_path, models_dir, run_ferbatch):
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(PHOTOS / "fr_two_people.jpg", folder / "upright.jpg")
    (folder / "rotated.jpg").write_bytes(exif_rotated_jpeg(PHOTOS / "fr_two_people.jpg"))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    args = ["score", folder, "--out", tmp_path / "out", "--models-dir", models_dir, "--annotate", tmp_path / "seen"]
    result = run_ferbatch(*args)
    assert result.returncode == 0, result.stderr
    rows = dict(_read(tmp_path / "out", "images").select("path, coalesce(error, status)").fetchall())
    assert rows["upright.jpg"] == rows["rotated.jpg"] == "ok"
    assert "corrupt or truncated" in rows["broken.jpg"] or "not an image" in rows["broken.jpg"]
    faces = dict(_read(tmp_path / "out", "images").select("path, n_faces").fetchall())
    assert faces["upright.jpg"] == faces["rotated.jpg"] == 2
    assert sorted(p.name for p in (tmp_path / "seen").glob("*.jpg")) == ["rotated.jpg", "upright.jpg"]
    assert (tmp_path / "seen" / ".ferbatch-annotations").is_file()  # so no later run scans the copies


def test_error_rows_fail_a_run_only_with_fail_on_error(tmp_path, monkeypatch):
    """The exit code, in this process with the fakes' model (the real command and model are in the test above)."""
    import ferbatch_flows.score
    from fakes import FakeComponents
    from imagefactory import encode, synthetic

    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(encode(synthetic(150, 120), "JPEG"))
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")

    def score_with_fakes(settings, sentiment, **kwargs):
        return run_scoring(settings, FakeComponents()).to_dict()

    monkeypatch.setattr(Components, "for_run", classmethod(lambda cls, *args, **kwargs: FakeComponents()))
    monkeypatch.setattr(ferbatch_flows.score, "score", score_with_fakes)
    lenient = CliRunner().invoke(cli, ["score", str(folder), "--out", str(tmp_path / "out")])
    assert lenient.exit_code == 0, lenient.output  # error rows alone do not fail a run
    strict = CliRunner().invoke(cli, ["score", str(folder), "--out", str(tmp_path / "strict"), "--fail-on-error"])
    assert strict.exit_code == 3, strict.output


def test_score_errors_are_one_line(tmp_path, run_ferbatch):
    no_model = run_ferbatch("score", PHOTOS, "--out", tmp_path, "--models-dir", tmp_path)
    assert no_model.returncode == 1
    assert f"Error: {tmp_path}: no current model" in no_model.stderr and "Traceback" not in no_model.stderr
    bad_map = CliRunner().invoke(cli, ["score", str(PHOTOS), "--out", str(tmp_path), "--sentiment-map", "Joy=positive"])
    assert bad_map.exit_code == 1 and "unknown emotion(s) Joy" in bad_map.output
    empty = CliRunner().invoke(cli, ["report", str(tmp_path)])
    assert empty.exit_code == 1 and "no scored run" in empty.output


def test_an_empty_folder_warns_writes_nothing_and_fails_only_when_asked(tmp_path, run_ferbatch):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "readme.txt").write_text("no photos here")
    warned = run_ferbatch("score", folder, "--out", tmp_path / "out")
    assert warned.returncode == 0, warned.stderr
    assert f"no images found under {folder}; looked for: .bmp, .gif, .jpeg, .jpg, .png" in warned.stderr
    assert "ferbatch run" in warned.stdout and "no data files written" in warned.stdout  # the summary table
    assert not list((tmp_path / "out").rglob("*.parquet"))
    strict = run_ferbatch("score", folder, "--out", tmp_path / "out", "--fail-on-empty")
    assert strict.returncode == 4
    assert strict.stderr.splitlines()[-1].startswith(f"Error: no images found under {folder}")
    assert not list((tmp_path / "out").rglob("*.parquet"))


def test_a_failing_shard_makes_the_flow_drop_every_shards_files(tmp_path):
    """The flow's shard mapper (task runner, waiting for every shard) under the one run_scoring, with fakes."""
    from fakes import FakeClassifier, FakeComponents
    from ferbatch_flows.score import shard_mapper
    from imagefactory import encode, synthetic
    from prefect import flow
    from prefect.task_runners import ThreadPoolTaskRunner

    from ferbatch.scoring import ScoreSettings, run_scoring

    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(3):
        (folder / f"{i}.jpg").write_bytes(encode(synthetic(150 + 100 * i, 120, seed=i), "JPEG"))

    class BreaksOnTheLastShard(FakeClassifier):
        def predict(self, faces):
            if len(self.calls) == 2:
                raise RuntimeError("disk full")
            return super().predict(faces)

    @flow  # tasks log to a flow run, as they do in the real score flow
    def score_three_shards() -> None:
        run_scoring(ScoreSettings(folders=[folder], out=tmp_path / "out", shard_size=1),
                    FakeComponents(BreaksOnTheLastShard()),
                    map_shards=shard_mapper(ThreadPoolTaskRunner(max_workers=1)))

    with pytest.raises(RuntimeError, match="disk full"):
        score_three_shards()
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file() and p.name != ".ferbatch.lock"]


def test_the_local_shard_mapper_advances_the_progress_per_image(tmp_path, prefect_harness, monkeypatch):
    """Outside a terminal the progress is a plain log line; the last one counts every image of every shard."""
    import logging

    import ferbatch_flows.score
    from fakes import FakeComponents
    from ferbatch_flows.score import shard_mapper
    from imagefactory import encode, synthetic
    from prefect import flow
    from prefect.task_runners import ThreadPoolTaskRunner

    from ferbatch.present.console import ScoringProgress
    from ferbatch.scoring import ScoreSettings, run_scoring

    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(5):
        (folder / f"{i}.jpg").write_bytes(encode(synthetic(150 + 50 * i, 120, seed=i), "JPEG"))
    counts = []

    class Recording(ScoringProgress):
        def advance(self, n=1):
            super().advance(n)
            counts.append(self.done)

    monkeypatch.setattr(ferbatch_flows.score, "ScoringProgress", Recording)

    @flow
    def score_in_shards() -> None:
        run_scoring(ScoreSettings(folders=[folder], out=tmp_path / "out", shard_size=2), FakeComponents(),
                    map_shards=shard_mapper(ThreadPoolTaskRunner(max_workers=1), progress=True))

    lines = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda record: lines.append(record.getMessage())
    progress_logger = logging.getLogger("ferbatch.progress")
    progress_logger.addHandler(handler)
    level, progress_logger.level = progress_logger.level, logging.INFO
    try:
        score_in_shards()
    finally:
        progress_logger.removeHandler(handler)
        progress_logger.setLevel(level)
    assert sorted(counts) == [1, 2, 3, 4, 5]  # per image decoded and detected, across 3 shards
    assert any(line.startswith("scored 5/5 image(s),") for line in lines), lines


def test_a_corrupt_model_is_a_one_line_error_before_the_scan_even_when_nothing_is_new(tmp_path, run_ferbatch):
    """Issue 12, case 4: checked against the card (no model_sha256 here: the structural check), without TensorFlow."""
    import subprocess
    import sys

    models = tmp_path / "models"
    (models / "v1").mkdir(parents=True)
    (models / "v1" / "model.keras").write_bytes(b"PK\x03\x04 but not really a zip")
    (models / "v1" / "card.json").write_text(json.dumps({"version": "v1", "metrics": {"PublicTest": {"plain": {
        "accuracy": 0.5}}}}))
    (models / "current.json").write_text(json.dumps({"version": "v1"}))
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_ferbatch("score", empty, "--out", tmp_path / "out", "--models-dir", models)
    assert result.returncode == 1
    assert f"Error: {models / 'v1' / 'model.keras'}: corrupt model file (not a Keras archive" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out" / "images").exists()  # nothing was scanned or committed
    check = ("import sys\nfrom ferbatch.scoring import Components, ScoreSettings\n"
             f"try:\n    Components.for_run(ScoreSettings(), models_dir={str(models)!r})\n"
             "except Exception as exc:\n    print(type(exc).__name__, 'tensorflow' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["RegistryError", "False"], done.stderr


def test_a_stray_damaged_parquet_file_is_set_aside_with_one_warning_line_and_the_run_goes_on(
    tmp_path, models_dir, run_ferbatch
):
    """Issue 12, case 2 through the CLI (was: ArrowInvalid, a traceback three times, every later run failing)."""
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(PHOTOS / "fr_two_people.jpg", folder / "a.jpg")
    out = tmp_path / "out"
    settings = ScoreSettings(folders=[folder], out=out)
    run_scoring(settings, Components.for_run(settings, None, models_dir))  # the first run, in this process
    junk = next((out / "images").glob("run_date=*")) / "junk.parquet"
    junk.write_bytes(bytes(range(256)) * 20)
    again = run_ferbatch("score", folder, "--out", out, "--models-dir", models_dir, "--json")
    assert again.returncode == 0, again.stderr
    assert "Traceback" not in again.stderr
    warnings = [line for line in again.stderr.splitlines() if str(junk) in line]
    assert len(warnings) == 1 and "not a readable Parquet file, moved to" in warnings[0], again.stderr
    assert json.loads(again.stdout)["already_scored"] == 1
    assert (out / ".ferbatch-damaged" / "images" / junk.parent.name / "junk.parquet").exists()
