"""The registry's files checked on every read: `current.json`, each `card.json`, `refused.json`.

A file that is truncated, empty, of the wrong shape or missing what ferbatch reads from it is one line naming the
file and what to do (a RegistryError), never a traceback; callers that list many versions skip a bad card, so it
hides its own version only.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from ferbatch.errors import RegistryError

_PROMOTE_HINT = "`ferbatch models promote VERSION --force` points it at a registered model"


def _number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _load(path: Path, what: str, hint: str) -> object:
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise RegistryError(f"{path}: not a valid {what} (not UTF-8 text); {hint}") from None
    except OSError as exc:
        raise RegistryError(f"{path}: cannot read the {what} ({exc.strerror or exc}); {hint}") from None
    if not text.strip():
        raise RegistryError(f"{path}: not a valid {what} (the file is empty); {hint}")
    try:
        return json.loads(text)
    except ValueError as exc:
        raise RegistryError(f"{path}: not a valid {what} (not JSON: {exc}); {hint}") from None


def valid_version_name(name: object) -> bool:
    """A registry folder's name: one path component, not hidden."""
    return isinstance(name, str) and bool(name) and "/" not in name and "\0" not in name and not name.startswith(".")


def read_current(path: Path) -> str:
    """The version `current.json` names; a RegistryError naming the file when it is not {"version": "<name>"}."""
    pointer = _load(path, "current-model pointer", _PROMOTE_HINT)
    if not isinstance(pointer, dict):
        raise RegistryError(f"{path}: not a valid current-model pointer (a JSON {type(pointer).__name__}, not an "
                            f"object with a version); {_PROMOTE_HINT}")
    version = pointer.get("version")
    if not valid_version_name(version):
        raise RegistryError(f"{path}: not a valid current-model pointer (version is {version!r}, not a version "
                            f"name); {_PROMOTE_HINT}")
    return version


def _card_problem(card: object, unfinished: bool) -> str | None:
    if not isinstance(card, dict):
        return f"a JSON {type(card).__name__}, not an object"
    if "version" in card and card["version"] is not None and not isinstance(card["version"], str):
        return "version is not text"
    if unfinished:
        config = card.get("training_config")
        if not (isinstance(config, dict) and isinstance(config.get("epochs"), int)):
            return "no training_config with epochs"
        if not isinstance(card.get("epochs_done"), int) or not _number(card.get("best_public_accuracy")):
            return "no epochs_done or best_public_accuracy"
        return None
    metrics = card.get("metrics")
    if not isinstance(metrics, dict):
        return "no metrics"
    public = metrics.get("PublicTest")
    plain = public.get("plain") if isinstance(public, dict) else None
    if not (isinstance(plain, dict) and _number(plain.get("accuracy"))):
        return "no PublicTest accuracy in its metrics"
    for name, kind in (("parameters", int), ("label_source", str), ("model_sha256", str), ("training_config", dict),
                       ("real_photos", dict), ("calibration", dict), ("data", dict)):
        if card.get(name) is not None and not isinstance(card[name], kind):
            return f"{name} is not a {'number' if kind is int else 'text' if kind is str else 'JSON object'}"
    sets = (card.get("real_photos") or {}).get("sets")
    if sets is not None and not (isinstance(sets, dict) and all(isinstance(m, dict) for m in sets.values())):
        return "real_photos sets are not objects"
    private = metrics.get("PrivateTest")
    if private is not None and not isinstance(private, dict):
        return "PrivateTest metrics are not an object"
    return None


def read_card(path: Path, unfinished: bool = False) -> dict:
    """A version's card, checked for what ferbatch reads from it; a RegistryError naming the file otherwise."""
    folder = path.parent
    hint = (f"register the model again, or move {folder} out of the registry" if not unfinished else
            f"move {folder} out of the registry")
    card = _load(path, "model card", hint)
    problem = _card_problem(card, unfinished)
    if problem:
        raise RegistryError(f"{path}: not a valid model card ({problem}); {hint}")
    return card  # type: ignore[return-value]


def read_refused(path: Path) -> dict[str, dict]:
    """refused.json: {candidate key: {"version", "reason", "at", ...}}; a RegistryError naming the file otherwise.
    Entries are checked one by one: one without its version, reason and date is left out."""
    hint = "delete it (the nightly may then train a refused candidate once more)"
    entries = _load(path, "record of refused candidates", hint)
    if not isinstance(entries, dict):
        raise RegistryError(f"{path}: not a valid record of refused candidates (a JSON {type(entries).__name__}, "
                            f"not an object); {hint}")
    return {key: entry for key, entry in entries.items()
            if isinstance(entry, dict) and all(isinstance(entry.get(k), str) for k in ("version", "reason", "at"))}
