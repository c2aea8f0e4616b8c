"""Reader conformance (issue 12): each report dataset, pointed at by its folder, opens with no options in
pandas, pyarrow (dataset and read_table), polars, DuckDB and Spark, after two runs on two dates.

run_date lives in the `run_date=YYYY-MM-DD` folder names only; what each reader makes of it, and of the
UTC timestamps, is pinned below and written down in the README (Reports).
"""

from __future__ import annotations

import zlib
from datetime import UTC, date, datetime
from pathlib import Path

import duckdb
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from fakes import FakeClassifier, FakeComponents
from imagefactory import encode, synthetic
from PIL import Image

import ferbatch.scoring
from ferbatch.reports import TABLES, TMP_SUFFIX, ReportWriter
from ferbatch.reports._store import ROW_GROUP
from ferbatch.scoring import ScoreSettings, run_scoring

SECOND_RUN = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
TIMESTAMPS = {"images": ["scored_at", "mtime", "taken_at"], "faces": ["taken_at"], "aggregates": []}


def _photo(path: Path, width: int, taken: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    exif = Image.Exif()
    if taken:
        exif.get_ifd(0x8769)[36867] = taken
    image = synthetic(width, 120, seed=zlib.crc32(str(path).encode()))
    path.write_bytes(encode(image, "JPEG", exif=exif.tobytes()))


@pytest.fixture(scope="module")
def reports(tmp_path_factory):
    """Two runs into one folder, the second on another date, and a third still writing; what the committed
    files themselves hold."""
    root = tmp_path_factory.mktemp("readers")
    folder, out = root / "in", root / "out"
    _photo(folder / "a" / "one.jpg", 150, "2024:05:06 14:30:00")
    _photo(folder / "a" / "three.jpg", 350)
    _photo(folder / "none.jpg", 90)
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    classifier = FakeClassifier()
    run_scoring(ScoreSettings(folders=[folder], out=out), FakeComponents(classifier))

    class SecondRunClock(datetime):
        @classmethod
        def now(cls, tz=None):
            return SECOND_RUN

    _photo(folder / "b" / "two.jpg", 250, "2025:12:31 23:59:59")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(ferbatch.scoring._run, "datetime", SecondRunClock)
        run_scoring(ScoreSettings(folders=[folder], out=out), FakeComponents(classifier))

    rows, instants = {}, {}
    for table in TABLES:
        files = sorted((out / table).glob("run_date=*/*.parquet"))
        assert len({f.parent.name for f in files}) == 2  # two partitions
        rows[table] = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
        for f in files:
            assert "run_date" not in pq.read_schema(f).names  # the partition key is in the folder name only
            assert pq.ParquetFile(f).metadata.row_group(0).column(0).compression == "SNAPPY"
            stored = pq.read_table(f, partitioning=None)
            for column in TIMESTAMPS[table]:
                assert stored.schema.field(column).type == pa.timestamp("us", tz="UTC")
                instants.setdefault((table, column), set()).update(
                    v for v in stored.column(column).to_pylist() if v is not None)
    assert rows["images"] == 5 and rows["faces"] == 6  # FakeDetector: one face per 100 px of width
    assert any(v.year == 2026 and v.month == 1 for v in instants[("images", "scored_at")])

    # A third run is still writing while the readers read: its half-written file must not be seen.
    writer = ReportWriter(out, "20260203T000000Z-abcdef", date(2026, 2, 3), {}, part="s0000")
    row = pq.read_table(files_of(out, "images")[0], partitioning=None).to_pylist()[0]
    writer.write("images", [row] * ROW_GROUP)  # one full row group reaches the file; no footer yet
    assert list(out.rglob(f"*{TMP_SUFFIX}"))
    yield out, rows, instants
    writer.abort()


def files_of(out: Path, table: str) -> list[Path]:
    return sorted((out / table).glob("run_date=*/*.parquet"))




def _dates(out: Path) -> set[str]:
    return {p.name.removeprefix("run_date=") for p in (out / "images").glob("run_date=*")}


def _check_pandas(frame: pd.DataFrame, table: str, out: Path, rows: dict, instants: dict) -> None:
    assert len(frame) == rows[table]
    assert {str(v) for v in frame["run_date"].unique()} == _dates(out)
    for column in TIMESTAMPS[table]:
        assert str(frame[column].dtype) == "datetime64[us, UTC]"
        assert {v.to_pydatetime() for v in frame[column].dropna()} == instants[(table, column)]


@pytest.mark.parametrize("table", TABLES)
def test_pandas_reads_the_folder_with_no_options(reports, table):
    out, rows, instants = reports
    frame = pd.read_parquet(out / table)  # pyarrow engine, the default with pyarrow installed
    _check_pandas(frame, table, out, rows, instants)
    assert isinstance(frame["run_date"].dtype, pd.CategoricalDtype)  # hive partition values: strings, categorical


@pytest.mark.parametrize("table", TABLES)
def test_pyarrow_dataset_with_hive_partitioning_and_read_table(reports, table):
    out, rows, instants = reports
    readers = [(lambda p: ds.dataset(p, partitioning="hive").to_table(), pa.string()),
               (pq.read_table, pa.dictionary(pa.int32(), pa.string()))]
    for read, run_date_type in readers:
        arrow = read(out / table)
        assert arrow.num_rows == rows[table]
        run_date = arrow.column("run_date")
        assert run_date.type == run_date_type
        assert {str(v) for v in run_date.to_pylist()} == _dates(out)
        for column in TIMESTAMPS[table]:
            assert arrow.schema.field(column).type == pa.timestamp("us", tz="UTC")
            assert {v for v in arrow.column(column).to_pylist() if v is not None} == instants[(table, column)]


@pytest.mark.parametrize("table", TABLES)
def test_polars_with_hive_partitioning(reports, table):
    out, rows, instants = reports
    frame = pl.read_parquet(out / table, hive_partitioning=True)
    assert frame.height == rows[table]
    assert frame.schema["run_date"] == pl.Date
    assert {v.isoformat() for v in frame["run_date"].unique()} == _dates(out)
    for column in TIMESTAMPS[table]:
        assert frame.schema[column] == pl.Datetime("us", "UTC")
        assert set(frame[column].drop_nulls()) == instants[(table, column)]


@pytest.mark.parametrize("table", TABLES)
def test_duckdb_reads_the_folder_glob(reports, table):
    out, rows, instants = reports
    connection = duckdb.connect()
    connection.execute("SET TimeZone = 'UTC'")
    relation = connection.sql(f"SELECT * FROM read_parquet('{out / table}/**/*.parquet')")  # hive: detected
    types = dict(zip(relation.columns, map(str, relation.types), strict=True))
    assert types["run_date"] == "DATE"
    records = relation.fetchall()
    assert len(records) == rows[table]
    index = {name: i for i, name in enumerate(relation.columns)}
    assert {r[index["run_date"]].isoformat() for r in records} == _dates(out)
    for column in TIMESTAMPS[table]:
        assert types[column] == "TIMESTAMP WITH TIME ZONE"
        assert {r[index[column]] for r in records if r[index[column]] is not None} == instants[(table, column)]


@pytest.fixture(scope="module")
def spark():
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master("local[1]").appName("ferbatch-readers")
        .config("spark.ui.enabled", "false").config("spark.sql.session.timeZone", "UTC")
        .config("spark.driver.memory", "512m").config("spark.sql.shuffle.partitions", "1")
        .getOrCreate()
    )
    yield session
    session.stop()


def test_spark_reads_each_folder(reports, spark):
    from pyspark.sql import functions as F
    from pyspark.sql.types import DateType, TimestampType

    out, rows, instants = reports
    for table in TABLES:
        frame = spark.read.parquet(str(out / table))
        assert isinstance(frame.schema["run_date"].dataType, DateType)
        for column in TIMESTAMPS[table]:
            assert isinstance(frame.schema[column].dataType, TimestampType)  # an instant, shown in session time
        # One Spark job per table: every row's run_date and its timestamps written out in UTC.
        utc = [F.date_format(c, "yyyy-MM-dd'T'HH:mm:ss.SSSSSSXXX").alias(c) for c in TIMESTAMPS[table]]
        records = frame.select("run_date", *utc).collect()
        assert len(records) == rows[table]
        assert {r["run_date"].isoformat() for r in records} == _dates(out)
        for column in TIMESTAMPS[table]:
            got = {datetime.fromisoformat(r[column].replace("Z", "+00:00")) for r in records if r[column]}
            assert got == instants[(table, column)]


def test_the_second_run_really_has_another_date(reports):
    out, _, _ = reports
    assert SECOND_RUN.date().isoformat() in _dates(out) and len(_dates(out)) == 2
    assert date.today().isoformat() in _dates(out) or datetime.now(UTC).date().isoformat() in _dates(out)


def test_folders_written_with_run_date_inside_the_files_are_migrated_and_stay_incremental(tmp_path):
    from ferbatch.reports.migrate import main

    folder, out = tmp_path / "in", tmp_path / "out"
    _photo(folder / "a.jpg", 150)
    classifier = FakeClassifier()
    score = lambda: run_scoring(ScoreSettings(folders=[folder], out=out), FakeComponents(classifier))  # noqa: E731
    score()
    for part in (out / "images").parent.glob("*/run_date=*/*.parquet"):  # as files were written before
        table = pq.read_table(part, partitioning=None)
        day = date.fromisoformat(part.parent.name.removeprefix("run_date="))
        pq.write_table(table.add_column(1, "run_date", pa.array([day] * table.num_rows, pa.date32())), part)
    with pytest.raises(pa.ArrowTypeError, match="run_date"):
        pd.read_parquet(out / "images")
    assert score().n_skipped == 1  # ferbatch itself reads old and new files alike

    assert main([str(out)]) == 0
    for table in TABLES:
        assert len(pd.read_parquet(out / table)) == sum(pq.ParquetFile(f).metadata.num_rows
                                                        for f in files_of(out, table))
        assert all("run_date" not in pq.read_schema(f).names for f in files_of(out, table))
    assert pq.read_schema(files_of(out, "images")[0]).metadata[b"ferbatch.run_id"]  # metadata kept
    assert main([str(out)]) == 0 and score().n_skipped == 1


# ---------------------------------------------------------------- the current table

SEVEN = {"a/one.jpg": 150, "a/two.jpg": 250, "b/three.jpg": 350, "b/none.jpg": 90, "top.jpg": 150,
         "c/four.jpg": 450, "c/five.jpg": 150}  # 12 faces: FakeDetector finds one per 100 px of width
STAGES = {  # after each: (current images, current faces, history images, history faces)
    "model_change": (7, 12, 14, 24),  # two runs, two model versions, the same 7 photos
    "rescore": (7, 12, 21, 36),  # then --rescore
    "deleted": (6, 9, 21, 36),  # then b/three.jpg (3 faces) deleted and a run with nothing new
}


@pytest.fixture(scope="module")
def stages(tmp_path_factory):
    """An output folder copied after a model change, a --rescore and a deleted photo (symlinks kept)."""
    import shutil

    root = tmp_path_factory.mktemp("current")
    folder, out = root / "in", root / "out"
    for name, width in SEVEN.items():
        _photo(folder / name, width)
    score = lambda version, **kw: run_scoring(ScoreSettings(folders=[folder], out=out),  # noqa: E731
                                              FakeComponents(FakeClassifier(version)), **kw)
    copies = {}
    score("fake-v1")
    score("fake-v2")
    copies["model_change"] = shutil.copytree(out, root / "model_change", symlinks=True)
    score("fake-v2", rescore=True)
    copies["rescore"] = shutil.copytree(out, root / "rescore", symlinks=True)
    (folder / "b" / "three.jpg").unlink()
    assert score("fake-v2").n_scored == 0
    copies["deleted"] = out
    return copies


def _counts(read, out: Path) -> tuple[int, int, int, int]:
    return (read(out / "current" / "images"), read(out / "current" / "faces"), read(out / "images"),
            read(out / "faces"))


@pytest.mark.parametrize("stage", STAGES)
def test_pandas_pyarrow_and_polars_count_each_photo_once_in_the_current_table(stages, stage):
    out = stages[stage]
    assert _counts(lambda p: len(pd.read_parquet(p)), out) == STAGES[stage]
    assert _counts(lambda p: ds.dataset(p, partitioning="hive").count_rows(), out) == STAGES[stage]
    assert _counts(lambda p: pq.read_table(p).num_rows, out) == STAGES[stage]
    assert _counts(lambda p: pl.read_parquet(p, hive_partitioning=True).height, out) == STAGES[stage]
    current = pd.read_parquet(out / "current" / "images")
    assert current.path.is_unique and set(current.model_version) == {"fake-v2"}  # who scored each row
    assert isinstance(current.run_date.dtype, pd.CategoricalDtype)  # the same partitioning as the history


@pytest.mark.parametrize("stage", STAGES)
def test_duckdb_counts_each_photo_once_and_joins_faces_to_their_images(stages, stage):
    out = stages[stage]
    connection = duckdb.connect()
    count = lambda p: connection.sql(f"SELECT count(*) FROM read_parquet('{p}/**/*.parquet')").fetchall()[0][0]  # noqa: E731
    assert _counts(count, out) == STAGES[stage]
    joined = connection.sql(
        f"SELECT count(*) FROM read_parquet('{out}/current/faces/**/*.parquet') f "
        f"JOIN read_parquet('{out}/current/images/**/*.parquet') i USING (image_id, path, run_id)").fetchall()
    assert joined[0][0] == STAGES[stage][1]  # every face has its image row, once
    by_folder = dict(connection.sql(f"SELECT folder, count(*) FROM read_parquet('{out}/current/images/**/*.parquet')"
                                    " GROUP BY folder").fetchall())
    assert by_folder["b"] == (1 if stage == "deleted" else 2)


def test_spark_counts_each_photo_once_in_the_current_table(stages, spark):
    for stage, expected in STAGES.items():
        assert _counts(lambda p: spark.read.parquet(str(p)).count(), stages[stage]) == expected, stage
