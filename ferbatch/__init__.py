"""ferbatch: facial-sentiment scoring of image folders, with its own FER2013 CNN.

`ferbatch.analyze(path_or_array)` gives one image's faces (`ferbatch.Face`); `ferbatch score` scores folders.
The analysis names load on first use, so `import ferbatch` stays light (no OpenCV, no Keras).
"""

from ferbatch._lazy import lazy_exports
from ferbatch.classes import CLASS_NAMES, NUM_CLASSES
from ferbatch.errors import FerbatchError

__version__ = "0.1.0"
__all__ = ["CLASS_NAMES", "NUM_CLASSES", "Analyzer", "Face", "FerbatchError", "ImageAnalysis", "__version__",
           "analyze"]
__getattr__, __dir__ = lazy_exports(__name__, {"analysis": ("Analyzer", "Face", "ImageAnalysis", "analyze")})
