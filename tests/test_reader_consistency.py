"""A committed part is never rewritten in place: readers of `OUT/current/images` reading in a loop while runs commit
see one whole version each time (300 rows, each photo once), or a file they listed gone, never a mix of two."""

from __future__ import annotations

import threading
import time
from collections import Counter
from pathlib import Path

import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from fakes import FakeComponents
from imagefactory import encode, synthetic

from ferbatch.scoring import PipelineSettings, ScoreSettings, run_scoring

PHOTOS = 300
COMMITS = 4


def _settings(folder: Path, out: Path) -> ScoreSettings:
    return ScoreSettings(folders=[folder], out=out, shard_size=100)


def _run(folder: Path, out: Path) -> None:
    settings = _settings(folder, out)
    run_scoring(settings, FakeComponents(), pipeline=PipelineSettings.from_settings(settings, chunk_images=50))


def _photo(path: Path, seed: int) -> None:
    path.write_bytes(encode(synthetic(120, 40, seed=seed), "JPEG"))


def _pyarrow(images: Path) -> list[str]:
    return ds.dataset(images, format="parquet", partitioning="hive").to_table(columns=["path"]).column(
        "path").to_pylist()


def _read_table(images: Path) -> list[str]:
    return pq.read_table(images, columns=["path"]).column("path").to_pylist()


def _pandas(images: Path) -> list[str]:
    import pandas as pd

    return pd.read_parquet(images, columns=["path"])["path"].tolist()


def _polars(images: Path) -> list[str]:
    polars = pytest.importorskip("polars")
    return polars.read_parquet(str(images / "**" / "*.parquet"), columns=["path"])["path"].to_list()


def _duckdb(images: Path) -> list[str]:
    duckdb = pytest.importorskip("duckdb")
    with duckdb.connect() as connection:
        return [row[0] for row in connection.execute(
            f"SELECT path FROM read_parquet('{images}/**/*.parquet', hive_partitioning = true)").fetchall()]


READERS = {"pyarrow dataset": _pyarrow, "pyarrow read_table": _read_table, "pandas": _pandas, "polars": _polars,
           "duckdb": _duckdb}


def test_readers_in_a_loop_during_commits_never_see_two_versions_mixed(tmp_path):
    for name in ("polars", "duckdb"):
        pytest.importorskip(name)
    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    for i in range(PHOTOS):
        _photo(folder / f"p{i:03d}.jpg", i)
    _run(folder, out)  # three parts of 100 photos
    images = out / "current" / "images"
    expected = {f"p{i:03d}.jpg" for i in range(PHOTOS)}
    stop = threading.Event()
    seen: dict[str, Counter] = {name: Counter() for name in READERS}
    mixed: list[str] = []

    def loop(name: str) -> None:
        while not stop.is_set():
            try:
                paths = READERS[name](images)
            except Exception as exc:  # a file listed before a switch and gone after it: not a mix
                seen[name][f"gone: {type(exc).__name__}"] += 1
                continue
            if len(paths) == PHOTOS and set(paths) == expected:
                seen[name]["whole"] += 1
            else:
                mixed.append(f"{name}: {len(paths)} rows, {len(set(paths))} photos")

    threads = [threading.Thread(target=loop, args=(name,), daemon=True) for name in READERS]
    for thread in threads:
        thread.start()
    try:
        for commit in range(COMMITS):
            time.sleep(0.3)
            _photo(folder / f"p{commit * 75:03d}.jpg", 1000 + commit)  # one photo of a part changed: rescored
            _run(folder, out)
        time.sleep(0.3)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
    assert not mixed, mixed[:5]
    assert all(counts["whole"] for counts in seen.values()), seen
    parts = sorted(p.name for p in images.glob("run_date=*/*.parquet"))
    assert len(parts) == 3 + COMMITS and sum(".r" in name for name in parts) == 3  # each part rewritten anew


def test_a_rewritten_part_takes_a_new_name_and_the_old_version_keeps_its_own(tmp_path):
    folder, out = tmp_path / "in", tmp_path / "out"
    folder.mkdir()
    for i in range(4):
        _photo(folder / f"p{i}.jpg", i)
    _run(folder, out)
    before = {p.relative_to(out / "current").as_posix(): p.read_bytes()
              for p in (out / "current").glob("*/run_date=*/*.parquet")}
    _photo(folder / "p0.jpg", 99)
    _run(folder, out)
    after = {p.relative_to(out / "current").as_posix(): p.read_bytes()
             for p in (out / "current").glob("*/run_date=*/*.parquet")}
    assert all(after[name] == data for name, data in before.items() if name in after)  # a name keeps its bytes
    assert set(before) - set(after) and set(after) - set(before)
