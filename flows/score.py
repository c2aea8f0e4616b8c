"""The `score` flow: scan folders, score new images in batches, write and commit the Parquet reports."""

from __future__ import annotations

from dataclasses import asdict

from prefect import flow, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE

from ferbatch import scoring
from ferbatch.annotate import write_annotated
from ferbatch.classifier import KerasClassifier
from ferbatch.console import progress_bar, summary_dict, summary_markdown
from ferbatch.detection import DetectorSettings, YuNetDetector, default_detector_path
from ferbatch.images import DEFAULT_MAX_PIXELS
from ferbatch.registry import ModelRegistry, default_models_dir
from ferbatch.reports import OutDirLock
from ferbatch.sentiment import SentimentMap

scan_images = task(scoring.plan_run, name="scan", cache_policy=NO_CACHE)
score_images = task(scoring.score_plan, name="score-batches", cache_policy=NO_CACHE)
write_reports = task(scoring.commit_run, name="aggregate-and-write", cache_policy=NO_CACHE)


@flow(name="score", log_prints=True)
def score(
    paths: list[str],
    out: str,
    model: str | None = None,
    models_dir: str | None = None,
    rescore: bool = False,
    batch_size: int = 256,
    detector_size: int = 1280,
    min_face: int = 20,
    score_threshold: float = 0.8,
    flip_tta: bool = False,
    include: list[str] | None = None,
    exclude: list[str] | None = None,
    sentiment_map: str | None = None,
    annotate: str | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    workers: int = 2,
    progress: bool = False,
) -> dict:
    """Score the faces in every new image under `paths` into Parquet reports under `out`."""
    registry = ModelRegistry(models_dir or default_models_dir())
    version = registry.resolve(model)
    sentiment = SentimentMap.with_overrides(sentiment_map)
    detector = YuNetDetector(
        default_detector_path(registry.root),
        DetectorSettings(input_long_side=detector_size, score_threshold=score_threshold, min_face=min_face),
    )
    settings = scoring.ScoreSettings(max_pixels=max_pixels, workers=workers)
    with OutDirLock(out):  # one run at a time per output folder, from scan to commit
        plan = scan_images(paths, out, version, detector.name, sentiment=sentiment, include=include or (),
                           exclude=exclude or (), rescore=rescore, skip_dirs=[annotate] if annotate else ())

        def load_classifier() -> KerasClassifier:
            return KerasClassifier.from_registry(registry.root, version, batch_size=batch_size, flip_tta=flip_tta)

        with progress_bar(len(plan.todo), progress) as advance:
            def on_image(scored: scoring.ScoredImage) -> None:
                if annotate and scored.prepared.faces:
                    labels = list(sentiment.label(scored.probabilities.argmax(axis=1)))
                    write_annotated(scored, labels, annotate)
                advance()

            scored = score_images(plan, detector, load_classifier, settings,
                                  extra_metadata={"flip_tta": flip_tta, "batch_size": batch_size,
                                                  "detector_settings": asdict(detector.settings)}, on_image=on_image)
        summary = summary_dict(write_reports(scored))
        create_markdown_artifact(summary_markdown(summary), key="score-summary", description="Scoring run summary")
        create_table_artifact(
            [{k: (str(v) if k == "run_date" else v) for k, v in row.items()} for row in scored.summary.aggregates],
            key="score-aggregates", description="Aggregates of this run",
        )
        return summary
