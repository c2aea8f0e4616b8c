"""Models: the architecture factory every FER network is built by, and the registry that stores them.

The registry (`models/<version>/` folders, `current.json`, promotion) imports Keras only inside the methods that
load or save a model, so `models list` and the nightly decision stay light; the architectures (Keras layers)
are imported on first use.
"""

from ferbatch._lazy import lazy_exports
from ferbatch.models._choice import (
    NEGATIVE_BIAS_CAP,
    NEGATIVE_CLASSES,
    PUBLIC_FLOOR,
    in_the_wild,
    negative_bias,
    real_photo_score,
    real_photo_sets,
    real_photo_standing,
)
from ferbatch.models._registry import (
    CARD_FILE,
    CURRENT_FILE,
    MODEL_FILE,
    ModelRegistry,
    Promotion,
    build_card,
    default_models_dir,
    promotion_score,
    runtime_versions,
)

_LAZY = {
    "_architectures": ("INPUT_CONTRACT", "INPUT_SHAPE", "create_model", "crop_offsets", "inference_copy",
                       "list_architectures", "register_architecture", "serving_model", "widen_into",
                       "with_augmentation"),
}
__getattr__, __dir__ = lazy_exports(__name__, _LAZY)

__all__ = [
    "CARD_FILE", "CURRENT_FILE", "MODEL_FILE", "ModelRegistry", "Promotion", "build_card", "default_models_dir",
    "promotion_score", "runtime_versions", "NEGATIVE_BIAS_CAP", "NEGATIVE_CLASSES", "PUBLIC_FLOOR", "in_the_wild",
    "negative_bias", "real_photo_score", "real_photo_sets", "real_photo_standing", *_LAZY["_architectures"],
]
