"""Score image folders into reports: plan a run, score it shard by shard, commit the reports."""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import pyarrow as pa

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
    ScanTable,
    content_matches,
    metadata_json,
    unmatched,
)
from ferbatch.reports._current import FILE_COLUMNS, CurrentBase, CurrentUpdate, changes_current, face_identity
from ferbatch.reports._current import carried_faces as current_faces
from ferbatch.scoring._annotate import annotator, check_annotations_folder
from ferbatch.scoring._classifier import EmotionClassifier
from ferbatch.scoring._detection import DetectorSettings, Face, FaceDetector
from ferbatch.scoring._images import (
    IMAGE_SUFFIXES,
    ImageError,
    ImageFile,
    as_text,
    file_id,
    normalise_roots,
    scan,
)
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


def no_images_message(roots: Sequence[str | Path]) -> str:
    """What an empty run says: where it looked and for what."""
    return (f"no images found under {', '.join(str(root) for root in roots)}; "
            f"looked for: {', '.join(sorted(IMAGE_SUFFIXES))}")


def _scan_table(roots: Sequence[str | Path], include: Sequence[str], exclude: Sequence[str],
                skip_dirs: Sequence[str | Path], follow_links: bool = False, chunk: int = 100_000) -> ScanTable:
    """Every file the scan finds, in columns (a few dozen bytes per file, not a Python object per file)."""
    root_ids: dict[Path, int] = {}
    follow, refused = bytearray(), {}
    chunks: list[pa.Table] = []
    columns: tuple[list, ...] = ([], [], [], [], [])

    def flush() -> None:
        if columns[0]:
            chunks.append(ScanTable.from_columns([], *columns).table)
            for values in columns:
                values.clear()

    keys, sizes, mtimes, root_index, relative = columns
    for row, file in enumerate(scan(roots, include, exclude, skip_dirs=skip_dirs, follow_links=follow_links)):
        follow.append(file.follow)
        if file.refused:
            refused[row] = file.refused
        keys.append(as_text(file.absolute))
        sizes.append(file.bytes)
        mtimes.append(None if file.mtime is None else (file.mtime - _EPOCH) // timedelta(microseconds=1))
        root_index.append(root_ids.setdefault(file.root, len(root_ids)))
        relative.append(os.fsencode(file.path))
        if len(keys) >= chunk:
            flush()
    flush()
    empty = ScanTable.from_columns([], [], [], [], [], []).table
    table = pa.concat_tables(chunks).combine_chunks() if chunks else empty
    return ScanTable(list(root_ids), table, follow, refused)


def _files_at(scanned: ScanTable, rows: list[int]) -> Iterator[tuple[int, ImageFile]]:
    """The scanned files at `rows` as ImageFile entries, made a slice at a time (not one per photo at once)."""
    for start in range(0, len(rows), 65536):
        some = rows[start: start + 65536]
        picked = scanned.table.take(pa.array(some, pa.int64()))
        columns = [picked.column(name).to_pylist() for name in ("bytes", "mtime", "root", "relative")]
        for row, size, mtime, root, relative in zip(some, *columns, strict=True):
            when = None if mtime is None else _EPOCH + timedelta(microseconds=mtime)
            yield row, ImageFile(scanned.roots[root], Path(os.fsdecode(relative)), size, when,
                                 follow=bool(scanned.follow[row]), refused=scanned.refused.get(row))


def _carry(sources: pa.Table, files: list[ImageFile]) -> pa.Table:
    """`sources` (current rows, one per file) with each file's own root, path, folder, size and mtime."""
    values = {"root": [f.root_text for f in files], "path": [f.path_text for f in files],
              "folder": [as_text(Path(f.folder)) if f.folder else TOP_LEVEL_FOLDER for f in files],
              "bytes": [f.bytes for f in files], "mtime": [f.mtime for f in files]}
    for name in FILE_COLUMNS:
        if name in sources.column_names:
            field = sources.schema.field(name)
            sources = sources.set_column(sources.column_names.index(name), field, pa.array(values[name], field.type))
    return sources


def _carry_faces(faces: pa.Table, sources: pa.Table, carried: pa.Table) -> pa.Table:
    """The faces of each source row, once per file it was carried to, with that file's columns."""
    if not faces.num_rows:
        return faces
    identity = face_identity(faces)
    moved = [c for c in FILE_COLUMNS if c in faces.column_names]
    mapping = pa.table({**{c: sources.column(c) for c in identity},
                        **{f"_new_{c}": carried.column(c) for c in moved}})
    joined = faces.join(mapping, keys=identity, join_type="inner")
    for c in moved:
        joined = joined.set_column(joined.column_names.index(c), faces.schema.field(c), joined.column(f"_new_{c}"))
    return joined.select(faces.column_names)


@dataclass
class ScorePlan:
    """What a run will score: the new files under the roots, the current table's change, and the run's identity."""

    run: RunContext
    store: ReportStore
    todo: list[ImageFile]
    n_found: int
    n_skipped: int
    started: float
    update: CurrentUpdate | None = None
    model_change: dict | None = None


def _model_change(base: CurrentBase, model_version: str, rescore_on_new_model: bool, rate: float | None,
                  n_todo: int) -> dict | None:
    """What a new model means for this folder, said once in the log and in the summary."""
    others = {model: n for model, n in base.models().items() if model != model_version}
    if not others:
        return None
    n_old = sum(others.values())
    seconds = n_todo / rate if rate else None
    change = {"model_version": model_version, "previous": others, "photos": n_old,
              "rescored": rescore_on_new_model, "estimated_seconds": None if seconds is None else round(seconds)}
    named = ", ".join(f"{model} ({n})" for model, n in sorted(others.items()))
    if rescore_on_new_model:
        eta = (f"about {timedelta(seconds=round(seconds))} at the last run's {rate:.1f} images/s" if seconds
               is not None else "time unknown: no earlier run measured a rate")
        log.warning("model %s is new to this folder: %d photo(s) scored by %s are scored again, %s; "
                    "score.rescore_on_new_model = false keeps their rows", model_version, n_old, named, eta)
    else:
        log.info("model %s is new to this folder: %d photo(s) keep their rows by %s "
                 "(score.rescore_on_new_model = false); new photos are scored by %s",
                 model_version, n_old, named, model_version)
    return change


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
    rescore_on_new_model: bool = True,
) -> ScorePlan:
    """Scan the roots and keep what the current table does not already hold (for this model version, unless
    `rescore_on_new_model` is off); files it holds by content at another path or mtime are carried into the
    next current table version with their own path.

    Call inside `store.open_run()`. The store's folder and `skip_dirs` are never scanned, so output
    inside an input folder is not scored next run. The check is a join in columns: the cheap fingerprint
    (absolute path, size, mtime) first, the content hash only for the files whose fingerprint differs.
    """
    started = time.perf_counter()
    now = datetime.now(UTC)
    base = store.current_base(model_version, keep_old_models=not rescore_on_new_model)
    scanned = _scan_table(roots, include, exclude, skip_dirs=[store.out_dir, *skip_dirs], follow_links=follow_links)
    n_found = scanned.table.num_rows
    rows = list(range(n_found)) if rescore else unmatched(scanned.table, base.index).to_pylist()
    by_content = not rescore and base.n_eligible > 0  # nothing scored yet: no need to read the files twice
    todo: list[tuple[int, ImageFile]] = []
    hashed: list[tuple[int, ImageFile, str]] = []
    for row, file in _files_at(scanned, rows):
        if by_content and not file.refused:  # a refused entry is never read: an error row each run
            try:
                # streamed: a large file never sits in memory for its hash
                hashed.append((row, file, file_id(file, max_bytes)))
                continue
            except ImageError:
                pass  # unreadable files are retried every run: they may be fixed by then
        todo.append((row, file))
    carried_images = carried_faces = None
    if hashed:
        matches = content_matches(base, [iid for _, _, iid in hashed])
        position = {iid: i for i, iid in enumerate(matches.column("image_id").to_pylist())}
        carried = [(file, position[iid]) for _, file, iid in hashed if iid in position]
        todo += [(row, file) for row, file, iid in hashed if iid not in position]
        if carried:
            sources = matches.take(pa.array([i for _, i in carried], pa.int64()))
            carried_images = _carry(sources, [file for file, _ in carried])
            carried_faces = _carry_faces(current_faces(base, sources), sources, carried_images)
    todo_files = [file for _, file in sorted(todo, key=lambda item: item[0])]
    n_skipped = n_found - len(todo_files)
    if n_found == 0:
        log.warning(no_images_message(roots))
    else:
        log.info("%d image(s) found, %d already scored, %d to score with model %s",
                 n_found, n_skipped, len(todo_files), model_version)
    model_change = _model_change(base, model_version, rescore_on_new_model, store.measured_rate(), len(todo_files))
    update = CurrentUpdate(base, scanned.keys, [as_text(root) for root in normalise_roots(roots)],
                           carried_images, carried_faces)
    run = RunContext(new_run_id(now), now.date(), now, model_version, detector_name, sentiment or SentimentMap())
    return ScorePlan(run, store, todo_files, n_found, n_skipped, started, update, model_change)


def require_dask_scheduler(address: str, timeout_s: float = 5.0) -> None:
    """Fail in one line when nothing listens at a tcp:// or tls:// Dask scheduler address (else the Dask client
    retries for most of a minute and the run ends in tracebacks). Other schemes are left to Dask."""
    import socket

    scheme, separator, rest = address.partition("://")
    if not separator:
        scheme, rest = "tcp", address
    if scheme not in ("tcp", "tls"):
        return
    host, _, port = rest.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s):
            return
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    raise FerbatchError(f"--dask-address {address}: no Dask scheduler answers there ({reason}); start one "
                        "(`dask scheduler`) or leave score.dask_address unset for a local cluster")


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
    """Whether a run of `settings` would commit anything (new images to score, or a change to the current table:
    photos deleted or moved), found without writing any report file.

    The `score` command asks before it starts Prefect's server, so a run with nothing to do costs
    seconds. It fails as the run would (missing folder, another run holding the output folder). An output
    folder with no committed run is not created or locked, and the scan stops at the first image; one with
    runs is planned under its lock, after the tidying a run does, exactly as the run would plan it.
    """
    _require_inputs(settings)
    store = ReportStore(settings.out)
    store.check_free()
    store.check_writable()
    if rescore or not store.has_committed_runs():  # every image found is new
        files = scan(settings.folders, settings.include, settings.exclude, skip_dirs=[store.out_dir, *skip_dirs],
                     follow_links=settings.follow_links)
        return RunPreview(1, True) if next(iter(files), None) is not None else RunPreview(0, False)
    with store.open_run():
        # Fingerprints only: a file whose (path, size, mtime) the current table lacks is work for the run (new,
        # changed or moved), which reads it once; hashing it here as well would read every new photo twice.
        base = store.current_base(model_version, keep_old_models=not settings.rescore_on_new_model)
        scanned = _scan_table(settings.folders, settings.include, settings.exclude,
                              skip_dirs=[store.out_dir, *skip_dirs], follow_links=settings.follow_links)
        n_found = scanned.table.num_rows
        if len(unmatched(scanned.table, base.index)):
            return RunPreview(n_found, True)
        update = CurrentUpdate(base, scanned.keys, [as_text(root) for root in normalise_roots(settings.folders)])
        return RunPreview(n_found, changes_current(update))


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
                         batch_size=settings.batch_size, precision=settings.precision,
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
        moves = writer.close(tables=("images", "faces"))  # readers find faces/ even before the first face
        summary.stage_seconds["write"] += time.perf_counter() - started
    except BaseException:
        writer.abort()
        raise
    return ShardResult(shard.index, moves, aggregator, summary)


def commit_run(plan: ScorePlan, shards: Sequence[ShardResult], metadata: dict[str, str]) -> RunSummary:
    """Write the aggregates of all shards, then make every file of the run visible together, with the current
    table's next version."""
    run = plan.run
    summary = RunSummary(run.run_id, run.run_date, plan.store.out_dir, run.model_version,
                         n_found=plan.n_found, n_skipped=plan.n_skipped, model_change=plan.model_change)
    aggregator = Aggregator()
    for shard in sorted(shards, key=lambda s: s.index):
        summary.merge(shard.summary)
        aggregator.merge(shard.aggregator)
    moves = [move for shard in shards for move in shard.moves]
    if shards:  # a run that scored nothing writes no history parts and no all-zero aggregates row
        seconds = time.perf_counter() - plan.started
        # the rate a later run's estimate uses (a new model: how long scoring every photo again takes)
        measured = {**metadata, **metadata_json(images_scored=summary.n_scored, seconds=round(seconds, 3))}
        writer = plan.store.writer(run.run_id, run.run_date, measured)
        try:
            summary.aggregates = aggregator.rows(run.run_id, run.run_date, run.model_version)
            writer.write("aggregates", summary.aggregates)
            moves += writer.close(tables=("aggregates",))
        except BaseException:
            writer.abort()
            plan.store.abort(moves)
            raise
    # From here on the files are complete: a failure mid-commit is undone, a kill leaves the manifest for the
    # next run to finish. A run with nothing new may still change the current table (photos deleted or moved).
    finals = plan.store.commit(run.run_id, moves, plan.update, run.run_date, metadata)
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
    defer_signals: Callable[[], AbstractContextManager[object]] = contextlib.nullcontext,
) -> RunSummary:
    """Score the new images under `settings.folders` into reports under `settings.out`.

    The one path through a scoring run: lock the output folder, plan, score the shards through
    `map_shards` (the `score` flow passes one built on its task runner), commit. If any shard fails,
    no shard's files remain. `pipeline` replaces the pipeline internals derived from `settings`;
    `defer_signals` holds signals back during the commit (see `ReportStore`; the `score` flow passes the
    process's own).
    """
    pipeline = pipeline or PipelineSettings.from_settings(settings)
    _require_inputs(settings)
    if annotate:  # before the lock: a refused folder leaves nothing behind
        check_annotations_folder(annotate, settings.folders, settings.out)
    with ReportStore(settings.out, defer_signals).open_run() as store:
        plan = plan_run(settings.folders, store, components.model_version, components.detector().name,
                        sentiment=sentiment, include=settings.include, exclude=settings.exclude, rescore=rescore,
                        skip_dirs=[annotate] if annotate else (), max_bytes=settings.max_bytes,
                        follow_links=settings.follow_links, rescore_on_new_model=settings.rescore_on_new_model)
        metadata = run_metadata(plan.run, settings, pipeline)
        shards = shard_plan(plan, settings.shard_size, metadata)
        outcomes = map_shards(ShardScorer(components, pipeline, annotate, on_image), shards) if shards else []
        results = [outcome for outcome in outcomes if isinstance(outcome, ShardResult)]
        failures = [outcome for outcome in outcomes if not isinstance(outcome, ShardResult)]
        if failures or len(results) < len(shards):
            store.abort([move for result in results for move in result.moves])
            raise failures[0] if failures else RuntimeError("the shard mapper returned too few results")
        return commit_run(plan, results, metadata)
