"""The scoring pipeline with injected fakes: rows, error rows, batching, incremental runs, crash safety."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from fakes import FakeClassifier, FakeComponents, FakeDetector, PixelClassifier
from imagefactory import encode, synthetic, write_good_and_bad

from ferbatch.errors import FerbatchError
from ferbatch.reports import TMP_SUFFIX, ReportStore
from ferbatch.scoring import Face, PipelineSettings, ScoreSettings, as_text, image_probabilities, run_scoring

SETTINGS = ScoreSettings(max_pixels=4_000_000)
PIPELINE = PipelineSettings.from_settings(SETTINGS, chunk_images=4)


def _photos(folder: Path, widths: dict[str, int]) -> Path:
    for name, width in widths.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode(synthetic(width, 120, seed=zlib.crc32(name.encode())), "JPEG"))  # distinct bytes
    return folder


def _score(folder, out, classifier=None, shard_size=None, **kwargs):
    components = FakeComponents(classifier)
    settings = SETTINGS.with_overrides(folders=[folder], out=out, shard_size=shard_size)
    summary = run_scoring(settings, components, pipeline=PIPELINE, **kwargs)
    return summary, components.loads


def _table(out: Path, name: str):
    files = sorted((out / name).glob("run_date=*/*.parquet"))
    return pq.ParquetDataset(files, partitioning=None).read().to_pandas() if files else None


def test_each_image_gets_one_row_and_each_face_one_row(tmp_path):
    folder = _photos(tmp_path / "in", {"a/one.jpg": 150, "a/three.jpg": 350, "b/none.jpg": 90, "top.jpg": 90})
    summary, _ = _score(folder, tmp_path / "out")
    images, faces = _table(tmp_path / "out", "images"), _table(tmp_path / "out", "faces")
    by_path = images.set_index("path")
    assert by_path.loc["a/one.jpg", "n_faces"] == 1 and by_path.loc["a/three.jpg", "n_faces"] == 3
    assert by_path.loc["b/none.jpg", "status"] == "no_face"
    assert np.isnan(by_path.loc["b/none.jpg", "sentiment_score"])
    assert len(faces) == 4 and sorted(faces.face_index[faces.path == "a/three.jpg"]) == [0, 1, 2]
    assert summary.n_scored == 4 and summary.n_faces == 4
    assert set(images.folder) == {"a", "b", "(top level)"}  # images directly in the scanned folder: visible


def test_image_level_probabilities_are_the_area_weighted_mean_of_its_faces():
    faces = [Face(0, 0, 10, 10, 1.0), Face(0, 0, 30, 10, 1.0)]  # areas 100 and 300
    probabilities = np.zeros((2, 7))
    probabilities[0, 3] = 1.0
    probabilities[1, 4] = 1.0
    mean = image_probabilities(faces, probabilities)
    assert mean[3] == pytest.approx(0.25) and mean[4] == pytest.approx(0.75)


def test_image_emotion_and_sentiment_follow_the_mean_probabilities(tmp_path):
    folder = _photos(tmp_path / "in", {"three.jpg": 350})
    _score(folder, tmp_path / "out")
    row = _table(tmp_path / "out", "images").iloc[0]
    face_rows = _table(tmp_path / "out", "faces").sort_values("face_index")
    areas = (face_rows.w * face_rows.h).to_numpy(float)
    columns = [c for c in face_rows.columns if c.startswith("p_")]
    expected = (face_rows[columns].to_numpy() * (areas / areas.sum())[:, None]).sum(axis=0)
    np.testing.assert_allclose(row[columns].to_numpy(float), expected, rtol=1e-5)
    assert row.emotion == columns[int(expected.argmax())].removeprefix("p_").capitalize()
    assert row.sentiment_score == pytest.approx(expected[3] - expected[[0, 1, 2, 4]].sum(), abs=1e-5)


def test_faces_from_many_images_share_classifier_calls(tmp_path):
    folder = _photos(tmp_path / "in", {f"img{i}.jpg": 250 for i in range(8)})  # 2 faces each
    classifier = FakeClassifier()
    _score(folder, tmp_path / "out", classifier)
    assert sum(classifier.calls) == 16
    assert classifier.calls == [8, 8]  # chunks of 4 images, one call each, never one per face


def test_every_bad_file_becomes_one_error_row_and_every_good_file_is_scored(tmp_path):
    expected = write_good_and_bad(tmp_path / "in", huge_limit=SETTINGS.max_pixels)
    summary, _ = _score(tmp_path / "in", tmp_path / "out")
    images = _table(tmp_path / "out", "images")
    assert sorted(images.path) == sorted(as_text(Path(p)) for p in expected)
    for path, fragment in expected.items():
        row = images[images.path == as_text(Path(path))].iloc[0]
        if fragment is None:
            assert row.status in ("ok", "no_face"), (path, row.error)
        else:
            assert row.status == "error" and fragment in row.error, (path, row.error)
    assert summary.status_counts["error"] == sum(v is not None for v in expected.values())


def test_a_second_run_scores_nothing_new_and_does_not_load_the_model(tmp_path):
    folder = _photos(tmp_path / "in", {"a.jpg": 150, "b.jpg": 250})
    _score(folder, tmp_path / "out")
    second, loads = _score(folder, tmp_path / "out")
    assert second.n_scored == 0 and second.n_skipped == 2
    assert loads == []
    assert len(_table(tmp_path / "out", "images")) == 2


def test_only_new_files_are_scored_and_a_touched_file_is_recognised_by_content(tmp_path):
    folder = _photos(tmp_path / "in", {"a.jpg": 150, "b.jpg": 250})
    _score(folder, tmp_path / "out")
    _photos(folder, {"c.jpg": 350})
    os.utime(folder / "a.jpg", (1_000_000, 1_000_000))  # new mtime, same bytes
    second, _ = _score(folder, tmp_path / "out")
    assert second.n_scored == 1
    assert sorted(_table(tmp_path / "out", "images").path) == ["a.jpg", "b.jpg", "c.jpg"]


def test_rescore_and_a_new_model_version_score_everything_again(tmp_path):
    folder = _photos(tmp_path / "in", {"a.jpg": 150})
    _score(folder, tmp_path / "out")
    assert _score(folder, tmp_path / "out", rescore=True)[0].n_scored == 1
    assert _score(folder, tmp_path / "out", FakeClassifier("fake-v2"))[0].n_scored == 1


def test_parquet_metadata_names_the_model_detector_and_sentiment_map(tmp_path):
    folder = _photos(tmp_path / "in", {"a.jpg": 150})
    summary, _ = _score(folder, tmp_path / "out")
    metadata = pq.read_schema(summary.files["images"][0]).metadata
    assert metadata[b"ferbatch.model_version"] == b"fake-v1"
    assert metadata[b"ferbatch.detector"] == b"fake-detector"
    assert b'"Happy": "positive"' in metadata[b"ferbatch.sentiment_map"]


def test_aggregates_count_by_all_folder_and_taken_date(tmp_path):
    folder = _photos(tmp_path / "in", {"brand_a/x.jpg": 150, "brand_a/y.jpg": 90, "brand_b/z.jpg": 250})
    _score(folder, tmp_path / "out")
    aggregates = _table(tmp_path / "out", "aggregates")
    everything = aggregates[aggregates.group_by == "all"].iloc[0]
    assert (everything.n_images, everything.n_ok, everything.n_no_face, everything.n_faces) == (3, 2, 1, 3)
    assert everything.share_positive + everything.share_negative + everything.share_neutral == pytest.approx(1)
    brand_a = aggregates[(aggregates.group_by == "folder") & (aggregates.group_value == "brand_a")].iloc[0]
    assert (brand_a.n_images, brand_a.n_ok) == (2, 1)
    undated = aggregates[aggregates.group_by == "taken_date"].iloc[0]
    assert pd.isna(undated.group_value) and undated.n_images == 3


_KILLABLE = """
import sys, time
sys.path.insert(0, {tests!r})
from fakes import FakeClassifier, FakeComponents
from ferbatch.scoring import PipelineSettings, ScoreSettings, run_scoring
def progress(_):
    print("scored", flush=True)
settings = ScoreSettings(folders=[{folder!r}], out={out!r})
run_scoring(settings, FakeComponents(FakeClassifier(delay=0.2)),
            pipeline=PipelineSettings.from_settings(settings, chunk_images=2), on_image=progress)
print("done", flush=True)
"""


def test_a_run_killed_halfway_leaves_nothing_half_written_and_a_rerun_scores_each_image_once(tmp_path):
    folder = _photos(tmp_path / "in", {f"img{i:02d}.jpg": 150 for i in range(30)})
    out = tmp_path / "out"
    _score(_photos(tmp_path / "first", {"earlier.jpg": 150}), out)  # a committed earlier run must survive
    script = _KILLABLE.format(tests=str(Path(__file__).parent), folder=str(folder), out=str(out))
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    for _ in range(6):  # let it score a few images, then kill it hard
        assert child.stdout.readline().strip() == "scored"
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=30)
    assert len(_table(out, "images")) == 1  # only the earlier run is visible to readers

    summary, _ = _score(folder, out)
    images = _table(out, "images")
    assert summary.n_scored == 30
    assert images.image_id.is_unique and len(images) == 31
    assert not list(out.rglob(f"*{TMP_SUFFIX}"))


def test_error_rows_for_missing_bytes_have_no_image_id(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "gone.jpg").symlink_to(folder / "nothing.jpg")
    _score(folder, tmp_path / "out")
    row = _table(tmp_path / "out", "images").iloc[0]
    assert row.status == "error" and pd.isna(row.image_id) and "unreadable" in row.error
    assert _score(folder, tmp_path / "out")[0].n_scored == 1  # unreadable files are retried


def test_output_and_annotation_folders_inside_an_input_folder_are_never_scored(tmp_path, caplog):
    from ferbatch.scoring import ANNOTATIONS_MARKER

    folder = _photos(tmp_path / "in", {"a.jpg": 150})
    _photos(folder / "checked", {"a.jpg": 250})  # copies an earlier --annotate wrote there: marked
    (folder / "checked" / ANNOTATIONS_MARKER).write_text("")
    with caplog.at_level("INFO", logger="ferbatch"):
        summary, _ = _score(folder, folder / "out")
    assert summary.n_found == 1
    assert f"{folder / 'checked'}: not scanned: it holds {ANNOTATIONS_MARKER}" in caplog.text  # never silently
    (folder / "out" / "stray.jpg").write_bytes((folder / "a.jpg").read_bytes())
    assert _score(folder, folder / "out")[0].n_found == 1
    with pytest.raises(FerbatchError, match="is inside the scanned folder"):  # new copies never go there
        _score(folder, folder / "out", annotate=str(folder / "checked"))


def test_an_annotations_folder_is_marked_and_skipped_by_later_runs_without_annotate(tmp_path):
    from ferbatch.scoring import ANNOTATIONS_MARKER

    folder = _photos(tmp_path / "photos" / "in", {"a.jpg": 150, "b.jpg": 350})
    checked = tmp_path / "photos" / "checked"
    _score(folder, tmp_path / "out", annotate=str(checked))
    assert (checked / ANNOTATIONS_MARKER).is_file()
    assert sorted(p.name for p in checked.glob("*.jpg")) == ["a.jpg", "b.jpg"]  # copies with faces
    second, _ = _score(tmp_path / "photos", tmp_path / "out")  # the folder above both, no --annotate this time
    assert second.n_found == 2  # the photos, not their copies


def test_a_second_run_into_a_locked_output_folder_is_refused_with_a_clear_message(tmp_path):
    folder = _photos(tmp_path / "in", {"a.jpg": 150})
    busy = pytest.raises(FerbatchError, match="another ferbatch run is writing")
    with ReportStore(tmp_path / "out").open_run(), busy:
        _score(folder, tmp_path / "out")
    assert _score(folder, tmp_path / "out")[0].n_scored == 1  # the lock is released with its holder


def test_parts_of_a_run_killed_between_its_renames_are_removed_and_rescored_once(tmp_path):
    folder = _photos(tmp_path / "in", {"a.jpg": 150, "b.jpg": 250})
    first, _ = _score(folder, tmp_path / "out")
    first.files["images"][0].unlink()  # as if killed after renaming faces and aggregates, before images
    second, _ = _score(folder, tmp_path / "out")
    assert second.n_scored == 2
    assert len(_table(tmp_path / "out", "images")) == 2
    assert len(_table(tmp_path / "out", "faces")) == 3  # no faces left over from the broken run
    assert set(_table(tmp_path / "out", "aggregates").run_id) == {second.run_id}


def test_unchanged_files_are_recognised_without_reading_them(tmp_path, monkeypatch):
    import ferbatch.scoring._run

    folder = _photos(tmp_path / "in", {"a.jpg": 150, "b.jpg": 250})
    _score(folder, tmp_path / "out")
    reads = []
    original = ferbatch.scoring._run.file_id
    monkeypatch.setattr(ferbatch.scoring._run, "file_id", lambda file, *a: reads.append(file) or original(file, *a))
    assert _score(folder, tmp_path / "out")[0].n_skipped == 2
    assert reads == []


def test_a_run_with_nothing_new_writes_no_data_files_and_report_keeps_the_last_scoring_run(tmp_path):
    folder = _photos(tmp_path / "in", {"a.jpg": 150})
    first, _ = _score(folder, tmp_path / "out")
    before = sorted(p.relative_to(tmp_path) for p in (tmp_path / "out").rglob("*") if p.is_file())
    second, _ = _score(folder, tmp_path / "out")
    assert second.n_found == 1 and second.n_scored == 0
    assert second.files == {} and second.aggregates == []
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "out").rglob("*") if p.is_file()) == before
    assert set(ReportStore(tmp_path / "out").latest_aggregates().column("run_id").to_pylist()) == {first.run_id}


@pytest.mark.parametrize("contents", [{}, {"notes.txt": b"hello", "sub/data.csv": b"a,b"}])
def test_an_empty_folder_or_one_without_images_writes_nothing_and_says_what_it_looked_for(tmp_path, caplog,
                                                                                         contents):
    folder = tmp_path / "in"
    folder.mkdir()
    for name, data in contents.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
    with caplog.at_level("WARNING", logger="ferbatch"):
        summary, loads = _score(folder, tmp_path / "out")
    assert summary.n_found == 0 and summary.files == {} and loads == []
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file() and p.suffix == ".parquet"]
    assert f"no images found under {folder}; looked for: .bmp, .gif, .jpeg, .jpg, .png" in caplog.text


def _rows(out: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    images = _table(out, "images").drop(columns=["run_id", "scored_at"]).sort_values("path").reset_index(drop=True)
    faces = _table(out, "faces").drop(columns=["run_id"]).sort_values(["path", "face_index"]).reset_index(drop=True)
    return images, faces


def test_scoring_in_shards_writes_one_part_per_shard_and_the_same_rows_as_one_shard(tmp_path):
    folder = _photos(tmp_path / "in", {f"{i}.jpg": 150 + 50 * i for i in range(5)})
    whole, _ = _score(folder, tmp_path / "whole", classifier=PixelClassifier())
    sharded, loads = _score(folder, tmp_path / "sharded", classifier=PixelClassifier(), shard_size=2)
    assert len(sharded.files["images"]) == 3 and len(sharded.files["faces"]) == 3
    assert len(whole.files["images"]) == 1
    assert loads == [1, 1, 1]  # each shard asks for the classifier; Components caches the real model
    for single, parts in zip(_rows(tmp_path / "whole"), _rows(tmp_path / "sharded"), strict=True):
        pd.testing.assert_frame_equal(single, parts)
    aggregates = [_table(tmp_path / name, "aggregates").drop(columns=["run_id"]) for name in ("whole", "sharded")]
    pd.testing.assert_frame_equal(*aggregates)


def test_a_run_that_dies_between_renames_is_finished_by_the_next_run(tmp_path, monkeypatch):
    import ferbatch.reports._store

    folder = _photos(tmp_path / "in", {"a.jpg": 150, "b.jpg": 250, "c.jpg": 300})
    real_replace, calls = os.replace, []

    def dies_on_the_third_rename(src, dst):
        calls.append(dst)
        if len(calls) == 3:  # the manifest, then the first part: then the power goes
            raise KeyboardInterrupt
        real_replace(src, dst)

    monkeypatch.setattr(ferbatch.reports._store.os, "replace", dies_on_the_third_rename)
    with pytest.raises(KeyboardInterrupt):
        _score(folder, tmp_path / "out", shard_size=2)
    monkeypatch.setattr(ferbatch.reports._store.os, "replace", real_replace)
    assert list((tmp_path / "out").glob(".ferbatch-commit-*.json"))  # the manifest survived the crash

    second, loads = _score(folder, tmp_path / "out")
    assert (second.n_skipped, second.n_scored, loads) == (3, 0, [])  # the first run was finished, not lost
    assert sorted(_table(tmp_path / "out", "images").path) == ["a.jpg", "b.jpg", "c.jpg"]
    assert not list((tmp_path / "out").rglob(f"*{TMP_SUFFIX}"))
    assert not list((tmp_path / "out").glob(".ferbatch-commit-*"))


def test_a_failing_shard_leaves_no_files_behind(tmp_path):
    folder = _photos(tmp_path / "in", {"a.jpg": 150, "b.jpg": 250, "c.jpg": 300})

    class BreaksOnSecondCall(FakeClassifier):
        def predict(self, faces):
            if len(self.calls) == 1:
                raise RuntimeError("out of memory")
            return super().predict(faces)

    with pytest.raises(RuntimeError, match="out of memory"):
        _score(folder, tmp_path / "out", classifier=BreaksOnSecondCall(), shard_size=2)
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file() and p.name != ".ferbatch.lock"]


def test_small_faces_are_cropped_from_a_full_resolution_grey_decode(tmp_path):
    from ferbatch.scoring import crop_faces, decode, prepare, scan

    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "big.jpg").write_bytes(encode(synthetic(2400, 1600, seed=3), "JPEG"))  # faces of 40-270 px
    (file,) = scan([folder])
    reduced = prepare(file, FakeDetector(), PipelineSettings.from_settings(ScoreSettings(), decode_long_side=960))
    full = prepare(file, FakeDetector(), PipelineSettings.from_settings(ScoreSettings(), decode_long_side=None))
    assert len(reduced.faces) == len(full.faces) == 24
    assert reduced.faces == full.faces
    assert reduced.seconds["decode"] > 0 and set(reduced.seconds) == {"read", "decode", "detect", "crop"}
    # The 40 px face forced a full decode, of the luma alone: the crops are the colour decode's turned grey, up
    # to the chroma planes' rounding, and far closer to them than crops from the reduced copy would be.
    settings = PipelineSettings.from_settings(ScoreSettings())
    from_reduced = crop_faces(decode(file.absolute.read_bytes(), min_long_side=960).pixels, full.faces, 0.5,
                              settings)
    grey_error = np.abs(reduced.crops.astype(int) - full.crops.astype(int)).mean()
    assert grey_error < 0.5 < np.abs(from_reduced.astype(int) - full.crops.astype(int)).mean()


def test_large_faces_are_cropped_from_the_reduced_image_and_barely_differ(tmp_path):
    from ferbatch.scoring import Face, prepare, scan

    class OneBigFace:
        name = "one-big-face"

        def detect(self, rgb, scale=1.0):
            return [Face(400, 20, 240, 240, 0.99)]

    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "big.jpg").write_bytes(encode(synthetic(2400, 1600, seed=4), "JPEG"))
    (file,) = scan([folder])
    reduced = prepare(file, OneBigFace(), PipelineSettings.from_settings(ScoreSettings(), decode_long_side=960))
    full = prepare(file, OneBigFace(), PipelineSettings.from_settings(ScoreSettings(), decode_long_side=None))
    assert not np.array_equal(reduced.crops, full.crops)  # really cropped from the other image
    assert np.abs(reduced.crops.astype(int) - full.crops.astype(int)).mean() < 3


def test_recovery_never_deletes_files_it_did_not_write(tmp_path):
    folder = _photos(tmp_path / "in", {"a.jpg": 150})
    partition = tmp_path / "out" / "faces" / "run_date=2026-01-01"
    strangers = [partition / "part-mine.parquet", partition / "x.parquet"]
    for path in strangers:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"someone else's file")
    _score(folder, tmp_path / "out")
    # unreadable as Parquet, they are set aside (case 2 of issue 12), never deleted
    aside = tmp_path / "out" / ".ferbatch-damaged" / "faces" / "run_date=2026-01-01"
    assert all((aside / path.name).read_bytes() == b"someone else's file" for path in strangers)


def test_typed_rows_match_the_schemas_and_the_summary_shares_match_the_aggregates(tmp_path):
    from ferbatch.reports import FACES_SCHEMA, IMAGES_SCHEMA, FaceRow, ImageRow

    assert [f for f in ImageRow.__dataclass_fields__] == IMAGES_SCHEMA.names
    assert [f for f in FaceRow.__dataclass_fields__] == FACES_SCHEMA.names
    folder = _photos(tmp_path / "in", {"a.jpg": 150, "b.jpg": 350, "c.jpg": 250, "d.jpg": 90})
    summary, _ = _score(folder, tmp_path / "out")
    everything = next(row for row in summary.aggregates if row["group_by"] == "all")
    as_json = summary.to_dict()
    for sentiment in ("positive", "negative", "neutral"):
        assert as_json[f"share_{sentiment}"] == everything[f"share_{sentiment}"]


def test_a_path_that_is_not_there_stops_the_run_before_anything_is_written(tmp_path):
    """A container deployment whose photo volume was not mounted must fail, not report one error row."""
    (tmp_path / "gone.jpg").symlink_to(tmp_path / "nothing.jpg")  # a broken link named directly still counts
    settings = SETTINGS.with_overrides(folders=["/data/photos", tmp_path / "gone.jpg"], out=tmp_path / "out")
    with pytest.raises(FerbatchError, match=r"/data/photos: no such file or folder"):
        run_scoring(settings, FakeComponents())
    assert not (tmp_path / "out").exists()


def test_progress_counts_each_image_as_it_is_prepared_before_its_chunk_is_classified(tmp_path):
    from ferbatch.scoring import scan
    from ferbatch.scoring._pipeline import score_images

    folder = _photos(tmp_path / "in", {f"{i}.jpg": 150 for i in range(4)})
    components, prepared, seen = FakeComponents(None), [], []
    classifier = components.classifier()
    original = classifier.predict

    def predict(faces):
        seen.append(len(prepared))  # what a progress display shows while the chunk is classified
        return original(faces)

    classifier.predict = predict
    rows = list(score_images(list(scan([folder])), components.detector(), classifier, PIPELINE,
                             on_prepared=lambda: prepared.append(1)))
    assert len(rows) == 4 and len(prepared) == 4
    assert seen == [4]  # one chunk of 4 images: all counted before the one classifier call


def test_a_classifier_loader_is_called_once_after_the_first_chunk_is_submitted(tmp_path):
    from ferbatch.scoring import scan
    from ferbatch.scoring._pipeline import score_images

    folder = _photos(tmp_path / "in", {f"{i}.jpg": 150 for i in range(5)})
    components, loads = FakeComponents(None), []
    detector = components.detector()
    detect = detector.detect
    submitted = threading.Event()

    def detecting(*args, **kwargs):
        submitted.set()
        return detect(*args, **kwargs)

    detector.detect = detecting

    def load():
        # The model loads while the threads work on the first chunk: they have it before the load returns.
        assert submitted.wait(timeout=10)
        loads.append(1)
        return components.classifier()

    settings = replace(PIPELINE, chunk_images=2)
    by_loader = list(score_images(list(scan([folder])), detector, load, settings))
    direct = list(score_images(list(scan([folder])), components.detector(), components.classifier(), settings))
    assert loads == [1] and len(by_loader) == 5
    for lazy, eager in zip(by_loader, direct, strict=True):
        np.testing.assert_allclose(lazy.probabilities, eager.probabilities)


def test_overlapping_and_differently_spelled_roots_give_one_row_per_file(tmp_path, monkeypatch):
    """Issue 12, case 1: `A A/`, `A A/sub`, and `A` relative then absolute."""
    folder = _photos(tmp_path / "A", {"a.jpg": 150, "b.jpg": 250, "sub/c.jpg": 350, "sub/d.jpg": 90})
    out = tmp_path / "out"
    monkeypatch.chdir(tmp_path)
    settings = SETTINGS.with_overrides(folders=["A", "A/", "A/sub", str(folder / "sub" / "c.jpg")], out=out)
    summary = run_scoring(settings, FakeComponents(), pipeline=PIPELINE)
    images = _table(out, "images")
    assert summary.n_found == 4 and len(images) == 4 and images.path.is_unique
    assert set(images.root) == {as_text(folder.resolve())}  # the outer root wins
    assert dict(zip(images.path, images.folder, strict=True))["sub/c.jpg"] == "sub"
    everything = next(row for row in summary.aggregates if row["group_by"] == "all")
    assert everything["n_images"] == 4

    import ferbatch.scoring._run

    reads = []
    original = ferbatch.scoring._run.file_id
    monkeypatch.setattr(ferbatch.scoring._run, "file_id", lambda file, *a: reads.append(file) or original(file, *a))
    again = run_scoring(SETTINGS.with_overrides(folders=[folder.resolve()], out=out), FakeComponents(),
                        pipeline=PIPELINE)
    assert again.n_skipped == 4 and reads == []  # absolute after relative: the cheap fingerprint still matches
    again = run_scoring(SETTINGS.with_overrides(folders=["A/sub/../sub/", "A/./a.jpg"], out=out), FakeComponents(),
                        pipeline=PIPELINE)
    assert again.n_found == 3 and again.n_skipped == 3 and reads == []


def test_a_damaged_report_file_is_set_aside_with_a_warning_and_its_rows_come_back(tmp_path, caplog):
    """Issue 12, case 2: a stray or truncated .parquet never stops later runs and loses no rows."""
    from ferbatch.reports import DAMAGED_DIR

    folder = _photos(tmp_path / "in", {"a.jpg": 150, "b.jpg": 350, "c.jpg": 250})
    out = tmp_path / "out"
    first, _ = _score(folder, out, shard_size=2)
    partition = first.files["images"][0].parent
    (partition / "junk.parquet").write_bytes(os.urandom(5000))  # a stray file, not ours
    damaged = sorted(partition.glob("part-*-s0001.parquet"))[0]  # ours: truncated by a bad copy
    damaged.write_bytes(damaged.read_bytes()[:300])
    with caplog.at_level("WARNING", logger="ferbatch"):
        second, _ = _score(folder, out, shard_size=2)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(str(partition / "junk.parquet") in w and "moved to" in w for w in warnings)
    assert any(str(damaged) in w and "scored again" in w for w in warnings)
    assert all("\n" not in w for w in warnings)
    aside = out / DAMAGED_DIR
    assert (aside / "images" / partition.name / "junk.parquet").exists()
    assert (aside / "images" / partition.name / damaged.name).exists()
    assert (aside / "faces" / partition.name / damaged.name).exists()  # its faces go with it: no duplicates
    assert second.n_scored == 1  # the image of the damaged part is scored again
    images, faces = _table(out, "images"), _table(out, "faces")
    assert sorted(images.path) == ["a.jpg", "b.jpg", "c.jpg"]
    assert len(faces) == len(faces.drop_duplicates(["image_id", "face_index"]))
    third, _ = _score(folder, out)
    assert third.n_scored == 0  # and the runs after go on as usual
    (partition / "junk.parquet").write_bytes(os.urandom(5000))  # another stray of the same name
    _score(folder, out)
    assert (aside / "images" / partition.name / "junk.parquet.1").exists()  # the first one is kept
    assert (aside / "images" / partition.name / "junk.parquet").exists()


def test_a_damaged_report_file_past_its_footer_is_a_one_line_error(tmp_path):
    folder = _photos(tmp_path / "in", {"a.jpg": 150})
    first, _ = _score(folder, tmp_path / "out")
    part = first.files["images"][0]
    data = bytearray(part.read_bytes())
    footer = int.from_bytes(data[-8:-4], "little") + 8
    data[4 : len(data) - footer] = os.urandom(len(data) - footer - 4)  # the pages, not the footer
    part.write_bytes(bytes(data))
    with pytest.raises(FerbatchError, match=rf"{part.name}: a report file cannot be read \(.*\); move it out"):
        _score(folder, tmp_path / "out")


def test_a_lock_file_that_is_a_folder_is_a_one_line_error(tmp_path):
    """Issue 12, case 3."""
    folder = _photos(tmp_path / "in", {"a.jpg": 150})
    (tmp_path / "out" / ".ferbatch.lock").mkdir(parents=True)
    with pytest.raises(FerbatchError, match=r"\.ferbatch\.lock: is a folder, not ferbatch's lock file; remove it"):
        _score(folder, tmp_path / "out")


def test_report_reading_a_damaged_aggregates_file_is_a_one_line_error_naming_it(tmp_path):
    folder = _photos(tmp_path / "in", {"a.jpg": 150})
    first, _ = _score(folder, tmp_path / "out")
    part = first.files["aggregates"][0]
    part.write_bytes(part.read_bytes()[:-20])  # truncated: `ferbatch report` opens the folder without the lock
    with pytest.raises(FerbatchError, match=rf"{part}: a report file cannot be read \(.*\); move it out") as raised:
        ReportStore(tmp_path / "out").latest_aggregates()
    assert "\n" not in str(raised.value)


def test_a_run_whose_only_images_part_is_damaged_has_all_its_parts_set_aside_not_deleted(tmp_path):
    folder = _photos(tmp_path / "in", {"a.jpg": 150, "b.jpg": 350})
    out = tmp_path / "out"
    first, _ = _score(folder, out)
    part = first.files["images"][0]
    part.write_bytes(part.read_bytes()[:100])
    second, _ = _score(folder, out)
    assert second.n_scored == 2
    aside = out / ".ferbatch-damaged"
    for table in ("images", "faces", "aggregates"):
        assert [p.name for p in aside.glob(f"{table}/run_date=*/*.parquet")] == [first.files[table][0].name]
    assert set(_table(out, "images").run_id) == set(_table(out, "aggregates").run_id) == {second.run_id}
    assert len(_table(out, "faces")) == 4  # a.jpg's face and b.jpg's three, once
