"""ferbatch: facial-sentiment scoring of image folders, with its own FER2013 CNN."""

from ferbatch.classes import CLASS_NAMES, NUM_CLASSES
from ferbatch.errors import FerbatchError

__version__ = "0.1.0"
__all__ = ["CLASS_NAMES", "NUM_CLASSES", "FerbatchError", "__version__"]
