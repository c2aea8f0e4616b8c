"""Score image folders into reports: plan a run, score it shard by shard, commit the reports."""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from ferbatch.classes import CLASS_NAMES
from ferbatch.config import DEFAULT_MAX_BYTES, ScoreSettings
from ferbatch.errors import FerbatchError
from ferbatch.reports import (
    PROBABILITY_COLUMNS,
    TOP_LEVEL_FOLDER,
    Aggregator,
    FaceRow,
    ImageRow,
    ReportStore,
    RunSummary,
    ScoredIndex,
    metadata_json,
)
from ferbatch.scoring._annotate import annotator
from ferbatch.scoring._classifier import EmotionClassifier
from ferbatch.scoring._detection import DetectorSettings, Face, FaceDetector
from ferbatch.scoring._images import IMAGE_SUFFIXES, ImageError, ImageFile, as_text, file_id, scan
from ferbatch.scoring._pipeline import PipelineSettings, ScoredImage, image_probabilities, score_images
from ferbatch.scoring._sentiment import SentimentMap

log = logging.getLogger(__name__)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass
class RunContext:
    run_id: str
    run_date: date
    scored_at: datetime
    model_version: str
    detector: str
    sentiment: SentimentMap


def face_verdicts(probabilities: np.ndarray, sentiment: SentimentMap) -> list[dict]:
    """Per face (a row of `probabilities`): its top emotion, that emotion's sentiment and the sentiment score."""
    top = probabilities.argmax(axis=1)
    scores, labels = sentiment.score(probabilities), sentiment.label(top)
    return [{"emotion": CLASS_NAMES[top[i]], "sentiment": labels[i], "sentiment_score": float(scores[i])}
            for i in range(len(probabilities))]


def image_verdict(faces: Sequence[Face], probabilities: np.ndarray, sentiment: SentimentMap) -> dict:
    """An image's emotion, sentiment, score and p_* columns, from the area-weighted mean of its faces."""
    mean = image_probabilities(faces, probabilities)
    emotion = int(mean.argmax())
    return {"emotion": CLASS_NAMES[emotion], "sentiment": sentiment.label(np.array([emotion]))[0],
            "sentiment_score": float(sentiment.score(mean[None])[0]), **_probabilities(mean)}


def rows_for(scored: ScoredImage, run: RunContext) -> tuple[ImageRow, list[FaceRow]]:
    """The images-table row and the faces-table rows of one scored image."""
    item, file = scored.prepared, scored.prepared.file
    status = "error" if item.error else ("ok" if item.faces else "no_face")
    faces: list[FaceRow] = []
    verdict: dict = {"emotion": None, "sentiment": None, "sentiment_score": None,
                     **dict.fromkeys(PROBABILITY_COLUMNS)}
    folder = as_text(Path(file.folder)) if file.folder else TOP_LEVEL_FOLDER
    if status == "ok":
        for index, (face, probabilities, face_verdict) in enumerate(zip(
                item.faces, scored.probabilities, face_verdicts(scored.probabilities, run.sentiment), strict=True)):
            faces.append(FaceRow(
                run_id=run.run_id, run_date=run.run_date, image_id=item.image_id, root=file.root_text,
                path=file.path_text, folder=folder, taken_at=item.taken_at, face_index=index,
                x=round(face.x), y=round(face.y), w=round(face.w), h=round(face.h),
                det_score=face.score, **_probabilities(probabilities), **face_verdict,
                model_version=run.model_version,
            ))
        verdict = image_verdict(item.faces, scored.probabilities, run.sentiment)
    image = ImageRow(
        run_id=run.run_id, run_date=run.run_date, scored_at=run.scored_at, root=file.root_text,
        path=file.path_text, folder=folder, image_id=item.image_id,
        bytes=file.bytes, mtime=file.mtime, width=item.width, height=item.height, taken_at=item.taken_at,
        status=status, error=item.error, n_faces=len(item.faces), **verdict, model_version=run.model_version,
        detector=run.detector,
    )
    return image, faces


def _probabilities(values: np.ndarray) -> dict[str, float]:
    return {column: float(p) for column, p in zip(PROBABILITY_COLUMNS, values, strict=True)}


def new_run_id(now: datetime) -> str:
    """Sorts by time; the random tail keeps two runs started in the same second apart."""
    return f"{now.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(3)}"


def _is_new(file: ImageFile, index: ScoredIndex, max_bytes: int = DEFAULT_MAX_BYTES) -> bool:
    """The cheap fingerprint (absolute path, size, mtime) first; the content hash only when it differs.

    The roots are absolute and resolved (`normalise_roots`), so however a folder was named on the
    command line, the same file has the same fingerprint. The content hash skips a file only when that
    content was scored (an error row's content does not count) and the file's own rows, if any, hold that
    same content: a file whose content changed is scored again, whatever another file's rows say."""
    if not index.image_ids or file.refused:
        return True  # nothing scored yet (no need to read twice), or an entry never read: an error row each run
    absolute = as_text(file.absolute)
    if file.bytes is not None and file.mtime is not None:
        mtime_us = (file.mtime - _EPOCH) // timedelta(microseconds=1)  # exact, as Parquet stores it
        if (absolute, file.bytes, mtime_us) in index.fingerprints:
            return False
    try:
        content = file_id(file, max_bytes)  # streamed: a large file never sits in memory for its hash
    except ImageError:
        return True  # unreadable files are retried every run: they may be fixed by then
    own = index.contents.get(absolute)
    return content not in index.scored_ids or (own is not None and content != own)


def no_images_message(roots: Sequence[str | Path]) -> str:
    """What an empty run says: where it looked and for what."""
    return (f"no images found under {', '.join(str(root) for root in roots)}; "
            f"looked for: {', '.join(sorted(IMAGE_SUFFIXES))}")


@dataclass
class ScorePlan:
    """What a run will score: the new files under the roots, and the run's identity."""

    run: RunContext
    store: ReportStore
    todo: list[ImageFile]
    n_found: int
    n_skipped: int
    started: float


def plan_run(
    roots: Sequence[str | Path],
    store: ReportStore,
    model_version: str,
    detector_name: str,
    *,
    sentiment: SentimentMap | None = None,
    include: Sequence[str] = (),
    exclude: Sequence[str] = (),
    rescore: bool = False,
    skip_dirs: Sequence[str | Path] = (),
    max_bytes: int = DEFAULT_MAX_BYTES,
    follow_links: bool = False,
) -> ScorePlan:
    """Scan the roots and keep what `out_dir` does not already hold for this model version.

    Call inside `store.open_run()`. The store's folder and `skip_dirs` are never scanned, so output
    inside an input folder is not scored next run.
    """
    started = time.perf_counter()
    now = datetime.now(UTC)
    index = ScoredIndex(frozenset(), frozenset()) if rescore else store.scored_index(model_version)
    todo: list[ImageFile] = []  # file entries only: bytes are read again when scored, keeping memory flat
    n_found = 0
    for file in scan(roots, include, exclude, skip_dirs=[store.out_dir, *skip_dirs], follow_links=follow_links):
        n_found += 1
        if _is_new(file, index, max_bytes):
            todo.append(file)
    if n_found == 0:
        log.warning(no_images_message(roots))
    else:
        log.info("%d image(s) found, %d already scored with model %s, %d to score",
                 n_found, n_found - len(todo), model_version, len(todo))
    run = RunContext(new_run_id(now), now.date(), now, model_version, detector_name, sentiment or SentimentMap())
    return ScorePlan(run, store, todo, n_found, n_found - len(todo), started)


def _require_inputs(settings: ScoreSettings) -> None:
    # A path that is not there at all stops the run (a broken symlink named directly still becomes an error
    # row): a container deployment whose photo volume was not mounted must fail, not report one error row.
    missing = [str(path) for path in settings.folders if not os.path.lexists(path)]
    if missing:
        raise FerbatchError(f"{', '.join(missing)}: no such file or folder")


@dataclass(frozen=True)
class RunPreview:
    """What a run would find, known before it starts: `has_new` is False when it would score nothing."""

    n_found: int  # every image file found when nothing is new; else those seen up to the first new one
    has_new: bool


def preview_run(
    settings: ScoreSettings,
    model_version: str,
    *,
    rescore: bool = False,
    skip_dirs: Sequence[str | Path] = (),
) -> RunPreview:
    """Whether a run of `settings` would score anything, found without writing any report file.

    The `score` command asks before it starts Prefect's server, so a run with nothing to do costs
    seconds. It fails as the run would (missing folder, another run holding the output folder) and
    stops scanning at the first new image. An output folder with no committed run is not created or
    locked; one with runs is read under its lock, after the tidying a run does.
    """
    _require_inputs(settings)
    store = ReportStore(settings.out)
    store.check_free()
    files = scan(settings.folders, settings.include, settings.exclude, skip_dirs=[store.out_dir, *skip_dirs],
                 follow_links=settings.follow_links)
    if rescore or not store.has_committed_runs():  # every image found is new
        return RunPreview(1, True) if next(iter(files), None) is not None else RunPreview(0, False)
    with store.open_run():
        index = store.scored_index(model_version)
        n_found = 0
        for file in files:
            n_found += 1
            if _is_new(file, index, int(settings.max_bytes)):
                return RunPreview(n_found, True)
    return RunPreview(n_found, False)


def skipped_run_summary(settings: ScoreSettings, preview: RunPreview, model_version: str) -> RunSummary:
    """The summary of a run that had nothing to score and so did not start (what the run would have said)."""
    if preview.has_new:
        raise ValueError("the run has images to score")
    now = datetime.now(UTC)
    if preview.n_found == 0:
        log.warning(no_images_message(settings.folders))
    else:
        log.info("%d image(s) found, all already scored with model %s", preview.n_found, model_version)
    return RunSummary(new_run_id(now), now.date(), settings.out, model_version, n_found=preview.n_found,
                      n_skipped=preview.n_found)


@dataclass(frozen=True)
class Shard:
    """A slice of a plan's files that one task scores into its own Parquet parts."""

    run: RunContext
    store: ReportStore
    index: int
    files: list[ImageFile]
    metadata: dict[str, str]

    @property
    def name(self) -> str:
        return f"s{self.index:04d}"


def shard_plan(plan: ScorePlan, shard_size: int, metadata: dict[str, str]) -> list[Shard]:
    """Split the files to score into shards of at most `shard_size` images (none when nothing is new)."""
    if shard_size < 1:
        raise ValueError("shard_size must be at least 1")
    return [Shard(plan.run, plan.store, i, plan.todo[start : start + shard_size], metadata)
            for i, start in enumerate(range(0, len(plan.todo), shard_size))]


def run_metadata(run: RunContext, settings: ScoreSettings, pipeline: PipelineSettings) -> dict[str, str]:
    """Key-value metadata stored in every Parquet file of the run."""
    return metadata_json(run_id=run.run_id, model_version=run.model_version, detector=run.detector,
                         sentiment_map=run.sentiment.mapping, settings=asdict(pipeline), flip_tta=settings.flip_tta,
                         batch_size=settings.batch_size,
                         detector_settings=asdict(DetectorSettings.from_settings(settings)), runner=settings.runner)


@dataclass
class ShardResult:
    """A scored shard: its finished but uncommitted files, and its counts for the run summary."""

    index: int
    moves: list[tuple[str, str]]  # (tmp, final) paths, committed by commit_run
    aggregator: Aggregator
    summary: RunSummary


def score_shard(
    shard: Shard,
    detector: FaceDetector,
    load_classifier: Callable[[], EmotionClassifier],
    settings: PipelineSettings,
    on_image: Callable[[ScoredImage], None] | None = None,
    on_prepared: Callable[[], None] | None = None,
) -> ShardResult:
    """Score one shard into uncommitted `images` and `faces` parts; nothing becomes visible yet.

    `on_prepared` is called as each image is decoded and detected (progress), `on_image` as it is scored.
    """
    run = shard.run
    summary = RunSummary(run.run_id, run.run_date, shard.store.out_dir, run.model_version)
    writer = shard.store.writer(run.run_id, run.run_date, shard.metadata, part=shard.name)
    aggregator = Aggregator()
    try:
        for scored in score_images(shard.files, detector, load_classifier, settings, on_prepared):
            started = time.perf_counter()
            image_row, face_rows = rows_for(scored, run)
            writer.write("images", [image_row])
            writer.write("faces", face_rows)
            aggregator.add(image_row)
            summary.add(image_row)
            summary.stage_seconds.update(scored.prepared.seconds)
            summary.stage_seconds["write"] += time.perf_counter() - started
            if on_image:
                on_image(scored)
        started = time.perf_counter()
        moves = writer.close(tables=("images",))
        summary.stage_seconds["write"] += time.perf_counter() - started
    except BaseException:
        writer.abort()
        raise
    return ShardResult(shard.index, moves, aggregator, summary)


def commit_run(plan: ScorePlan, shards: Sequence[ShardResult], metadata: dict[str, str]) -> RunSummary:
    """Write the aggregates of all shards, then make every file of the run visible together."""
    run = plan.run
    summary = RunSummary(run.run_id, run.run_date, plan.store.out_dir, run.model_version,
                         n_found=plan.n_found, n_skipped=plan.n_skipped)
    aggregator = Aggregator()
    for shard in sorted(shards, key=lambda s: s.index):
        summary.merge(shard.summary)
        aggregator.merge(shard.aggregator)
    if not shards:  # nothing scored: no data parts and no all-zero aggregates row (the flow still records it)
        summary.seconds = time.perf_counter() - plan.started
        return summary
    moves = [move for shard in shards for move in shard.moves]
    writer = plan.store.writer(run.run_id, run.run_date, metadata)
    try:
        summary.aggregates = aggregator.rows(run.run_id, run.run_date, run.model_version)
        writer.write("aggregates", summary.aggregates)
        moves += writer.close(tables=("aggregates",))
    except BaseException:
        writer.abort()
        plan.store.abort(moves)
        raise
    # From here on the files are complete: a failure mid-commit leaves the manifest for the next run to finish.
    finals = plan.store.commit(run.run_id, moves)
    summary.files = {}
    for path in finals:
        summary.files.setdefault(path.parent.parent.name, []).append(path)
    summary.seconds = time.perf_counter() - plan.started
    return summary


@runtime_checkable
class ScoringComponents(Protocol):
    """What a run builds its detector and classifier from, once per process (see `Components`)."""

    model_version: str

    def detector(self) -> FaceDetector: ...

    def classifier(self) -> EmotionClassifier: ...


@dataclass(frozen=True)
class ShardScorer:
    """Scores one shard wherever a shard mapper runs it (picklable when `on_image` is None)."""

    components: ScoringComponents
    settings: PipelineSettings
    annotate: str | None = None  # folder for annotated copies of the images with faces
    on_image: Callable[[ScoredImage], None] | None = None
    on_prepared: Callable[[], None] | None = None  # per image decoded and detected: progress

    def __call__(self, shard: Shard) -> ShardResult:
        draw = annotator(self.annotate, shard.run.sentiment) if self.annotate else None

        def after_image(scored: ScoredImage) -> None:
            if draw:
                draw(scored)
            if self.on_image:
                self.on_image(scored)

        return score_shard(shard, self.components.detector(), self.components.classifier, self.settings,
                           after_image if draw or self.on_image else None, self.on_prepared)


# Runs the scorer over the shards; returns each shard's result or the exception it raised, in shard order.
# A mapper may stop at the first failure; run_scoring drops the files of every shard when one failed.
ShardMapper = Callable[[ShardScorer, list[Shard]], list["ShardResult | BaseException"]]


def map_sequential(scorer: ShardScorer, shards: list[Shard]) -> list[ShardResult | BaseException]:
    """One shard after another in this process, stopping at the first failure."""
    outcomes: list[ShardResult | BaseException] = []
    for shard in shards:
        try:
            outcomes.append(scorer(shard))
        except BaseException as exc:
            outcomes.append(exc)
            break
    return outcomes


def run_scoring(
    settings: ScoreSettings,
    components: ScoringComponents,
    *,
    sentiment: SentimentMap | None = None,
    rescore: bool = False,
    annotate: str | None = None,
    on_image: Callable[[ScoredImage], None] | None = None,
    map_shards: ShardMapper = map_sequential,
    pipeline: PipelineSettings | None = None,
) -> RunSummary:
    """Score the new images under `settings.folders` into reports under `settings.out`.

    The one path through a scoring run: lock the output folder, plan, score the shards through
    `map_shards` (the `score` flow passes one built on its task runner), commit. If any shard fails,
    no shard's files remain. `pipeline` replaces the pipeline internals derived from `settings`.
    """
    pipeline = pipeline or PipelineSettings.from_settings(settings)
    _require_inputs(settings)
    with ReportStore(settings.out).open_run() as store:
        plan = plan_run(settings.folders, store, components.model_version, components.detector().name,
                        sentiment=sentiment, include=settings.include, exclude=settings.exclude, rescore=rescore,
                        skip_dirs=[annotate] if annotate else (), max_bytes=settings.max_bytes,
                        follow_links=settings.follow_links)
        metadata = run_metadata(plan.run, settings, pipeline)
        shards = shard_plan(plan, settings.shard_size, metadata)
        outcomes = map_shards(ShardScorer(components, pipeline, annotate, on_image), shards) if shards else []
        results = [outcome for outcome in outcomes if isinstance(outcome, ShardResult)]
        failures = [outcome for outcome in outcomes if not isinstance(outcome, ShardResult)]
        if failures or len(results) < len(shards):
            store.abort([move for result in results for move in result.moves])
            raise failures[0] if failures else RuntimeError("the shard mapper returned too few results")
        return commit_run(plan, results, metadata)
