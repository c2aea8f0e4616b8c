"""`ferbatch report`: a report folder's aggregates, rows or HTML page."""

from __future__ import annotations

from pathlib import Path

import click

from ferbatch.cli._app import EXISTING_DIR, cli
from ferbatch.errors import FerbatchError


@cli.command()
@click.argument("out_dir", type=EXISTING_DIR)
@click.option("--images", "rows", flag_value="images", default=None,
              help="The rows themselves: one per image (its latest scoring), instead of the aggregates.")
@click.option("--faces", "rows", flag_value="faces", help="The rows themselves: one per face.")
@click.option("--folder", default=None, help="With --images / --faces: only this first-level folder "
              "(or '(top level)').")
@click.option("--emotion", default=None, help="With --images / --faces: only rows whose top emotion is this.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="With --images / --faces: at most N rows.")
@click.option("--format", "fmt", type=click.Choice(["table", "csv", "json", "markdown"]), default="table",
              show_default=True, help="Tables that fit 80 columns, or every column as CSV or JSON, or Markdown.")
@click.option("--json", "as_json", is_flag=True, help="Same as --format json.")
@click.option("--run", "run_id", default=None, metavar="RUN_ID|latest",
              help="One run's rows from the history instead of the current table (one row per photo).")
@click.option("--html", "html_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Instead, write the charts to one self-contained HTML FILE.")
def report(out_dir: Path, rows: str | None, folder: str | None, emotion: str | None, limit: int | None, fmt: str,
           as_json: bool, run_id: str | None, html_file: Path | None) -> None:
    """Print the aggregates of the current table (every photo once, by its newest scoring), read back from the
    Parquet in OUT_DIR; --run shows one run instead (the latest that scored images, or RUN_ID); --images or
    --faces print the rows themselves (each image's latest scoring)."""
    fmt = "json" if as_json else fmt
    if rows is None:
        unused = [name for name, value in (("--folder", folder), ("--emotion", emotion), ("--limit", limit))
                  if value is not None]
        if unused:
            raise click.UsageError(f"{', '.join(unused)}: only with --images or --faces")
    elif html_file is not None or run_id is not None:
        raise click.UsageError(f"{'--html' if html_file is not None else '--run'} and --{rows} contradict each other")
    if html_file is not None:
        from ferbatch.present.html_report import write_html_report

        click.echo(f"wrote {write_html_report(out_dir, html_file, run_id=run_id)}")
        return
    from ferbatch.reports import ReportStore

    store = ReportStore(out_dir)
    if rows is not None:
        from ferbatch.present.console import print_rows

        print_rows(store.rows(rows, folder=folder, emotion=emotion, limit=limit).to_pylist(), rows, fmt=fmt)
        return
    from ferbatch.present.console import print_aggregates

    table = store.current_aggregates() if run_id is None else None
    if table is None:  # a folder from before the current table, or --run
        table = store.latest_aggregates() if run_id in (None, "latest") else store.run_aggregates(run_id)
    if table is None:
        raise FerbatchError(f"{out_dir}: no scored run yet (a run with nothing new writes no report)"
                            if store.is_report_folder() else f"{out_dir}: not a ferbatch --out folder (no scored run)")
    print_aggregates(table.to_pylist(), fmt=fmt)
