"""`ferbatch config show` and `config init`: the effective configuration, and a commented file to start from."""

from __future__ import annotations

from pathlib import Path

import click

from ferbatch.cli._app import _config, _Group, cli


@cli.group(cls=_Group)
def config() -> None:
    """Inspect the configuration (ferbatch.toml plus FERBATCH_* environment overrides)."""


@config.command("show")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of TOML.")
@click.pass_context
def show_config(ctx: click.Context, as_json: bool) -> None:
    """Print the effective configuration and where it came from."""
    from ferbatch.config import annotated_toml

    effective = _config(ctx)
    source = ctx.find_root().meta["config"][1]
    if as_json:
        click.echo(effective.model_dump_json(indent=2))
        return
    click.echo(f"# from {source or 'defaults'}, with FERBATCH_* environment overrides applied;\n"
               "# commented keys are unset")
    click.echo(annotated_toml(effective), nl=False)


@config.command("init")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path), default="ferbatch.toml")
def init_config(path: Path) -> None:
    """Write a commented ferbatch.toml (default: ./ferbatch.toml) with every key at its default; never overwrites."""
    from ferbatch.config import write_config_template

    click.echo(f"wrote {write_config_template(path)}")
