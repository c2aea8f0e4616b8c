"""Errors that reach the user as one clear line (the CLI prints them without a traceback)."""


class FerbatchError(Exception):
    """A problem the user can fix: bad input, a missing file, an unknown model version."""


class DataError(FerbatchError):
    """A data file that cannot be used at all (missing, empty, not CSV, no valid rows)."""


class RegistryError(FerbatchError):
    """The model registry has no such version, or no current model."""
