"""The Parquet schemas of the three report tables: `images/`, `faces/` and `aggregates/`."""

from __future__ import annotations

import pyarrow as pa

from ferbatch.classes import CLASS_NAMES

TABLES = ("images", "faces", "aggregates")
FACE_IMAGE_COLUMNS = ("root", "folder", "taken_at")  # the faces table's copy of its image's columns
PROBABILITY_COLUMNS = [f"p_{name.lower()}" for name in CLASS_NAMES]
UTC_US = pa.timestamp("us", tz="UTC")
_PROBABILITIES = [pa.field(name, pa.float32()) for name in PROBABILITY_COLUMNS]

IMAGES_SCHEMA = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("run_date", pa.date32(), nullable=False),
        pa.field("scored_at", UTC_US, nullable=False),
        pa.field("root", pa.string(), nullable=False),
        pa.field("path", pa.string(), nullable=False),
        pa.field("folder", pa.string(), nullable=False),
        pa.field("image_id", pa.string()),  # null only when the file could not be read at all
        pa.field("bytes", pa.int64()),
        pa.field("mtime", UTC_US),
        pa.field("width", pa.int32()),
        pa.field("height", pa.int32()),
        pa.field("taken_at", UTC_US),
        pa.field("status", pa.string(), nullable=False),  # ok | no_face | error
        pa.field("error", pa.string()),
        pa.field("n_faces", pa.int32(), nullable=False),
        pa.field("emotion", pa.string()),
        pa.field("sentiment", pa.string()),
        pa.field("sentiment_score", pa.float32()),
        *_PROBABILITIES,
        pa.field("model_version", pa.string(), nullable=False),
        pa.field("detector", pa.string(), nullable=False),
    ]
)

FACES_SCHEMA = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("run_date", pa.date32(), nullable=False),
        pa.field("image_id", pa.string(), nullable=False),
        # The image's root, folder and date, as its images row holds them, so face questions need no join.
        # Parts written before these columns are rewritten with them (`add_face_columns`).
        pa.field("root", pa.string(), nullable=False),
        pa.field("path", pa.string(), nullable=False),
        pa.field("folder", pa.string(), nullable=False),
        pa.field("taken_at", UTC_US),
        pa.field("face_index", pa.int32(), nullable=False),
        pa.field("x", pa.int32(), nullable=False),
        pa.field("y", pa.int32(), nullable=False),
        pa.field("w", pa.int32(), nullable=False),
        pa.field("h", pa.int32(), nullable=False),
        pa.field("det_score", pa.float32(), nullable=False),
        *_PROBABILITIES,
        pa.field("emotion", pa.string(), nullable=False),
        pa.field("sentiment", pa.string(), nullable=False),
        pa.field("sentiment_score", pa.float32(), nullable=False),
        pa.field("model_version", pa.string(), nullable=False),
    ]
)

GROUP_BYS = ("all", "folder", "taken_date")
AGGREGATES_SCHEMA = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("run_date", pa.date32(), nullable=False),
        pa.field("group_by", pa.string(), nullable=False),
        pa.field("group_value", pa.string()),  # null taken_date: images without an EXIF date
        pa.field("n_images", pa.int64(), nullable=False),
        pa.field("n_ok", pa.int64(), nullable=False),
        pa.field("n_no_face", pa.int64(), nullable=False),
        pa.field("n_error", pa.int64(), nullable=False),
        pa.field("n_faces", pa.int64(), nullable=False),
        pa.field("share_positive", pa.float64()),
        pa.field("share_negative", pa.float64()),
        pa.field("share_neutral", pa.float64()),
        pa.field("mean_sentiment_score", pa.float64()),
        *[pa.field(f"n_{name.lower()}", pa.int64(), nullable=False) for name in CLASS_NAMES],
        pa.field("model_version", pa.string(), nullable=False),
    ]
)

SCHEMAS = {"images": IMAGES_SCHEMA, "faces": FACES_SCHEMA, "aggregates": AGGREGATES_SCHEMA}
