"""ferbatch: facial-sentiment scoring of image folders, with its own FER2013 CNN."""

import os

# TensorFlow's C++ start-up chatter (oneDNN, CUDA stubs) is noise for a batch tool's users.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from ferbatch.classes import CLASS_NAMES, NUM_CLASSES
from ferbatch.errors import FerbatchError

__version__ = "0.1.0"
__all__ = ["CLASS_NAMES", "NUM_CLASSES", "FerbatchError", "__version__"]
