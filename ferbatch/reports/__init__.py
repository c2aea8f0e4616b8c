"""Parquet reports: `faces/`, `images/` and `aggregates/` datasets, hive-partitioned by run_date.

Each run writes one file per table and shard, `run_date=YYYY-MM-DD/part-<run_id>[-<shard>].parquet`,
streamed to a `.tmp` name and renamed at commit, so readers (DuckDB, Spark, Power BI) never see a
half-written file or a half-committed run.
"""

from ferbatch.reports._aggregates import Aggregator
from ferbatch.reports._current import CURRENT_LINK, CurrentBase, CurrentUpdate, ScanTable, content_matches, unmatched
from ferbatch.reports._migrate import add_face_columns, drop_partition_column, fill_face_columns
from ferbatch.reports._rows import TOP_LEVEL_FOLDER, FaceRow, ImageRow, RunSummary, sentiment_shares
from ferbatch.reports._schemas import (
    AGGREGATES_SCHEMA,
    FACES_SCHEMA,
    IMAGES_SCHEMA,
    PROBABILITY_COLUMNS,
    SCHEMAS,
    TABLES,
)
from ferbatch.reports._store import (
    DAMAGED_DIR,
    TMP_SUFFIX,
    ReportStore,
    ReportWriter,
    committed_runs,
    metadata_json,
)

__all__ = [
    "AGGREGATES_SCHEMA",
    "CURRENT_LINK",
    "DAMAGED_DIR",
    "FACES_SCHEMA",
    "IMAGES_SCHEMA",
    "PROBABILITY_COLUMNS",
    "SCHEMAS",
    "TABLES",
    "TMP_SUFFIX",
    "TOP_LEVEL_FOLDER",
    "Aggregator",
    "CurrentBase",
    "CurrentUpdate",
    "FaceRow",
    "ImageRow",
    "ReportStore",
    "ReportWriter",
    "RunSummary",
    "ScanTable",
    "add_face_columns",
    "committed_runs",
    "content_matches",
    "drop_partition_column",
    "fill_face_columns",
    "metadata_json",
    "sentiment_shares",
    "unmatched",
]
