"""The scoring settings: one typed object from `ferbatch.toml` and `FERBATCH_SCORE__*` through the CLI and the
`score` flow to `ferbatch.scoring.run_scoring`. Every default of the scoring side is stated here, once."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, get_args

from pydantic import BaseModel, ByteSize, ConfigDict, Field, ValidationError, ValidationInfo, field_validator

from ferbatch.errors import FerbatchError

DEFAULT_MAX_PIXELS = 80_000_000  # 80 MP: larger than any phone photo, far below a decompression bomb
# Files larger than this are not read (an error row instead): far above any photo, far below what would strain
# memory, since a file is read whole before decoding (two decoding threads: two files in memory at most).
DEFAULT_MAX_BYTES = 256 * 2**20
DEFAULT_BATCH_SIZE = 256  # faces per classifier call: the graph is traced once for this shape
# Upper bounds far beyond any real use: a value past them is a typo, refused in one line before a run starts
# instead of failing inside it (a batch of 10**20 faces, a thread per photo of a million).
MAX_BATCH_SIZE = 65536
MAX_SIDE = 1 << 20  # pixels along one side
MAX_FILE_BYTES = 1 << 50
MAX_WORKERS = 1024
MAX_SHARD_SIZE = 100_000_000
DASK_SCHEMES = ("tcp", "tls", "ws", "wss", "ucx", "inproc")
SENTIMENTS = ("positive", "negative", "neutral")
ClassifierPrecision = Literal["auto", "float32", "bfloat16"]
CLASSIFIER_PRECISIONS: tuple[str, ...] = get_args(ClassifierPrecision)
DEFAULT_SENTIMENT_MAP: dict[str, str] = {
    "Angry": "negative",
    "Disgust": "negative",
    "Fear": "negative",
    "Happy": "positive",
    "Sad": "negative",
    "Surprise": "neutral",
    "Neutral": "neutral",
}


def no_bool_for_a_number(model: type[BaseModel], value: object, info: ValidationInfo) -> object:
    """`batch_size = true` is a mistake, not 1: a number field refuses true and false (pydantic's lax mode takes
    them as 1 and 0). Text such as "3" from an environment variable is still a number."""
    field = model.model_fields.get(info.field_name or "")
    if isinstance(value, bool) and field is not None and field.annotation in (int, float, ByteSize, int | None,
                                                                              float | None):
        raise ValueError("a number, not true or false")
    return value


class ScoreSettings(BaseModel):
    """The [score] section, and the `score` flow's `settings` parameter."""

    model_config = ConfigDict(extra="forbid", validate_default=True, frozen=True, allow_inf_nan=False)

    folders: list[Path] = Field(default_factory=list, description="Image folders the nightly run scores.")
    out: Path = Field(Path("out"), description="Report folder (faces/, images/, aggregates/).")
    include: list[str] = Field(default_factory=list, description="Only files matching these globs.")
    exclude: list[str] = Field(default_factory=list, description="Skip files matching these globs.")
    batch_size: int = Field(DEFAULT_BATCH_SIZE, ge=1, le=MAX_BATCH_SIZE, description="Faces per classifier call.")
    flip_tta: bool = False
    # bfloat16 where the CPU has it natively (AMX or AVX512-BF16): about twice the faces a second, verdicts
    # within rounding of float32 (benchmarks/precision.py; docs/benchmarks.md).
    precision: ClassifierPrecision = Field(
        "auto", description="Classifier arithmetic; auto: bfloat16 if the CPU has it.")
    # At 960 px YuNet finds exactly the faces in the sample photos and every face pasted into the 1080p
    # benchmark corpus, in under half the time of 1280 px (benchmarks/score.py; the README has figures).
    # JPEGs are decoded at reduced size down to this long side too: the detector would shrink them anyway.
    detector_size: int = Field(960, ge=64, le=MAX_SIDE, description="Long side of the copy the detector sees.")
    min_face: int = Field(20, ge=1, le=MAX_SIDE)
    score_threshold: float = Field(0.8, gt=0, le=1)
    max_pixels: int = Field(DEFAULT_MAX_PIXELS, ge=1, le=MAX_SIDE**2)
    max_bytes: ByteSize = Field(ByteSize(DEFAULT_MAX_BYTES), ge=1, le=MAX_FILE_BYTES,
                                description="Larger files are not read (an error row); e.g. 268435456 or '512MiB'.")
    follow_links: bool = Field(False, description="Read symlinked files and folders outside the scanned folders.")
    workers: int = Field(2, ge=1, le=MAX_WORKERS, description="Decode and detect threads per process.")
    runner: Literal["local", "dask"] = "local"
    dask_address: str | None = Field(None, description="tcp://HOST:PORT of a Dask scheduler; none = LocalCluster.")
    dask_workers: int = Field(2, ge=1, le=MAX_WORKERS, description="Worker processes of the LocalCluster.")
    shard_size: int = Field(500, ge=1, le=MAX_SHARD_SIZE,
                            description="Images per shard (one task, one Parquet part each).")
    rescore_on_new_model: bool = Field(
        True, description="A new model scores every photo again; false keeps old photos' rows by older models.")

    @field_validator("*", mode="before")
    @classmethod
    def _numbers(cls, value: object, info: ValidationInfo) -> object:
        return no_bool_for_a_number(cls, value, info)

    @field_validator("dask_address")
    @classmethod
    def _dask_address(cls, value: str | None) -> str | None:
        if value is None:
            return None
        scheme, separator, rest = value.partition("://")
        if not separator:
            scheme, rest = "tcp", value  # Dask reads HOST:PORT as tcp://HOST:PORT
        if scheme not in DASK_SCHEMES:
            raise ValueError(f"{value!r} is not a Dask scheduler address (tcp://HOST:PORT; schemes: "
                             f"{', '.join(DASK_SCHEMES)})")
        if scheme in ("tcp", "tls"):
            host, _, port = rest.rpartition(":")
            if not host or not port.isdigit() or not 0 < int(port) < 65536:
                raise ValueError(f"{value!r} is not a Dask scheduler address (tcp://HOST:PORT)")
        return value

    def with_overrides(self, **values: object) -> ScoreSettings:
        """These settings with every non-None value replaced (command-line options over the configuration); a value
        that is not valid is a one-line FerbatchError naming its option."""
        try:
            return type(self).model_validate({**self.model_dump(), **{k: v for k, v in values.items()
                                                                      if v is not None}})
        except ValidationError as exc:
            raise FerbatchError("; ".join(
                f"--{'.'.join(map(str, error['loc'])).replace('_', '-')} (score.{'.'.join(map(str, error['loc']))}): "
                f"{error['msg'].removeprefix('Value error, ')} (got {error.get('input')!r})"
                for error in exc.errors())) from None

    def require_folders(self) -> ScoreSettings:
        if not self.folders:
            raise FerbatchError("no folders to score: give them on the command line or set score.folders")
        return self
