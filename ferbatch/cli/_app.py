"""The `ferbatch` group and what its commands share: one-line errors, option types, the shared options,
and the configuration, read once per command."""

from __future__ import annotations

import math
from pathlib import Path

import click

from ferbatch.errors import FerbatchError
from ferbatch.runtime.logs import configure_logging

EXISTING_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)
EXISTING_DIR = click.Path(exists=True, file_okay=False, path_type=Path)


class _ByteSize(click.ParamType):
    """A size in bytes: a number, or with a unit (512MiB, 1GB), as the configuration file takes it."""

    name = "size"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> int:
        from pydantic import ByteSize, TypeAdapter, ValidationError

        try:
            size = TypeAdapter(ByteSize).validate_python(value)
        except ValidationError:
            self.fail(f"{value!r} is not a size (a number of bytes, or e.g. 512MiB, 1GB)", param, ctx)
        if size < 1:
            self.fail("must be at least 1 byte", param, ctx)
        return int(size)


_BYTE_SIZE = _ByteSize()


class _FiniteFloat(click.FloatRange):
    """A float option: nan and inf are refused (no comparison with them holds, so a range would let them by)."""

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> float:
        number = super().convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return number


class _UsageError(click.ClickException):
    """A usage error in one line, with where to look, instead of click's usage block (exit code 2 as click's)."""

    exit_code = 2


def _one_line(exc: click.UsageError) -> _UsageError:
    where = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx is not None else ""
    return _UsageError(f"{exc.format_message().rstrip('.')}{where}")


class _Group(click.Group):
    """Turns user errors raised anywhere below into click's one-line `Error: ...` and exit code 1, and usage errors
    into one line too (exit code 2)."""

    def make_context(self, info_name: str | None, args: list[str], parent: click.Context | None = None,
                     **extra: object) -> click.Context:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except click.UsageError as exc:
            raise _one_line(exc) from None

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except FerbatchError as exc:
            raise click.ClickException(str(exc)) from None
        except click.UsageError as exc:
            raise _one_line(exc) from None


def _models_dir_option(function):
    return click.option(
        "--models-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
        help="Model registry folder (default: $FERBATCH_MODELS_DIR or the project's models/).",
    )(function)


def _image_options(function):
    """The options `score` and `analyze` share: which files, the sentiment map, annotated copies."""
    for option in reversed([
        click.option("--include", multiple=True, help="Only files matching this glob (repeatable)."),
        click.option("--exclude", multiple=True, help="Skip files matching this glob (repeatable)."),
        click.option("--sentiment-map", default=None, metavar="EMOTION=SENTIMENT,...",
                     help="Change the default map, e.g. 'Surprise=positive'."),
        click.option("--annotate", type=click.Path(file_okay=False, path_type=Path), default=None,
                     help="Also write copies of the images with boxes and labels drawn into this folder."),
    ]):
        function = option(function)
    return function


def _config(ctx: click.Context):
    """The effective configuration, read once per command (see `ferbatch config show`)."""
    from ferbatch.config import load_config

    root = ctx.find_root()
    if "config" not in root.meta:
        root.meta["config"] = load_config(root.params.get("config_file"))
    return root.meta["config"][0]


def _models_dir(ctx: click.Context, option: Path | None) -> Path | None:
    """--models-dir, else the configuration's models_dir (file or FERBATCH_MODELS_DIR): every command the same."""
    return option or _config(ctx).models_dir


@click.group(cls=_Group)
@click.version_option(package_name="ferbatch")
@click.option("-v", "--verbose", is_flag=True, help="Debug logging.")
@click.option("--config", "config_file", type=EXISTING_FILE, default=None,
              help="Configuration file (default: $FERBATCH_CONFIG, else ./ferbatch.toml if present).")
def cli(verbose: bool, config_file: Path | None) -> None:
    """Facial-sentiment scoring of image folders, with its own FER2013 CNN."""
    configure_logging(verbose)
