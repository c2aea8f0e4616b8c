"""`ferbatch label export`: crops of the least confident (or sampled) faces of a scored folder, and a CSV."""

from __future__ import annotations

import csv

import cv2
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from fakes import FakeComponents, FakeDetector, PixelClassifier
from imagefactory import synthetic

from ferbatch.cli import cli
from ferbatch.config import ScoreSettings
from ferbatch.reports import PROBABILITY_COLUMNS
from ferbatch.scoring import Face, crop_face, decode, run_scoring
from ferbatch.training._labelled import scoring_framing


@pytest.fixture
def scored(tmp_path, monkeypatch):
    """A scored folder: 4 photos (1 to 4 faces each), one broken file (an error row); then one photo deleted."""
    monkeypatch.chdir(tmp_path)  # no ./ferbatch.toml
    photos, out = tmp_path / "photos", tmp_path / "out"
    photos.mkdir()
    for i, width in enumerate((150, 250, 350, 450)):
        synthetic(width, 120, value=60 + 40 * i, seed=i).save(photos / f"p{i}.png")
    (photos / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    run_scoring(ScoreSettings(folders=[photos], out=out), FakeComponents(PixelClassifier(), FakeDetector()))
    (photos / "p1.png").unlink()
    faces = pd.read_parquet(out / "faces")
    faces["confidence"] = faces[PROBABILITY_COLUMNS].max(axis=1)
    return photos, out, faces


def _export(*args):
    return CliRunner().invoke(cli, ["label", "export", *map(str, args)])


def test_export_writes_the_least_confident_faces_and_a_csv_and_skips_missing_files_and_error_rows(tmp_path, scored):
    photos, out, faces = scored
    result = _export(out, "--to", tmp_path / "labels", "--uncertain", "3")
    assert result.exit_code == 0, result.output
    assert "skipped 1: error rows" in result.output and "skipped 2: missing file" in result.output
    present = faces[faces["path"] != "p1.png"].sort_values("confidence")
    expected = present.head(3)
    assert faces[faces["path"] == "p1.png"]["confidence"].min() < expected["confidence"].max()  # p1 was a candidate
    written = sorted(p.relative_to(tmp_path / "labels").as_posix() for p in (tmp_path / "labels").rglob("*"))
    (csv_file,) = (tmp_path / "labels").glob("export-*.csv")
    assert written == sorted([csv_file.name, "_unsorted", *(f"_unsorted/{r.image_id[:16]}-{r.face_index}.png"
                                                           for r in expected.itertuples())])
    rows = list(csv.DictReader(csv_file.open()))
    assert [(r["image_id"], int(r["face_index"])) for r in rows] == list(zip(expected.image_id, expected.face_index,
                                                                               strict=True))
    assert {"crop", "path", "p_happy", "confidence"} <= set(rows[0])
    # the crop is the scoring framing, from the original file, at 96 px
    first = expected.iloc[0]
    grey = cv2.cvtColor(decode((photos / first.path).read_bytes()).pixels, cv2.COLOR_RGB2GRAY)
    margin, level_above = scoring_framing()
    framed = crop_face(grey, Face(first.x, first.y, first.w, first.h, 1.0), margin, size=96, level_above=level_above)
    crop = cv2.imread(str(tmp_path / "labels" / rows[0]["crop"]), cv2.IMREAD_GRAYSCALE)
    assert crop.shape == (96, 96) and np.array_equal(crop, framed)
    # exported faces are not offered again
    again = _export(out, "--to", tmp_path / "labels", "--uncertain", "3")
    assert "skipped 3: already exported" in again.output


def test_a_sample_exports_that_many_faces(tmp_path, scored):
    _, out, _ = scored
    result = _export(out, "--to", tmp_path / "labels", "--sample", "4")
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "labels" / "_unsorted").glob("*.png"))) == 4


@pytest.mark.parametrize("inside", ["out", "photos"])
def test_export_refuses_to_write_into_the_output_or_a_scanned_folder(tmp_path, scored, inside):
    _, out, _ = scored
    result = _export(out, "--to", tmp_path / inside / "labels")
    assert result.exit_code == 1 and "Error:" in result.output
    assert ("output folder" if inside == "out" else "scanned folder") in result.output
    assert not (tmp_path / inside / "labels").exists()


def test_since_leaves_out_faces_of_earlier_runs(tmp_path, scored):
    _, out, _ = scored
    later = _export(out, "--to", tmp_path / "labels", "--since", "2999-01-01")
    assert later.exit_code == 0 and "wrote 0 face crop(s)" in later.output
    assert not (tmp_path / "labels").exists()
    today = min(pd.read_parquet(out / "images")["run_date"].astype(str))
    since_today = _export(out, "--to", tmp_path / "labels", "--since", today, "--uncertain", "2")
    assert "wrote 2 face crop(s)" in since_today.output
