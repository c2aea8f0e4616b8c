"""Scoring: image files -> faces -> emotions and sentiment -> rows in the reports.

Public surface: `run_scoring` and its shard mapper contract, the detector, classifier and components
protocols with their real implementations, the sentiment map, the pipeline's settings and pieces the
benchmarks reuse, and the image helpers the training side reuses. The run's steps stay private.
"""

from ferbatch.config import ScoreSettings
from ferbatch.scoring._annotate import annotator, check_annotations_folder
from ferbatch.scoring._classifier import EmotionClassifier, KerasClassifier
from ferbatch.scoring._components import Components
from ferbatch.scoring._detection import (
    DetectorSettings,
    Face,
    FaceDetector,
    YuNetDetector,
    crop_face,
    default_detector_path,
    eye_angle,
)
from ferbatch.scoring._images import (
    ANNOTATIONS_MARKER,
    IMAGE_SUFFIXES,
    ImageError,
    ImageFile,
    as_text,
    decode,
    read_bytes,
    scan,
)
from ferbatch.scoring._pipeline import (
    PipelineSettings,
    PreparedImage,
    ScoredImage,
    crop_faces,
    image_probabilities,
    prepare,
    score_images,
)
from ferbatch.scoring._run import (
    RunContext,
    RunPreview,
    ScoringComponents,
    Shard,
    ShardMapper,
    ShardResult,
    ShardScorer,
    face_verdicts,
    image_verdict,
    map_sequential,
    no_images_message,
    preview_run,
    require_dask_scheduler,
    rows_for,
    run_scoring,
    skipped_run_summary,
)
from ferbatch.scoring._sentiment import SentimentMap, parse_sentiment_map

__all__ = [
    "ANNOTATIONS_MARKER", "IMAGE_SUFFIXES", "Components", "DetectorSettings", "EmotionClassifier", "Face",
    "FaceDetector", "ImageError", "ImageFile", "KerasClassifier", "PipelineSettings", "PreparedImage", "RunContext",
    "RunPreview",
    "ScoreSettings", "ScoredImage", "ScoringComponents", "SentimentMap", "Shard", "ShardMapper", "ShardResult",
    "ShardScorer", "YuNetDetector", "annotator", "as_text", "check_annotations_folder", "crop_face", "crop_faces",
    "decode",
    "default_detector_path", "eye_angle", "face_verdicts", "image_probabilities", "image_verdict", "map_sequential",
    "no_images_message", "parse_sentiment_map", "prepare", "preview_run", "read_bytes", "require_dask_scheduler",
    "rows_for", "run_scoring",
    "scan", "score_images", "skipped_run_summary",
]
