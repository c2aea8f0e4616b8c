"""What a person sees: the progress bar, the end-of-run summary and report tables."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from ferbatch.classes import CLASS_NAMES


@contextmanager
def progress_bar(total: int, enabled: bool) -> Iterator[Callable[[], None]]:
    """Yields `advance()`; draws a bar on stderr only when enabled and there is work."""
    if not enabled or total == 0:
        yield lambda: None
        return
    columns = (TextColumn("scoring"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(file=sys.stderr), transient=True) as progress:
        task = progress.add_task("scoring", total=total)
        yield lambda: progress.advance(task)


def _console() -> Console:
    """Rich's console; wide enough for the tables when output goes to a file or pipe, not a terminal."""
    console = Console()
    return console if console.is_terminal else Console(width=200)


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
    if summary["top_errors"]:
        lines += ["", "Top error reasons:", *[f"- {reason}: {n}" for reason, n in summary["top_errors"].items()]]
    return "\n".join(lines)


def print_summary(summary: dict, console: Console | None = None) -> None:
    console = console or _console()
    table = Table(title=f"ferbatch run {summary['run_id']} (model {summary['model_version']})")
    for column in ("found", "skipped", "scored", "ok", "no face", "error", "faces", "positive", "negative",
                   "neutral", "images/s"):
        table.add_column(column, justify="right")
    table.add_row(
        *map(str, (summary["images_found"], summary["already_scored"], summary["scored"], summary["ok"],
                   summary["no_face"], summary["error"], summary["faces"])),
        _share(summary["share_positive"]), _share(summary["share_negative"]), _share(summary["share_neutral"]),
        f"{summary['images_per_second']:.1f}",
    )
    console.print(table)
    for reason, n in summary["top_errors"].items():
        console.print(f"  error: {reason} ({n})")
    if not summary["scored"]:
        console.print("nothing new to score: no data files written" if summary["images_found"]
                      else "no images found: no data files written")
    console.print(f"reports in {summary['out_dir']}")


def print_aggregates(rows: list[dict], console: Console | None = None) -> None:
    console = console or _console()
    run = rows[0]
    table = Table(title=f"run {run['run_id']} ({run['run_date']}, model {run['model_version']})")
    columns = ["group_by", "group_value", "n_images", "n_ok", "n_no_face", "n_error", "n_faces", "share_positive",
               "share_negative", "share_neutral", "mean_sentiment_score", *[f"n_{c.lower()}" for c in CLASS_NAMES]]
    for column in columns:
        table.add_column(column.removeprefix("n_").removeprefix("share_"), justify="right")
    for row in rows:
        cells = []
        for column in columns:
            value = row[column]
            if column.startswith("share_"):
                cells.append(_share(value))
            elif isinstance(value, float):
                cells.append(f"{value:+.3f}")
            else:
                cells.append("-" if value is None else str(value))
        table.add_row(*cells)
    console.print(table)
