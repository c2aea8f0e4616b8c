"""What a person sees: the progress bar, the end-of-run summary and report tables."""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import timedelta

from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from ferbatch.classes import CLASS_NAMES
from ferbatch.models import NEGATIVE_BIAS_CAP, in_the_wild, negative_bias, real_photo_score
from ferbatch.reports import TOP_LEVEL_FOLDER
from ferbatch.safe.text import csv_cell, markdown_cell, printable

WRITING_REPORTS = "writing reports"  # the bar's label once every image is counted


class ScoringProgress:
    """Counts scored images against a total, with rate and ETA from `clock`.

    On a terminal (`terminal=True`) it draws a rich bar on stderr, labelled 'writing reports' once every image
    is counted; log lines printed meanwhile (ferbatch's and Prefect's) go above it. Elsewhere it logs a plain
    line (count, rate, ETA) at most every `interval` seconds and once at the end, so a log file shows a long run
    moving.
    """

    def __init__(self, total: int, *, terminal: bool, clock: Callable[[], float] = time.monotonic,
                 interval: float = 30.0, logger: logging.Logger | None = None) -> None:
        self.total, self.done = total, 0
        self.terminal, self.clock, self.interval = terminal, clock, interval
        self.log = logger or logging.getLogger("ferbatch.progress")
        self._started = self._last_line = 0.0
        self._bar: Progress | None = None
        self._task = None
        self._lock = threading.Lock()
        self._stack = ExitStack()

    def rate(self) -> float | None:
        elapsed = self.clock() - self._started
        return self.done / elapsed if self.done and elapsed > 0 else None

    def line(self) -> str:
        rate = self.rate()
        eta = "-" if not rate else str(timedelta(seconds=round((self.total - self.done) / rate)))
        return (f"scored {self.done}/{self.total} image(s), "
                f"{'-' if rate is None else f'{rate:.1f}'} images/s, ETA {eta}")

    def __enter__(self) -> ScoringProgress:
        self._started = self._last_line = self.clock()
        if self.terminal and self.total:
            columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                       TextColumn("{task.fields[rate]}"), TextColumn("ETA"), TimeRemainingColumn())
            self._bar = Progress(*columns, console=Console(file=sys.stderr), transient=True, redirect_stderr=True,
                                 redirect_stdout=True)
            self._stack.enter_context(self._bar)
            self._stack.enter_context(_log_handlers_printing_on(self._bar.console))
            self._task = self._bar.add_task("scoring", total=self.total, rate="")
        return self

    def advance(self, n: int = 1) -> None:
        with self._lock:
            self.done += n
            if self._bar is not None:
                rate = self.rate()
                # Every image counted: its chunk is still classified, then the parts and the aggregates are written
                # and committed, which takes seconds; the bar says so instead of sitting at N/N.
                finishing = {"description": WRITING_REPORTS} if self.done >= self.total else {}
                self._bar.update(self._task, advance=n, rate="" if rate is None else f"{rate:.1f} img/s",
                                 **finishing)
            elif self.total and self.clock() - self._last_line >= self.interval:
                self._last_line = self.clock()
                self.log.info(self.line())

    def __exit__(self, *exc_info: object) -> None:
        self._stack.close()
        if self._bar is None and self.total and self.done:
            self.log.info(self.line())


@contextmanager
def _log_handlers_printing_on(console: Console) -> Iterator[None]:
    """Point Prefect's console handlers at the bar's console, so their lines print above the bar."""
    swapped = []
    for logger in [logging.getLogger(), *[v for v in logging.root.manager.loggerDict.values()
                                          if isinstance(v, logging.Logger)]]:
        for handler in logger.handlers:
            if isinstance(getattr(handler, "console", None), Console):
                swapped.append((handler, handler.console))
                handler.console = console
    try:
        yield
    finally:
        for handler, original in swapped:
            handler.console = original


def _console() -> Console:
    """Rich's console: the terminal's width, or $COLUMNS when set; 200 columns for a file or pipe otherwise, so
    long folder names stay on one line there."""
    console = Console()
    return console if console.is_terminal or os.environ.get("COLUMNS", "").isdigit() else Console(width=200)


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def summary_markdown(summary: dict) -> str:
    lines = [
        f"## Scoring run {summary['run_id']}",
        "",
        "| images found | already scored | scored | ok | no face | error | faces | positive | negative | neutral |",
        "|---|---|---|---|---|---|---|---|---|---|",
        f"| {summary['images_found']} | {summary['already_scored']} | {summary['scored']} | {summary['ok']} "
        f"| {summary['no_face']} | {summary['error']} | {summary['faces']} | {_share(summary['share_positive'])} "
        f"| {_share(summary['share_negative'])} | {_share(summary['share_neutral'])} |",
        "",
        f"model {summary['model_version']}; {summary['seconds']} s, {summary['images_per_second']} images/s",
    ]
    if summary.get("model_change"):
        lines += ["", *model_change_lines(summary["model_change"])]
    if summary["top_errors"]:
        lines += ["", "Top error reasons:",
                  *[f"- {markdown_cell(reason)}: {n}" for reason, n in summary["top_errors"].items()]]
    return "\n".join(lines)


# The report's views: each fits 80 columns; headers say what a value is (a share of images with a face,
# or a count of images whose top emotion it is), so no two columns share a header.
_GROUP_COLUMNS = (("group_by", "by"), ("group_value", "value"))
AGGREGATE_VIEWS: dict[str, tuple[tuple[str, str], ...]] = {
    "images": (("n_images", "images"), ("n_ok", "with face"), ("n_no_face", "no face"), ("n_error", "error"),
               ("n_faces", "faces")),
    "sentiment (share of images with a face)": (
        ("share_positive", "positive %"), ("share_negative", "negative %"), ("share_neutral", "neutral %"),
        ("mean_sentiment_score", "mean score")),
    "top emotion (images with a face)": tuple((f"n_{c.lower()}", c) for c in CLASS_NAMES),
}
AGGREGATE_FORMATS = ("table", "csv", "json", "markdown")


def _table(title: str | None, headers: list[str], first_columns: int = 0) -> Table:
    """A compact table (two spaces between columns): label columns fold long values instead of cutting them with
    `…`; a header's line break shares its width between two lines."""
    table = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False, padding=(0, 1),
                  collapse_padding=True)
    for i, header in enumerate(headers):
        if i < first_columns:
            table.add_column(header, overflow="fold")
        else:
            table.add_column(header, justify="right", no_wrap=True, min_width=max(map(len, header.split("\n"))))
    return table


def _cell(column: str, value: object) -> str:
    if column.startswith("share_"):
        return _share(value)  # type: ignore[arg-type]
    if isinstance(value, float):
        return f"{value:+.3f}"
    if column == "group_value" and value == "":
        return TOP_LEVEL_FOLDER  # runs before the label wrote ''

    return "-" if value is None else str(value)


def model_change_lines(change: dict | None) -> list[str]:
    """What a model new to the folder meant for this run, in short lines (80 columns)."""
    if not change:
        return []
    lines = [f"new model {change['model_version']}; photos scored by older models:",
             *[f"  {model}: {n}" for model, n in sorted(change["previous"].items())]]
    if not change["rescored"]:
        return [*lines, "  they keep their rows (score.rescore_on_new_model = false)"]
    seconds = change.get("estimated_seconds")
    estimate = (f"estimated {timedelta(seconds=seconds)} at the last run's rate" if seconds is not None
                else "no earlier run measured a rate to estimate the time")
    return [*lines, "  scored again by this run", f"  ({estimate})"]


def print_summary(summary: dict, console: Console | None = None) -> None:
    console = console or _console()
    console.print(f"ferbatch run {summary['run_id']} (model {summary['model_version']})")
    images = _table("images", ["found", "already\nscored", "scored", "with\nface", "no\nface", "error", "faces",
                               "images/s"])
    images.add_row(*map(str, (summary["images_found"], summary["already_scored"], summary["scored"], summary["ok"],
                              summary["no_face"], summary["error"], summary["faces"])),
                   f"{summary['images_per_second']:.1f}")
    console.print(images)
    if summary["scored"]:
        sentiment = _table("sentiment, % of images with a face", ["positive %", "negative %", "neutral %"])
        sentiment.add_row(_share(summary["share_positive"]), _share(summary["share_negative"]),
                          _share(summary["share_neutral"]))
        console.print(sentiment)
    for reason, n in summary["top_errors"].items():  # reasons may quote names: shown, never markup or escapes
        console.print(Text(f"  error: {printable(reason)} ({n})"))
    if not summary["scored"]:
        console.print("nothing new to score: no data files written" if summary["images_found"]
                      else "no images found: no data files written")
    for line in model_change_lines(summary.get("model_change")):
        console.print(line, highlight=False)
    console.print(Text(f"reports in {printable(str(summary['out_dir']))}"))


def format_summary(summary: dict, fmt: str) -> str:
    """A run summary as json, markdown, or csv (one header line, one row; error reasons joined)."""
    if fmt == "json":
        return json.dumps(summary, indent=2, default=str)
    if fmt == "markdown":
        return summary_markdown(summary)
    if fmt == "csv":
        flat = {k: ("; ".join(f"{r}: {n}" for r, n in v.items()) if isinstance(v, dict) else v)
                for k, v in summary.items() if not isinstance(v, list)}
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(flat)
        writer.writerow([_csv(v) for v in flat.values()])
        return out.getvalue().rstrip("\n")
    raise ValueError(f"unknown format {fmt!r} (use {', '.join(AGGREGATE_FORMATS)})")


def aggregate_views(rows: list[dict]) -> list[Table]:
    """The report's tables, one per view, each narrow enough for an 80-column terminal."""
    tables = []
    for title, columns in AGGREGATE_VIEWS.items():
        table = _table(title, [h for _, h in (*_GROUP_COLUMNS, *columns)], first_columns=len(_GROUP_COLUMNS))
        table.columns[0].no_wrap = True  # all, folder, taken_date: never folded; the value column folds
        for row in rows:  # Text, not markup: a folder named '[/x]' is shown as named
            table.add_row(*[Text(printable(_cell(c, row.get(c)))) for c, _ in (*_GROUP_COLUMNS, *columns)])
        tables.append(table)
    return tables


def _report_columns(rows: list[dict]) -> list[str]:
    return [c for c in rows[0] if c not in ("run_id", "run_date", "model_version")]


def format_aggregates(rows: list[dict], fmt: str) -> str:
    """The rows as csv, json or markdown: every column, full names, top-level folders labelled."""
    if fmt == "json":
        return json.dumps(rows, indent=2, default=str)
    columns = ["run_id", "run_date", *_report_columns(rows), "model_version"]
    if fmt == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        for row in rows:
            writer.writerow([_csv(row.get(c)) for c in columns])
        return out.getvalue().rstrip("\n")
    if fmt == "markdown":
        lines = [f"## {_report_title(rows[0])}"]
        for title, view in AGGREGATE_VIEWS.items():
            names = [*_GROUP_COLUMNS, *view]
            lines += ["", f"### {title}", "", "| " + " | ".join(h for _, h in names) + " |",
                      "|" + "|".join("---" if i < 2 else "---:" for i in range(len(names))) + "|"]
            lines += ["| " + " | ".join(markdown_cell(_cell(c, row.get(c))) for c, _ in names) + " |" for row in rows]
        return "\n".join(lines)
    raise ValueError(f"unknown format {fmt!r} (use {', '.join(AGGREGATE_FORMATS)})")


def _csv(value: object) -> object:
    """A CSV cell: names shown with control characters escaped, never as a spreadsheet formula."""
    if value is None:
        return ""
    return value if isinstance(value, int | float) else csv_cell(printable(str(value)))


def _report_title(run: dict) -> str:
    if run["run_id"] == "current":  # the current table: every photo once, by its newest scoring (first row: all)
        return (f"current table: {run['n_images']} photo(s), newest run {run['run_date']}, "
                f"model {run['model_version']}")
    return f"run {run['run_id']} ({run['run_date']}, model {run['model_version']})"


def print_aggregates(rows: list[dict], console: Console | None = None, fmt: str = "table") -> None:
    if fmt != "table":
        (console.file if console else sys.stdout).write(format_aggregates(rows, fmt) + "\n")
        return
    console = console or _console()
    run = rows[0]
    console.print(_report_title(run))
    for table in aggregate_views(rows):
        console.print(table)


# What each committed recipe is for, where ferbatch.training does not say it itself (a `description`
# attribute on the recipe wins). Costs are the ones measured on this project's 2-core machine.
PRESET_NOTES = {
    "smoke": "a tiny net for 2 epochs: checks the pipeline end to end in about a minute",
    "default": "fer_cnn (0.6M parameters), plateau schedule; the model shipped before the ensemble",
    "vgg": "7M-parameter VGG, cosine, stronger augmentation; 3-6 min per epoch on 2 cores",
    "fer_cnn_cosine": "vgg's schedule on fer_cnn; about 2 min per epoch on 2 cores, 1 point below default",
    "crop_cnn": "random 40x40 crops, SGD Nesterov + cosine, XLA; trained in resumed chunks (--stop-after)",
    "crop_cnn_100": "crop_cnn with a 100-epoch cosine: about 1 PublicTest point more per network",
    "crop_cnn_100_x3": "the shipped model: three crop_cnn_100 networks averaged, one model.keras",
    "crop_cnn_100_x4": "four crop_cnn_100 networks over the centre crop and its mirror",
    "crop_cnn_x5": "five 60-epoch crop_cnn networks over the centre crop and its mirror",
    "crop_cnn_distil": "one crop_cnn towards the ensemble's and the FER+ crowd's votes (--init-from a member)",
    "crop_cnn_votes": "crop_cnn_distil without the teacher: the FER+ vote distributions alone",
    "crop_cnn_distil_t75": "8 epochs of crop_cnn_distil with 3/4 of the target from the teacher",
    "crop_cnn_wild": "crop_cnn_distil_t75 beside labelled faces in the wild (--extra-folder): each twice an "
                     "epoch, 3/4 of its target its own label",
    "crop_cnn_wild_consistent": "6 epochs: FER2013 faces wholly the teacher's on every crop, faces in the wild "
                                "(--extra-folder) half their own label",
    "crop_cnn_wild_polish": "4 more epochs of crop_cnn_wild_consistent at a third of its rate (--init-from "
                            "a finished run)",
    "crop_cnn_wide_wild": "crop_cnn_wild_consistent on a 384-filter last stage, widened from a finished "
                          "run (--init-from it)",
    "crop_cnn_distil_t75_cw": "crop_cnn_distil_t75 with inverse-frequency class weights",
    "crop_cnn_slim_distil": "0.65M-parameter crop_cnn_slim from scratch towards 3/4 ensemble + 1/4 votes",
    "crop_cnn_consistent": "crop_cnn_distil_t75, 16 epochs, the teacher scoring each augmented crop",
    "crop_cnn_stretch": "crop_cnn_consistent, 8 epochs, faces widened or narrowed by up to 25%",
    "crop_cnn_stretch_inv": "crop_cnn_stretch, the teacher scoring each crop before its stretch",
    "crop_cnn_slim_consistent": "12 more slim epochs (--init-from it), the teacher scoring each crop",
}


_PRECISION = {"float32": "fp32", "mixed_bfloat16": "bf16 mix", "mixed_float16": "fp16 mix"}


def _recipe_cells(config) -> list[str]:
    return [str(config.epochs), str(config.batch_size), f"{config.learning_rate:g}",
            f"{config.optimizer}+{config.lr_schedule}", _PRECISION.get(config.precision, config.precision),
            f"{config.crop}px" if config.crop else "-"]


def print_presets(presets: dict, ensembles: dict, console: Console | None = None) -> None:
    """The training recipes: a table of key settings, then what each is for; fits 80 columns."""
    console = console or _console()
    table = _table("training presets (ferbatch train --preset NAME)",
                   ["preset", "network", "epochs", "batch", "lr", "optimizer", "precision", "crop"], first_columns=2)
    table.columns[0].no_wrap = True  # names are what a person types: never folded
    table.columns[1].min_width = 8  # a network's name on one line; "3 x crop_cnn" on two
    for index in (5, 6):
        table.columns[index].justify = "left"
    for name, config in presets.items():
        table.add_row(name, config.architecture, *_recipe_cells(config))
    for name, ensemble in ensembles.items():
        member = presets.get(ensemble.member)
        table.add_row(name, f"{len(ensemble.seeds)} x {member.architecture if member else ensemble.member}",
                      *(_recipe_cells(member) if member else ["-"] * 6))
    console.print(table)
    notes = Table.grid(padding=(0, 1))
    notes.add_column(no_wrap=True)
    notes.add_column(overflow="fold")
    for name, recipe in [*presets.items(), *ensembles.items()]:
        notes.add_row(f"  {name}:", _about(name, recipe))
    console.print(notes, highlight=False)
    console.print("  every setting: ferbatch presets --json", highlight=False)


# What a model was trained towards, as short as 80 columns need.
_LABEL_SOURCES = {"ferplus": "fer+", "ferplus_votes": "fer+votes"}


def print_models(rows: list[dict], unfinished: list[dict], console: Console | None = None) -> None:
    """`models list`: a version per row (its name ends with its architecture; * marks the current one), with
    PublicTest and PrivateTest accuracy; unfinished runs below, with how to continue them. Fits 80 columns."""
    console = console or _console()
    if rows:
        table = _table(None, ["version", "params", "public", "private", "priv+flip", "labels"], first_columns=1)
        table.columns[0].no_wrap = True
        table.columns[-1].justify = "left"
        for row in rows:
            parameters = "-" if row.get("parameters") is None else f"{row['parameters'] / 1e6:.2f}M"
            table.add_row(f"{'*' if row['current'] else ' '} {row['version']}", parameters,
                          *(f"{row[key]:.4f}" if row[key] is not None else "-" for key in ("public", "private",
                                                                                             "private_flip")),
                          _LABEL_SOURCES.get(row["labels"], row["labels"]))
        console.print(table, highlight=False)
    measured = [(row, name, m) for row in rows for name, m in sorted(row.get("real_photos", {}).items())]
    if measured:  # `ferbatch evaluate --real-photos DIR` puts these on the card
        # No "found" column: a photo whose face is not found counts as wrong in every figure.
        table = _table("On labelled real photos", ["version", "set", "acc7", "sent3", "macro\nrecall",
                                                   "neg.\nbias", "score"], first_columns=2)
        table.columns[0].no_wrap = True
        shown = set()
        for row, name, m in measured:
            bias = negative_bias(m)
            breach = in_the_wild(name) and not abs(bias) <= NEGATIVE_BIAS_CAP
            score = real_photo_score({"real_photos": {"sets": row["real_photos"]}})
            table.add_row(f"{'*' if row['current'] else ' '} {row['version']}", printable(name),
                          *(f"{m[key]:.3f}" for key in ("acc7", "sent3", "macro_recall")),
                          "-" if math.isnan(bias) else f"{bias:+.2f}{'!' if breach else ''}",
                          "" if row["version"] in shown or score is None else f"{score:.3f}")
            shown.add(row["version"])
        console.print(table, highlight=False)
        note = (f"score: mean of sent3 and macro recall over the sets, what promotion ranks by; ! marks a "
                f"negative-share bias beyond +-{NEGATIVE_BIAS_CAP:.2f} on photos in the wild, which promotion "
                "refuses (docs/model.md)")
        console.print(textwrap.fill(note, 78, initial_indent="  ", subsequent_indent="  "), highlight=False)
    for run in unfinished:
        console.print(f"  {run['version']}: unfinished, epoch {run['epochs_done']} of {run['epochs']}, best "
                      f"PublicTest {run['best_public']:.4f} so far; continue it with `ferbatch train --data ... "
                      f"--resume-from {run['version']}`", highlight=False)


def _about(name: str, recipe: object) -> str:
    return getattr(recipe, "description", None) or PRESET_NOTES.get(name, "-")


def _display_path(path: str) -> str:
    """A path relative to the working folder when it lies inside it (shorter), else as it is."""
    relative = os.path.relpath(path)
    return path if relative.startswith("..") else relative


# Per-row views (`analyze`, `report --images` / `--faces`): a table per scanned root, the file's path relative to
# it in the first column (folded, never cut), the rest fixed-width; each fits 80 columns.
_FACE_VIEW = (("face", "right"), ("box x,y,w,h", "left"), ("emotion", "left"), ("p", "right"), ("sentiment", "left"),
              ("score", "right"))
_IMAGE_VIEW = (("faces", "right"), ("emotion", "left"), ("p", "right"), ("sentiment", "left"), ("score", "right"),
               ("taken", "left"))


def _name(text: object) -> Text:
    """A file or folder name for a table cell or title: shown as named, never as markup or terminal escapes."""
    return Text(printable(str(text)))


def _rows_table(title: str, view: tuple[tuple[str, str], ...]) -> Table:
    table = Table(title=_name(title), box=box.SIMPLE_HEAD, title_justify="left", pad_edge=False, padding=(0, 1),
                  collapse_padding=True)
    table.add_column("file", overflow="fold", ratio=1)
    for header, justify in view:
        table.add_column(header, justify=justify, no_wrap=True)  # type: ignore[arg-type]
    return table


def _tables_by_root(items: list, root_of: Callable[[object], str], view: tuple[tuple[str, str], ...],
                    add_rows: Callable[[Table, object], None]) -> list[Table]:
    tables: list[Table] = []
    root = None
    for item in items:
        if root_of(item) != root:
            root = root_of(item)
            tables.append(_rows_table(_display_path(root), view))
        add_rows(tables[-1], item)
    return tables


def _verdict_cells(emotion: str, probability: float, sentiment: str, score: float) -> list[str]:
    return [emotion, f"{probability:.1%}", sentiment, f"{score:+.3f}"]


def analysis_tables(images: list) -> list[Table]:
    """`ferbatch analyze`'s rows: one per face (numbered from 1), plus an image's own row when it has no face
    or several (`all`: the area-weighted mean of its faces, as the images table holds it)."""

    def add_rows(table: Table, image) -> None:
        name = _name(os.path.relpath(image.path, image.root))
        for index, face in enumerate(image.faces, start=1):
            table.add_row(name if index == 1 else "", str(index), ",".join(map(str, face.box)),
                          *_verdict_cells(face.emotion, face.probability, face.sentiment, face.score))
        if image.status == "ok" and len(image.faces) > 1:
            table.add_row("", "all", "", *_verdict_cells(image.emotion, image.probability, image.sentiment,
                                                         image.score))
        elif image.status != "ok":
            table.add_row(name, "-", "", "no face" if image.status == "no_face" else "error", "", "", "")

    return _tables_by_root(images, lambda image: image.root, _FACE_VIEW, add_rows)


def _row_probability(row: dict) -> float:
    return row[f"p_{row['emotion'].lower()}"]


def image_rows_tables(rows: list[dict]) -> list[Table]:
    """`report --images`: one row per image; `faces` is its face count, `taken` its EXIF date."""

    def add_rows(table: Table, row: dict) -> None:
        taken = row["taken_at"].date().isoformat() if row.get("taken_at") else "-"
        if row["status"] == "ok":
            table.add_row(_name(row["path"]), str(row["n_faces"]), *_verdict_cells(
                row["emotion"], _row_probability(row), row["sentiment"], row["sentiment_score"]), taken)
        else:
            table.add_row(_name(row["path"]), "-", "no face" if row["status"] == "no_face" else "error", "", "", "",
                          taken)

    return _tables_by_root(rows, lambda row: row["root"], _IMAGE_VIEW, add_rows)


def face_rows_tables(rows: list[dict]) -> list[Table]:
    """`report --faces`: one row per face, numbered from 1 within its image (face_index + 1)."""

    previous: list = [None]

    def add_rows(table: Table, row: dict) -> None:
        image = (row["root"], row["path"])
        name, previous[0] = ("" if image == previous[0] else _name(row["path"])), image  # each image's name once
        table.add_row(name, str(row["face_index"] + 1), ",".join(str(row[c]) for c in "xywh"),
                      *_verdict_cells(row["emotion"], _row_probability(row), row["sentiment"],
                                      row["sentiment_score"]))

    return _tables_by_root(rows, lambda row: row["root"], _FACE_VIEW, add_rows)


def format_rows(rows: list[dict], fmt: str) -> str:
    """Rows as csv or json (every column), or markdown (the columns the table view shows, with root and path)."""
    if fmt == "json":
        return json.dumps(rows, indent=2, default=str)
    if fmt == "csv":  # names as the aggregates' CSV shows them: escapes visible, never a spreadsheet formula
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        if rows:
            writer.writerow(rows[0])
        for row in rows:
            writer.writerow([_csv(v) for v in row.values()])
        return out.getvalue().rstrip("\n")
    if fmt == "markdown":
        faces = bool(rows) and "face_index" in rows[0]
        columns = ["root", "path", *(["face_index", "x", "y", "w", "h"] if faces else ["status", "n_faces"]),
                   "emotion", "sentiment", "sentiment_score", *([] if faces else ["taken_at"])]
        lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
        lines += ["| " + " | ".join(_markdown_value(row.get(c)) for c in columns) + " |" for row in rows]
        return "\n".join(lines)
    raise ValueError(f"unknown format {fmt!r} (use {', '.join(AGGREGATE_FORMATS)})")


def _markdown_value(value: object) -> str:
    """A Markdown table cell: names as text (never a cell break, markup, HTML or an escape sequence)."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:+.3f}"
    return markdown_cell(str(value))


def print_rows(rows: list[dict], table: str, console: Console | None = None, fmt: str = "table") -> None:
    """`report --images` / `--faces` in a format; the table view says how many rows it shows."""
    if fmt != "table":
        (console.file if console else sys.stdout).write(format_rows(rows, fmt) + "\n")
        return
    console = console or _console()
    for view in (image_rows_tables if table == "images" else face_rows_tables)(rows):
        console.print(view)
    for row in rows:
        if row.get("error"):
            console.print(_name(f"  error: {row['path']}: {row['error']}"), overflow="fold", highlight=False)
    console.print(f"{len(rows)} {table[:-1] if len(rows) == 1 else table}", highlight=False)


def print_analysis(images: list, model_version: str, console: Console | None = None) -> None:
    console = console or _console()
    for table in analysis_tables(images):
        console.print(table)
    for image in images:
        if image.error:
            console.print(_name(f"  error: {_display_path(image.path)}: {image.error}"), overflow="fold",
                          highlight=False)
    n_faces = sum(len(image.faces) for image in images)
    console.print(f"{len(images)} image(s), {n_faces} face(s); model {model_version}", highlight=False)
