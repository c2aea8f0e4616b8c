"""Training: FER2013 data -> a trained, calibrated, evaluated network -> a registered, promoted model.

Public surface: the recipes (`TrainConfig`, `Augmentation`, the presets and ensemble presets), which import no
Keras, so `ferbatch presets` and configuration checks stay light; and, imported on first use, the data loaders,
the resumable training loop, evaluation, calibration and the retrain steps that `flows/retrain.py` wires.
"""

from ferbatch._lazy import lazy_exports
from ferbatch.training._recipes import (
    CALIBRATION_OBJECTIVES,
    CALIBRATIONS,
    ENSEMBLES,
    OPTIMIZERS,
    PRECISIONS,
    PRESETS,
    TARGETS,
    Augmentation,
    EnsembleRecipe,
    TrainConfig,
    preset,
    recipe,
)

_LAZY = {
    "_data": ("FERPLUS_COLUMNS", "FerData", "add_extra_folder", "apply_ferplus_labels", "ferplus_majority",
              "ferplus_vote_targets", "folder_digest", "load_fer2013", "load_training_data", "source_digests",
              "with_teacher"),
    "_labelled": ("HOLDOUT_EVERY", "LabelledFaces", "load_labelled_folder", "with_labelled_faces"),
    "_nightly": ("DEFAULT_PUBLIC_TOLERANCE", "MIN_HOLDOUT", "CurrentFigures", "FineTuneSetup", "NetworkPlan",
                 "NightlyPlan", "assemble_fine_tuned", "base_networks", "check_nightly", "fine_tune_network",
                 "fine_tune_setup", "fine_tune_training_set", "gate", "gate_figures", "holdout_accuracy",
                 "measure_current", "nightly_markdown", "nightly_problems", "plan_network", "plan_nightly",
                 "record_refused", "refused_candidates", "register_fine_tuned", "tonight", "too_few_holdout_note",
                 "training_deadline", "user_faces_summary"),
    "_loop": ("FaceBatches", "TrainResult", "augmented_crops", "augmented_views", "balanced_class_weights",
              "centre_crops", "same_architecture", "start_from", "starting_network", "teacher_probabilities",
              "train"),
    "_evaluation": ("EVAL_SPLITS", "classification_metrics", "confusion_matrix", "evaluate", "evaluate_splits"),
    "_real_photos": ("LabelledPhotos", "evaluate_real_photos", "load_labelled_photos", "predict_photos",
                     "real_photo_metrics", "real_photos_markdown", "real_photos_on_card"),
    "_calibration": ("apply_class_bias", "biased_predictions", "fit_class_bias"),
    "_pipeline": ("RetrainDecision", "assemble", "batch_teacher", "calibrate", "calibrate_registered", "checkpoint_dir",
                  "find_member", "fit", "metrics_markdown", "prepare_data", "promote", "register", "register_ensemble",
                  "register_unfinished", "retrain_decision", "teacher_targets", "training_setup", "unfinished_card_for",
                  "work_dir"),
}
__getattr__, __dir__ = lazy_exports(__name__, _LAZY)

__all__ = [
    "CALIBRATION_OBJECTIVES", "CALIBRATIONS", "ENSEMBLES", "OPTIMIZERS", "PRECISIONS", "PRESETS", "TARGETS",
    "Augmentation", "EnsembleRecipe", "TrainConfig", "preset", "recipe",
    *(name for names in _LAZY.values() for name in names),
]
