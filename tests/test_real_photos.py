"""Labelled real photos through the scoring path: the figures, the set format, the card and the CLI."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ferbatch.classes import CLASS_NAMES, NUM_CLASSES
from ferbatch.errors import DataError
from ferbatch.training import load_labelled_photos, real_photo_metrics

PHOTOS = Path(__file__).parent / "photos"


def one_hot(names: list[str]) -> np.ndarray:
    return np.eye(NUM_CLASSES)[[CLASS_NAMES.index(n) for n in names]]


def index(names: list[str]) -> np.ndarray:
    return np.array([CLASS_NAMES.index(n) for n in names])


def test_figures_count_a_photo_without_a_face_as_wrong_and_skip_absent_classes_in_macro_recall():
    labels = index(["Happy", "Happy", "Sad", "Neutral"])
    probabilities = np.vstack([one_hot(["Happy", "Sad", "Angry"]), np.full((1, NUM_CLASSES), np.nan)])
    m = real_photo_metrics(labels, probabilities)
    assert m["found"] == pytest.approx(0.75)
    assert m["acc7"] == pytest.approx(1 / 4)
    # Sad read as Angry is still negative; Happy read as Sad is not positive; no face is no sentiment.
    assert m["sent3"] == pytest.approx(2 / 4)
    assert m["recall"] == {"Happy": 0.5, "Sad": 0.0, "Neutral": 0.0}
    assert m["macro_recall"] == pytest.approx(0.5 / 3)
    assert m["confusion_matrix"][CLASS_NAMES.index("Neutral")][-1] == 1  # the "no face" column
    assert m["confusion_columns"][-1] == "no face"


def labelled_set(tmp_path: Path, rows: dict[str, str]) -> Path:
    folder = tmp_path / "set"
    for file, label in rows.items():
        (folder / "images" / label).mkdir(parents=True, exist_ok=True)
        shutil.copy(PHOTOS / file, folder / "images" / label / file)
    lines = ["file,label", *(f"{label}/{file},{label}" for file, label in rows.items())]
    (folder / "labels.csv").write_text("\n".join(lines) + "\n")
    return folder


def test_a_set_is_read_from_labels_csv_relative_to_images(tmp_path):
    folder = labelled_set(tmp_path, {"fr_obama.jpg": "happy", "fer_no-faces.jpg": "Neutral"})
    photos = load_labelled_photos(folder)
    assert photos.root == folder / "images"
    assert [str(f) for f in photos.files] == ["happy/fr_obama.jpg", "Neutral/fer_no-faces.jpg"]
    assert photos.labels.tolist() == [CLASS_NAMES.index("Happy"), CLASS_NAMES.index("Neutral")]


@pytest.mark.parametrize(("csv", "message"), [
    (None, "no labels.csv"),
    ("file,emotion\na.jpg,happy\n", "file,label"),
    ("file,label\nfr_obama.jpg,joy\n", "joy are not FER2013 classes"),
    ("file,label\nmissing.jpg,happy\n", "1 labelled file\\(s\\) missing"),
])
def test_an_unusable_set_is_one_line_error(tmp_path, csv, message):
    shutil.copy(PHOTOS / "fr_obama.jpg", tmp_path / "fr_obama.jpg")
    if csv is not None:
        (tmp_path / "labels.csv").write_text(csv)
    with pytest.raises(DataError, match=message):
        load_labelled_photos(tmp_path)


def test_evaluate_scores_a_set_like_score_and_writes_the_figures_on_the_card(tmp_path, models_dir):
    from ferbatch.config import ScoreSettings
    from ferbatch.models import ModelRegistry
    from ferbatch.scoring import Components, ImageFile, PipelineSettings, image_probabilities
    from ferbatch.scoring._pipeline import score_images

    folder = labelled_set(tmp_path, {"fr_obama.jpg": "happy", "fr_two_people.jpg": "neutral",
                                     "fer_no-faces.jpg": "sad"})
    registry = ModelRegistry(models_dir)
    version = registry.current_version()
    before = registry.card(version)
    result = subprocess.run(
        [sys.executable, "-m", "ferbatch", "evaluate", "--real-photos", str(folder), "--models-dir", str(models_dir),
         "--json"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)["real_photos"]["sets"]["set"]
    assert printed["n"] == 3 and printed["found"] == pytest.approx(2 / 3)

    # The same verdicts as the scoring pipeline gives the same files with the default settings.
    settings = ScoreSettings()
    components = Components.for_run(settings, version, models_dir)
    files = [ImageFile(folder / "images", Path(p), None, None)
             for p in ("happy/fr_obama.jpg", "neutral/fr_two_people.jpg", "sad/fer_no-faces.jpg")]
    scored = list(score_images(files, components.detector(), components.classifier(),
                               PipelineSettings.from_settings(settings)))
    verdicts = [int(image_probabilities(s.prepared.faces, s.probabilities).argmax()) for s in scored[:2]]
    expected = real_photo_metrics(np.array([3, 6, 4]), np.vstack([np.eye(NUM_CLASSES)[verdicts],
                                                                  np.full((1, NUM_CLASSES), np.nan)]))
    assert printed["acc7"] == expected["acc7"] and printed["confusion_matrix"] == expected["confusion_matrix"]

    card = registry.card(version)
    assert card["real_photos"]["sets"]["set"]["acc7"] == printed["acc7"]
    assert card["real_photos"]["sets"]["set"]["framing"]["crop_margin"] == PipelineSettings(
        max_pixels=1, decode_long_side=None, workers=1).crop_margin
    assert card["real_photos"]["sets"]["set"]["precision"] == components.classifier().precision  # as resolved here
    assert {k: v for k, v in card.items() if k != "real_photos"} == before  # nothing else on the card changes


def test_models_list_shows_the_figures_a_card_holds(tmp_path, models_dir):
    from click.testing import CliRunner

    from ferbatch.cli import cli
    from ferbatch.models import ModelRegistry

    registry = ModelRegistry(tmp_path / "models")
    shutil.copytree(models_dir, registry.root)
    version = registry.current_version()
    figures = {"n": 10, "found": 0.9, "acc7": 0.5, "sent3": 0.75, "macro_recall": 0.625}
    registry.record_on_card(version, "real_photos", {"sets": {"my_photos": figures}})
    result = CliRunner(env={"COLUMNS": "80"}).invoke(cli, ["models", "list", "--models-dir", str(registry.root)])
    assert result.exit_code == 0, result.output
    line = next(line for line in result.output.splitlines() if "my_photos" in line)
    # No confusion matrix on these figures: no bias; the score is the mean of sent3 and macro recall.
    assert version in line and line.split()[-5:] == ["0.500", "0.750", "0.625", "-", "0.688"]
    assert "score: mean of sent3 and macro recall" in result.output
    assert max(map(len, result.output.splitlines())) <= 80


def test_width_scaled_copies_keep_the_labels_and_change_only_the_width(tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    try:
        from real_photos import width_scaled
    finally:
        sys.path.pop(0)
    import cv2

    folder = labelled_set(tmp_path, {"fr_obama.jpg": "happy", "fer_no-faces.jpg": "Neutral"})
    odd = folder / "images" / "happy" / "notes.heic"
    odd.write_bytes(b"not a photo")
    with width_scaled([folder], 0.8) as (copy,):
        # what OpenCV cannot read is kept as it is, for the scoring path to report
        assert (copy / "images" / "happy" / "notes.heic").read_bytes() == b"not a photo"
        photos = load_labelled_photos(copy)
        assert photos.name == "set_width0.8" and photos.labels.tolist() == load_labelled_photos(folder).labels.tolist()
        for file in photos.files:
            before = cv2.imread(str(folder / "images" / file)).shape
            after = cv2.imread(str(copy / "images" / file)).shape
            assert after == (before[0], round(before[1] * 0.8), 3)
    assert not copy.exists()
