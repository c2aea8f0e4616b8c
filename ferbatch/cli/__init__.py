"""The `ferbatch` command line: thin wrappers over the flows and library functions, a module per command group.

`cli` is the click group (`_app`, with what the commands share); `main` is the console script (pyproject's
`ferbatch.cli:main`, and `python -m ferbatch`). Importing this package registers every command on `cli`.
"""

from ferbatch.cli import (  # noqa: F401 -- each module registers its commands on `cli`
    _config_commands,
    _label,
    _models,
    _nightly,
    _report,
    _score,
    _serve,
    _train,
)
from ferbatch.cli._app import cli
from ferbatch.cli._main import main

__all__ = ["cli", "main"]
