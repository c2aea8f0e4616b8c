"""`python -m ferbatch` is the `ferbatch` command."""

from ferbatch.cli import main

main()
