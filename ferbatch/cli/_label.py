"""`ferbatch label export`: the labelling loop's face crops."""

from __future__ import annotations

from pathlib import Path

import click

from ferbatch.cli._app import EXISTING_DIR, _config, _Group, cli


@cli.group(cls=_Group)
def label() -> None:
    """The labelling loop: export faces to sort into class folders for the nightly fine-tune."""


@label.command("export")
@click.argument("out_dir", type=EXISTING_DIR)
@click.option("--to", "destination", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Labelling folder: crops go to DIR/_unsorted/, sort them into DIR/Happy/, DIR/Sad/, ...")
@click.option("--uncertain", type=click.IntRange(min=1), default=None, metavar="N",
              help="The N least confident faces (the default, N = 100).")
@click.option("--sample", type=click.IntRange(min=1), default=None, metavar="N", help="N faces at random.")
@click.option("--since", type=click.DateTime(formats=["%Y-%m-%d"]), default=None, metavar="DATE",
              help="Only faces of runs on or after DATE (YYYY-MM-DD).")
@click.pass_context
def export_labels(ctx: click.Context, out_dir: Path, destination: Path, uncertain: int | None, sample: int | None,
                  since) -> None:
    """Write 96 px face crops of a scored output folder, plus a CSV linking each to its image."""
    from ferbatch.labelling import export_faces

    if uncertain is not None and sample is not None:
        raise click.UsageError("--uncertain and --sample choose faces differently: give one of them")
    if sample is None and uncertain is None:
        uncertain = 100
    result = export_faces(out_dir, destination, uncertain=uncertain, sample=sample,
                          since=since.date() if since else None, scanned=list(_config(ctx).score.folders))
    click.echo(f"wrote {len(result.written)} face crop(s) to {destination / '_unsorted'}")
    if result.csv_path:
        click.echo(f"wrote {result.csv_path}")
    for reason, count in sorted(result.skipped.items()):
        click.echo(f"skipped {count}: {reason.replace('_', ' ')}", err=True)
    if result.written:
        click.echo("next: move each crop into a class folder (Happy/, Sad/, ...) or _skip/,")
        click.echo("then set train.extra_folder to this folder for the nightly fine-tune")
