"""`ferbatch analyze` and `ferbatch.analyze()`: one image's faces, the same numbers as a scoring run's rows."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner
from fakes import FakeComponents, PixelClassifier
from imagefactory import PHOTO_FACES, PHOTOS, encode, synthetic

import ferbatch
from ferbatch.classes import CLASS_NAMES
from ferbatch.config import ScoreSettings
from ferbatch.errors import FerbatchError

PROJECT = Path(__file__).resolve().parents[1]


def _table(out: Path, name: str):
    files = sorted((out / name).glob("run_date=*/*.parquet"))
    return pq.ParquetDataset(files, partitioning=None).read().to_pandas()


@pytest.fixture(scope="module")
def scored_photos(tmp_path_factory):
    """A real scoring run (YuNet and the shipped model, as `ferbatch score` builds them) over the sample photos."""
    from ferbatch.scoring import Components, run_scoring

    out = tmp_path_factory.mktemp("out")
    settings = ScoreSettings(folders=[PHOTOS], out=out)
    run_scoring(settings, Components.for_run(settings))
    return _table(out, "images"), _table(out, "faces")


def test_analyze_gives_each_face_the_probabilities_its_row_holds_after_a_real_score_run(scored_photos):
    _, faces = scored_photos
    for name in ("fr_obama.jpg", "fr_obama_and_biden.jpg"):
        found = ferbatch.analyze(PHOTOS / name)
        rows = faces[faces.path == name].sort_values("face_index")
        assert len(found) == len(rows) == PHOTO_FACES[name]
        for face, (_, row) in zip(found, rows.iterrows(), strict=True):
            assert isinstance(face, ferbatch.Face)
            assert list(face.probabilities) == list(CLASS_NAMES)
            # The same crops through the same model; the classifier's float32 sums run in an order that depends
            # on how many faces share its call (one image here, the whole folder there), hence 1e-6.
            np.testing.assert_allclose(list(face.probabilities.values()),
                                       [row[f"p_{c.lower()}"] for c in CLASS_NAMES], rtol=0, atol=1e-6)
            assert face.box == (row.x, row.y, row.w, row.h)
            assert (face.emotion, face.sentiment) == (row.emotion, row.sentiment)
            assert face.score == pytest.approx(row.sentiment_score, abs=1e-6)
            assert face.probability == max(face.probabilities.values())
            assert face.landmarks is not None and len(face.landmarks) == 5


def test_a_folder_gives_every_image_its_images_table_verdict(scored_photos):
    from ferbatch.analysis import Analyzer

    images, _ = scored_photos
    by_path = images.set_index("path")
    results = list(Analyzer().images([PHOTOS]))
    assert len(results) == len(images)
    for result in results:
        row = by_path.loc[Path(result.path).name]
        assert result.status == row.status and len(result.faces) == row.n_faces
        if result.status == "ok":
            assert result.emotion == row.emotion and result.sentiment == row.sentiment
            assert [np.float32(p) for p in result.probabilities.values()] == [
                np.float32(row[f"p_{c.lower()}"]) for c in CLASS_NAMES]
        else:
            assert result.emotion is None and result.faces == []


def _analyzer():
    from ferbatch.analysis import Analyzer

    return Analyzer(components=FakeComponents(PixelClassifier()))


def test_an_array_is_framed_like_the_same_image_read_from_a_file(tmp_path):
    image = synthetic(420, 200, seed=3)  # PNG: lossless, decoded at full size, so both see the same pixels
    path = tmp_path / "three.png"
    path.write_bytes(encode(image, "PNG"))
    analyzer = _analyzer()
    from_file, from_array = analyzer.faces(path), analyzer.faces(np.asarray(image))
    assert len(from_file) == 4 and from_file == from_array
    grey = analyzer.faces(np.asarray(image.convert("L")))
    assert [f.box for f in grey] == [f.box for f in from_file]


def test_images_without_faces_and_broken_files_become_statuses_and_analyze_raises_for_one_image(tmp_path):
    (tmp_path / "none.jpg").write_bytes(encode(synthetic(90, 90), "JPEG"))
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "two.jpg").write_bytes(encode(synthetic(250, 120), "JPEG"))
    analyzer = _analyzer()
    results = {Path(r.path).name: r for r in analyzer.images([tmp_path])}
    assert results["none.jpg"].status == "no_face" and results["none.jpg"].faces == []
    assert results["broken.jpg"].status == "error" and "not an image" in results["broken.jpg"].error
    assert results["two.jpg"].status == "ok" and len(results["two.jpg"].faces) == 2
    assert analyzer.faces(tmp_path / "none.jpg") == []
    with pytest.raises(FerbatchError, match=r"broken\.jpg: not an image"):
        analyzer.faces(tmp_path / "broken.jpg")
    with pytest.raises(FerbatchError, match="is a folder"):
        analyzer.faces(tmp_path)
    with pytest.raises(FerbatchError, match="no such file"):
        analyzer.faces(tmp_path / "missing.jpg")
    with pytest.raises(FerbatchError, match="uint8"):
        analyzer.faces(np.zeros((100, 100, 3), np.float32))
    with pytest.raises(FerbatchError, match=r"\(height, width, 3\)"):
        analyzer.faces(np.zeros((100, 100, 2), np.uint8))


def test_results_turn_into_plain_json(tmp_path):
    path = tmp_path / "one.png"
    path.write_bytes(encode(synthetic(150, 120), "PNG"))
    (result,) = _analyzer().images([path])
    data = json.loads(json.dumps(result.to_dict()))
    assert data["status"] == "ok" and data["faces"][0]["box"] == list(result.faces[0].box)
    assert data["probability"] == result.probability and set(data["faces"][0]["probabilities"]) == set(CLASS_NAMES)


def test_import_ferbatch_stays_light_and_keras_loads_only_on_the_first_analysis():
    code = ("import sys, ferbatch\n"
            "heavy = lambda: sorted({m.split('.')[0] for m in sys.modules} & {'cv2', 'keras', 'tensorflow'})\n"
            "print(heavy()); from ferbatch import analyze, Face; print(heavy())")
    completed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=PROJECT)
    assert completed.stdout.split("\n")[:2] == ["[]", "['cv2']"], completed.stderr


def test_the_command_prints_a_table_that_fits_80_columns_and_json_without_prefect(tmp_path):
    probe = ("import json, sys\nfrom click.testing import CliRunner\nfrom ferbatch.cli import cli\n"
             "args = ['analyze', sys.argv[1]]\n"
             "table = CliRunner().invoke(cli, [*args, '--annotate', sys.argv[2]], env={'COLUMNS': '80'})\n"
             "data = CliRunner().invoke(cli, [*args, '--json'])\n"
             "print(json.dumps([table.exit_code, table.output, data.exit_code, data.output,\n"
             "                  'prefect' in sys.modules]))")
    env = {key: value for key, value in os.environ.items() if not key.startswith("FERBATCH_")}
    completed = subprocess.run([sys.executable, "-c", probe, str(PHOTOS), str(tmp_path / "drawn")], cwd=tmp_path,
                               capture_output=True, text=True, timeout=300, env=env)
    assert completed.returncode == 0, completed.stderr[-2000:]
    table_code, table, json_code, output, prefect_loaded = json.loads(completed.stdout.strip().splitlines()[-1])
    assert table_code == 0 and json_code == 0, table + output
    assert not prefect_loaded
    assert max(map(len, table.splitlines())) <= 80 and "…" not in table
    assert "fr_two_people.jpg" in table and "no face" in table and " all " in table
    data = json.loads(output)
    assert len(data["images"]) == len(PHOTO_FACES)
    for image in data["images"]:
        assert len(image["faces"]) == PHOTO_FACES[Path(image["path"]).name]
    drawn = {p.name for p in (tmp_path / "drawn").iterdir()}
    assert {"fr_obama.jpg", "skimage_astronaut.jpg"} <= drawn and "fer_no-faces.jpg" not in drawn


def test_the_command_says_so_when_there_is_no_image(tmp_path):
    from ferbatch.cli import cli

    result = CliRunner().invoke(cli, ["analyze", str(tmp_path)])
    assert result.exit_code == 1 and result.output.startswith("Error: no images found under")
