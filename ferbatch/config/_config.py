"""One configuration for the CLI, the flows and the deployments: a TOML file plus environment overrides.

Precedence, highest first: command-line options, `FERBATCH_*` environment variables, the TOML file,
the defaults below. Environment names are `FERBATCH_<KEY>` for top-level keys and
`FERBATCH_<SECTION>__<KEY>` inside a section (e.g. `FERBATCH_SCORE__OUT`, `FERBATCH_SCHEDULE__TIMEZONE`);
lists are JSON (`FERBATCH_SCORE__FOLDERS='["/data/a", "/data/b"]'`). Relative paths in the file are
relative to the file's folder, so a deployment finds them from any working directory.
"""

from __future__ import annotations

import json
import os
import textwrap
import tomllib
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, SettingsError

from ferbatch.classes import CLASS_NAMES
from ferbatch.config._score import SENTIMENTS, ScoreSettings, no_bool_for_a_number
from ferbatch.errors import FerbatchError
from ferbatch.training._recipes import recipe  # the recipes: no Keras

CONFIG_ENV = "FERBATCH_CONFIG"
DEFAULT_CONFIG_NAME = "ferbatch.toml"
ENV_PREFIX = "FERBATCH_"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_default=True, allow_inf_nan=False)

    @field_validator("*", mode="before")
    @classmethod
    def _numbers(cls, value: object, info: ValidationInfo) -> object:
        return no_bool_for_a_number(cls, value, info)


class TrainSection(_Section):
    data: Path | None = Field(None, description="FER2013 CSV; without it the nightly run does not retrain.")
    labels: Path | None = Field(None, description="FER+ vote file: train on FER+ majority labels.")
    extra_folder: Path | None = Field(None, description="Your labelled faces (Happy/, Sad/, ...): the nightly "
                                      "run fine-tunes the current model when they change.")
    preset: str | None = Field(None, description="Recipe of a from-scratch retrain; unset: the nightly run "
                               "follows the current model's recipe and only fine-tunes it.")
    max_minutes: float = Field(30.0, gt=0, description="Time budget of the nightly fine-tune, evaluation and "
                               "registration included.")
    tolerance: float = Field(0.0, ge=0)
    public_tolerance: float = Field(0.015, ge=0, le=1, description="PublicTest accuracy a fine-tune may lose when "
                                    "it reads your held-out faces better (0.015: 1.5 points).")
    real_photos: list[Path] = Field(default_factory=list, description="Folders of labelled real photos "
                                    "(labels.csv: file,label) each new model is measured on, onto its card.")

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            recipe(value)
        except FerbatchError as error:
            raise ValueError(str(error)) from None
        return value


class ScheduleSection(_Section):
    cron: str = "0 2 * * *"
    timezone: str = "UTC"

    @field_validator("cron")
    @classmethod
    def _five_fields(cls, value: str) -> str:
        if len(value.split()) != 5:
            raise ValueError(f"{value!r} is not a 5-field cron expression (minute hour day month weekday)")
        return value

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (use an IANA name such as Europe/Paris)") from None
        return value


class PrefectSection(_Section):
    startup_timeout: float = Field(120.0, gt=0, description="Seconds to wait for Prefect's temporary server to "
                                   "start (without PREFECT_API_URL); tried twice.")


class FerbatchConfig(BaseSettings):
    """The effective configuration (see the module docstring for where each value comes from)."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid", validate_default=True, allow_inf_nan=False
    )

    models_dir: Path | None = Field(None, description="Model registry; none = the project's models/.")
    score: ScoreSettings = Field(default_factory=ScoreSettings)
    train: TrainSection = Field(default_factory=TrainSection)
    schedule: ScheduleSection = Field(default_factory=ScheduleSection)
    prefect: PrefectSection = Field(default_factory=PrefectSection)
    sentiment: dict[str, str] = Field(default_factory=dict, description="Emotion -> sentiment overrides.")

    @field_validator("sentiment")
    @classmethod
    def _valid_sentiment(cls, value: dict[str, str]) -> dict[str, str]:
        by_lower = {name.lower(): name for name in CLASS_NAMES}
        out = {}
        for emotion, sentiment in value.items():
            if emotion.lower() not in by_lower:
                raise ValueError(f"{emotion!r} is not an emotion ({', '.join(CLASS_NAMES)})")
            if sentiment.lower() not in SENTIMENTS:
                raise ValueError(f"{sentiment!r} is not a sentiment ({', '.join(SENTIMENTS)})")
            out[by_lower[emotion.lower()]] = sentiment.lower()
        return out

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return env_settings, init_settings  # the file's values arrive as init values; env wins


def config_path(explicit: str | Path | None = None) -> Path | None:
    """The file to read: --config, else $FERBATCH_CONFIG, else ./ferbatch.toml when it exists."""
    if explicit:
        return Path(explicit)
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    local = Path(DEFAULT_CONFIG_NAME)
    return local if local.is_file() else None


_PATH_KEYS = {
    (): ("models_dir",),
    ("score",): ("out", "folders"),
    ("train",): ("data", "labels", "extra_folder"),
}


def _resolve_relative(values: dict, base: Path) -> dict:
    for section, keys in _PATH_KEYS.items():
        table = values
        for name in section:
            table = table.get(name) if isinstance(table.get(name), dict) else {}
        for key in keys:
            value = table.get(key)
            if isinstance(value, str):
                table[key] = str(base / value)
            elif isinstance(value, list):
                table[key] = [str(base / v) if isinstance(v, str) else v for v in value]
    return values


def _read_toml(path: Path) -> dict:
    if not path.is_file():
        raise FerbatchError(f"{path}: no such configuration file")
    try:
        with open(path, "rb") as handle:
            values = tomllib.load(handle)
    except tomllib.TOMLDecodeError as exc:
        raise FerbatchError(f"{path}: not valid TOML ({exc})") from None
    except UnicodeDecodeError as exc:
        raise FerbatchError(f"{path}: not UTF-8 text (byte {exc.start}); a TOML file is UTF-8") from None
    except OSError as exc:
        raise FerbatchError(f"{path}: cannot read the configuration file ({exc.strerror or exc})") from None
    return _resolve_relative(values, path.resolve().parent)


# FERBATCH_* variables that are not configuration keys: the file to read, the deployment's placeholders
# (deploy/prefect.yaml) and the test suite's switches. Any other unknown FERBATCH_* name is refused, as the
# file refuses an unknown key, so a typo (FERBATCH_MODEL_DIR, FERBATCH_SCORE_OUT) never goes unnoticed.
NOT_CONFIGURATION = frozenset({"CONFIG", "PHOTOS_DIR", "REPORTS_DIR", "CONTAINER_USER", "DOCKER_BASE", "CA_BUNDLE",
                               "JAX_PYTHON"})


def _unknown_variables() -> list[str]:
    keys = set(FerbatchConfig.model_fields)
    unknown = []
    for name in sorted(os.environ):
        if not name.upper().startswith(ENV_PREFIX):
            continue
        rest = name[len(ENV_PREFIX):].upper()
        if rest in NOT_CONFIGURATION or rest.startswith("TEST_"):
            continue
        if rest.split("__", 1)[0].lower() not in keys:
            unknown.append(name)
    return unknown


def _environment_error(exc: Exception) -> FerbatchError:
    """A FERBATCH_* value pydantic-settings could not parse (a list or table that is not JSON), named."""
    for name in sorted(os.environ):
        if name.upper().startswith(ENV_PREFIX) and name[len(ENV_PREFIX):].upper() not in NOT_CONFIGURATION:
            value = os.environ[name]
            field = name[len(ENV_PREFIX):].split("__")
            if _wants_json(field):
                try:
                    json.loads(value)
                except ValueError:
                    return FerbatchError(f"{name}: {value!r} is not JSON; lists and tables are JSON in the "
                                         f"environment, e.g. {name}='[\"/data/a\", \"/data/b\"]'")
    return FerbatchError(f"FERBATCH_* environment: {str(exc).splitlines()[0]}")


def _wants_json(location: list[str]) -> bool:
    """Whether the key at `location` (FERBATCH_SCORE__FOLDERS -> ["SCORE", "FOLDERS"]) is a list or a table."""
    model: type[BaseModel] | None = FerbatchConfig
    annotation = None
    for part in location:
        fields = model.model_fields if model is not None else {}
        field = next((f for key, f in fields.items() if key.lower() == part.lower()), None)
        if field is None:
            return False
        annotation = field.annotation
        model = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    text = str(annotation)
    return model is not None or text.startswith(("list", "dict")) or "list[" in text or "dict[" in text


def _env_variable(location: tuple) -> str | None:
    """The FERBATCH_* variable set in the environment for a key's location, if any (names are case-insensitive)."""
    wanted = ENV_PREFIX + "__".join(str(part) for part in location[:2]).upper()
    return next((name for name in os.environ if name.upper() == wanted), None)


def _describe(error: dict, file: Path | None) -> str:
    """One problem, named where it was set: the environment variable when one is set for the key, else the file."""
    location = ".".join(str(part) for part in error["loc"])
    variable = _env_variable(error["loc"])
    where = variable or (str(file) if file else "configuration")
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        what = f"not a configuration key ({location!r})" if variable else f"unknown key {location!r}"
        return f"{where}: {what}"
    hint = "" if variable else f"; set in the file or {ENV_PREFIX + '__'.join(map(str, error['loc'][:2])).upper()}"
    return f"{where}: {location}: {message} (got {error.get('input')!r}{hint})"


def load_config(path: str | Path | None = None) -> tuple[FerbatchConfig, Path | None]:
    """The effective configuration and the file it came from (None: defaults and environment only)."""
    source = config_path(path)
    values = _read_toml(source) if source else {}
    unknown = _unknown_variables()
    if unknown:
        raise FerbatchError("; ".join(f"{name}: not a configuration key (FERBATCH_<KEY> or FERBATCH_<SECTION>__<KEY>"
                                      f"; keys: {', '.join(FerbatchConfig.model_fields)})" for name in unknown))
    try:
        return FerbatchConfig(**values), source
    except ValidationError as exc:
        raise FerbatchError("; ".join(_describe(error, source) for error in exc.errors())) from None
    except SettingsError as exc:  # a FERBATCH_* list or table that is not JSON
        raise _environment_error(exc) from None


def to_toml(config: FerbatchConfig) -> str:
    """The configuration as TOML (None values are left out: TOML has no null)."""
    import tomli_w

    def clean(value: object) -> object:
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items() if v is not None}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return str(value) if isinstance(value, Path) else value

    return tomli_w.dumps(clean(config.model_dump()))


def retrain_parameters(config: FerbatchConfig) -> dict:
    """Keyword arguments for the `retrain` flow from the [train] section (data may be unset)."""
    train = config.train
    values = {
        "data": train.data, "labels": train.labels, "extra_folder": train.extra_folder,
        "models_dir": config.models_dir, "preset_name": train.preset, "tolerance": train.tolerance,
        "real_photos": [str(folder) for folder in train.real_photos] or None,
    }
    return {k: str(v) if isinstance(v, Path) else v for k, v in values.items() if v is not None}


def _toml_value(value: object) -> str:
    import tomli_w

    if isinstance(value, Path):
        value = str(value)
    elif isinstance(value, list):
        value = [str(v) if isinstance(v, Path) else v for v in value]
    return tomli_w.dumps({"v": value}).strip().removeprefix("v = ")


TERMINAL_WIDTH = 80  # `config show` prints this file: a note that would not fit goes on lines of its own above


def _with_note(line: str, note: str) -> list[str]:
    if not note or len(f"{line}  # {note}") <= TERMINAL_WIDTH:
        return [f"{line}  # {note}" if note else line]
    return [f"# {part}" for part in textwrap.wrap(note, TERMINAL_WIDTH - 2)] + [line]


def _annotated_section(model: BaseModel, lines: list[str], prefix: str) -> None:
    for name, info in type(model).model_fields.items():
        value = getattr(model, name)
        if isinstance(value, BaseModel) or name == "sentiment":
            continue
        if value is None:
            lines += _with_note(f"# {name} = ...", f"{info.description or ''} (unset)".strip())
        else:
            lines += _with_note(f"{prefix}{name} = {_toml_value(value)}", info.description or "")


def annotated_toml(config: FerbatchConfig, commented: bool = False) -> str:
    """Every key with its value, unset ones as comments, and the whole sentiment map in effect; valid TOML.

    `commented` comments out every key too (a template: the file then sets nothing until a line is enabled).
    """
    from ferbatch.config._score import DEFAULT_SENTIMENT_MAP

    lines: list[str] = []
    prefix = "# " if commented else ""
    _annotated_section(config, lines, prefix)
    for section in ("score", "train", "schedule", "prefect"):
        lines += ["", f"[{section}]"]
        _annotated_section(getattr(config, section), lines, prefix)
    lines += ["", "# emotion = positive | negative | neutral (the map in effect, defaults included)", "[sentiment]"]
    effective = {**DEFAULT_SENTIMENT_MAP, **config.sentiment}
    lines += [f"{prefix}{emotion} = {_toml_value(effective[emotion])}" for emotion in CLASS_NAMES]
    return "\n".join(lines) + "\n"


INIT_HEADER = """\
# ferbatch configuration (written by `ferbatch config init`). Every key is
# optional and shown commented out at its default ("..." = unset): uncomment
# and edit the lines you need. Precedence, highest first: command-line options,
# FERBATCH_* environment variables (FERBATCH_SCORE__OUT,
# FERBATCH_SCHEDULE__CRON, ...), this file, the defaults. Relative paths are
# relative to this file's folder. `ferbatch config show` prints the effective
# configuration.

"""


def write_config_template(path: str | Path) -> Path:
    """Write a commented `ferbatch.toml` with every key at its default; never overwrites a file."""
    from ferbatch.safe.files import check_target, create_new, os_reason

    path = Path(path)
    exists = FerbatchError(f"{path}: already exists (not overwritten; `ferbatch config show` prints the effective "
                           "configuration)")
    if os.path.lexists(path):
        raise exists
    check_target(path, "configuration file")  # a missing folder is not created behind the user's back
    defaults = FerbatchConfig.model_construct(score=ScoreSettings(), train=TrainSection.model_construct(),
                                              schedule=ScheduleSection(), prefect=PrefectSection(), sentiment={},
                                              models_dir=None)
    try:  # a new file only: never over or through what appears there meanwhile
        created = create_new(path, (INIT_HEADER + annotated_toml(defaults, commented=True)).encode("utf-8"))
    except OSError as exc:
        raise FerbatchError(f"{path}: cannot write the configuration file ({os_reason(exc)})") from None
    if not created:
        raise exists
    return path
