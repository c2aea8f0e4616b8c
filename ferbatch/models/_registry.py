"""The model registry: `models/<version>/` folders with `model.keras` and `card.json`, and a
`models/current.json` pointer naming the promoted version.

Registration and promotion are atomic (write elsewhere, then rename), so a crash never leaves the
pointer naming a half-written model.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import tempfile
import time
import uuid
import zipfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from ferbatch.classes import CLASS_NAMES
from ferbatch.errors import RegistryError
from ferbatch.models._cards import read_card, read_current, valid_version_name
from ferbatch.models._choice import real_photo_standing

if TYPE_CHECKING:  # Keras loads TensorFlow: only the functions that need it import it
    import keras

CURRENT_FILE = "current.json"
MODEL_FILE = "model.keras"
CARD_FILE = "card.json"
# What an unfinished training run needs to continue on another machine (the training loop's work folder).
# best.weights.h5 is where runs checkpointed before best.weights.npz kept their best weights.
RESUME_FILES = ("checkpoint.keras", "state.json", "best.weights.npz", "best.weights.h5")
# A distillation run's teacher probabilities on the training faces: kept with the run, so a resumed chunk does
# not score every training face with the teacher again.
RESUME_EXTRAS = "teacher-*.npy"
UNFINISHED = "unfinished"
PROMOTION_METRIC = ("PublicTest", "plain", "accuracy")


def _resume_files(folder: Path) -> list[str]:
    return [*RESUME_FILES, *sorted(p.name for p in folder.glob(RESUME_EXTRAS))]


def default_models_dir() -> Path:
    """$FERBATCH_MODELS_DIR, else the project's models/ (source checkout), else ./models."""
    if os.environ.get("FERBATCH_MODELS_DIR"):
        return Path(os.environ["FERBATCH_MODELS_DIR"])
    project_models = Path(__file__).resolve().parents[2] / "models"
    return project_models if (project_models / CURRENT_FILE).is_file() else Path("models")


def promotion_score(card: dict) -> float:
    """The figure the promotion gate compares: PublicTest accuracy (PrivateTest never decides).

    For a calibrated model it is the accuracy before calibration: the biases were fitted on PublicTest, so
    the accuracy after them is optimistic there (measured: +1.0 point on PublicTest, -0.05 on PrivateTest).
    """
    calibration = card.get("calibration") or {}
    if "PublicTest_before" in calibration:
        return float(calibration["PublicTest_before"]["accuracy"])
    split, mode, metric = PROMOTION_METRIC
    return float(card["metrics"][split][mode][metric])


@dataclass(frozen=True)
class Promotion:
    promoted: bool
    version: str
    previous: str | None
    reason: str


def _write_json_atomic(path: Path, payload: dict) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.chmod(tmp, 0o644)  # mkstemp makes it private; the pointer is for every reader of the registry
    with os.fdopen(fd, "w") as handle:
        json.dump(payload, handle, indent=2)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


class ModelRegistry:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    @classmethod
    def at(cls, models_dir: str | Path | None = None) -> ModelRegistry:
        """The registry in `models_dir`, or in `default_models_dir()` when none is given."""
        return cls(models_dir or default_models_dir())

    def _folders(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        # a hidden folder is a registration still being written (.staging-*) or a work folder, never a version
        return sorted(p for p in self.root.iterdir() if not p.name.startswith(".") and (p / CARD_FILE).is_file())

    def _problem(self, folder: Path) -> str | None:
        """Why a version folder's card is not valid (None: it is): a bad card hides its own version only."""
        unfinished = not (folder / MODEL_FILE).exists()
        if unfinished and (_peek(folder / CARD_FILE) or {}).get("status") != UNFINISHED:
            return None if _peek(folder / CARD_FILE) is not None else (
                f"{folder / CARD_FILE}: not a valid model card (not a JSON object); move {folder} out of the registry")
        try:
            read_card(folder / CARD_FILE, unfinished=unfinished)
        except RegistryError as exc:
            return str(exc)
        return None

    def versions(self) -> list[str]:
        """Registered versions with a valid card, oldest first (version names sort by creation time); a version
        whose card is not valid is left out (`card_problems` says why)."""
        return [p.name for p in self._folders() if (p / MODEL_FILE).is_file() and self._problem(p) is None]

    def unfinished_versions(self) -> list[str]:
        """Registered unfinished training runs (no model.keras: never scored with, never promoted), oldest first.
        A folder whose card is not valid is left out (`card_problems` says why)."""
        return [p.name for p in self._folders() if not (p / MODEL_FILE).exists()
                and (_peek(p / CARD_FILE) or {}).get("status") == UNFINISHED and self._problem(p) is None]

    def unfinished_card(self, version: str) -> dict:
        if version not in self.unfinished_versions():
            known = ", ".join(self.unfinished_versions()) or "none"
            raise RegistryError(f"{self.root}: no unfinished run {version!r} (unfinished runs: {known})")
        return read_card(self.root / version / CARD_FILE, unfinished=True)

    def card_problems(self) -> dict[str, str]:
        """Each version folder whose card is not valid, with the one-line reason (those versions are hidden)."""
        return {folder.name: problem for folder in self._folders() if (problem := self._problem(folder))}

    def register_unfinished(self, workdir: str | Path, card: dict) -> str:
        """Store an interrupted run's checkpoint (weights, optimizer state, schedule position, curve so far) as
        an unfinished version, and remove the older unfinished versions of the same run it supersedes.

        The training process may still be writing `workdir`; its files are each replaced atomically, the
        checkpoint before the state, so a copy is consistent when the state reads the same before and after.
        """
        workdir = Path(workdir)
        if not ((workdir / "state.json").is_file() and (workdir / "checkpoint.keras").is_file()):
            raise RegistryError(f"{workdir}: no training checkpoint to register (checkpoint.keras and state.json)")
        self.root.mkdir(parents=True, exist_ok=True)
        version = self.new_version_name(f"{card.get('architecture', 'model')}-{UNFINISHED}")
        staging = Path(tempfile.mkdtemp(prefix=f".staging-{version}-", dir=self.root))
        try:
            staging.chmod(0o755)
            for _attempt in range(20):
                before = (workdir / "state.json").read_bytes()
                for name in _resume_files(workdir):
                    superseded = name == "best.weights.h5" and (workdir / "best.weights.npz").is_file()
                    if (workdir / name).is_file() and not superseded:
                        shutil.copy2(workdir / name, staging / name)
                time.sleep(0.5)
                if (workdir / "state.json").read_bytes() == before:
                    break
            else:
                raise RegistryError(f"{workdir}: the checkpoint kept changing while it was copied; try again")
            state = json.loads(before)
            if not state.get("run_id"):  # a checkpoint written before runs had ids: give it one to keep
                state["run_id"] = uuid.uuid4().hex[:12]
                (staging / "state.json").write_text(json.dumps(state, indent=1))
            card = {**card, "version": version, "status": UNFINISHED, "run_id": state["run_id"],
                    "epochs_done": state["epochs_done"], "history": state["history"],
                    "best_epoch": state["best_epoch"], "best_public_accuracy": state["best_val_accuracy"],
                    "wall_time_s": round(state["wall_time_s"], 2), "chunks": state.get("chunks", []),
                    "files": sorted(p.name for p in staging.iterdir())}
            card["bytes"] = sum(p.stat().st_size for p in staging.iterdir())
            (staging / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n")
            os.rename(staging, self.root / version)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        self.remove_unfinished(run_id=card["run_id"], keep=version)
        return version

    def restore_unfinished(self, version: str, workdir: str | Path) -> dict:
        """Lay an unfinished version's checkpoint into `workdir` for `train(..., resume=True)`; returns its card."""
        card = self.unfinished_card(version)
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        for name in _resume_files(self.root / version):
            (workdir / name).unlink(missing_ok=True)
            if (self.root / version / name).is_file():
                shutil.copy2(self.root / version / name, workdir / name)
        return card

    def remove_unfinished(self, run_id: str | None, keep: str | None = None) -> list[str]:
        """Delete the unfinished versions of training run `run_id` (but `keep`); returns what was removed."""
        removed = []
        for version in self.unfinished_versions():
            if version != keep and run_id and self.unfinished_card(version).get("run_id") == run_id:
                shutil.rmtree(self.root / version)
                removed.append(version)
        return removed

    def current_version(self, strict: bool = True) -> str | None:
        """The version current.json names (None without one); a pointer that is not valid is a one-line
        RegistryError, or None when not `strict` (a forced promotion repairs it)."""
        pointer = self.root / CURRENT_FILE
        if not pointer.is_file():
            return None
        try:
            return read_current(pointer)
        except RegistryError:
            if strict:
                raise
            return None

    def resolve(self, version: str | None = None) -> str:
        """The given version, checked to exist, or the current one."""
        chosen = version or self.current_version()
        if chosen is None:
            raise RegistryError(f"{self.root}: no current model; train one or pass a version")
        if not valid_version_name(chosen):
            raise RegistryError(f"{self.root}: {chosen!r} is not a version name (see `ferbatch models list`)")
        if not (self.root / chosen / MODEL_FILE).is_file():
            if chosen in self.unfinished_versions():
                raise RegistryError(f"{self.root}: {chosen} is an unfinished training run, not a model; "
                                    f"continue it with `ferbatch train --resume-from {chosen}`")
            known = ", ".join(self.versions()) or "none"
            raise RegistryError(f"{self.root}: no model version {chosen!r} (registered: {known})")
        return chosen

    def card(self, version: str | None = None) -> dict:
        """A registered model's card, checked: a bad one is a one-line RegistryError naming its file."""
        return read_card(self.root / self.resolve(version) / CARD_FILE)

    def _has_valid_card(self, version: str) -> bool:
        try:
            read_card(self.root / version / CARD_FILE)
        except RegistryError:
            return False
        return True

    def record_on_card(self, version: str, key: str, value: object) -> None:
        """Set one entry of a registered model's card (a measurement made after registration), atomically."""
        chosen = self.resolve(version)
        _write_json_atomic(self.root / chosen / CARD_FILE, {**self.card(chosen), key: value})

    def model_path(self, version: str | None = None) -> Path:
        return self.root / self.resolve(version) / MODEL_FILE

    def load_model(self, version: str | None = None) -> keras.Model:
        import keras

        path = self.model_path(version)
        try:
            return keras.saving.load_model(path, compile=False)
        except Exception as exc:  # Keras says "File not found" for a file that is there but unreadable
            raise RegistryError(f"{path}: cannot load the model ({_first_line(exc)})") from None

    def verify_model(self, version: str | None = None) -> Path:
        """Check a model file without loading TensorFlow: its sha256 against the card's `model_sha256`,
        or, for cards registered before it was recorded, that it is a whole Keras zip with its config."""
        path = self.model_path(version)
        card = self.card(version)
        if card.get("model_sha256"):
            if file_sha256(path) != card["model_sha256"]:
                raise RegistryError(f"{path}: corrupt model file (its sha256 differs from the card's model_sha256)")
            return path
        try:
            with zipfile.ZipFile(path) as archive:
                damaged = archive.testzip()
                json.loads(archive.read("config.json"))
        except (zipfile.BadZipFile, KeyError, ValueError, OSError) as exc:
            raise RegistryError(f"{path}: corrupt model file (not a Keras archive: {_first_line(exc)})") from None
        if damaged is not None:
            raise RegistryError(f"{path}: corrupt model file ({damaged} fails its CRC check)")
        return path

    def new_version_name(self, architecture: str) -> str:
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        name, n = f"{stamp}-{architecture}", 1
        while (self.root / name).exists():
            n += 1
            name = f"{stamp}-{architecture}-{n}"
        return name

    def register(self, model: keras.Model, card: dict, files: list[Path] = ()) -> str:
        """Store a model, its card and pictures as a new version; returns the version name."""
        self.root.mkdir(parents=True, exist_ok=True)
        version = card.get("version") or self.new_version_name(card.get("architecture", model.name))
        staging = Path(tempfile.mkdtemp(prefix=f".staging-{version}-", dir=self.root))
        try:
            staging.chmod(0o755)  # mkdtemp makes it private; scoring may run as another user
            model.save(staging / MODEL_FILE)
            for file in files:
                shutil.copy2(file, staging / Path(file).name)
            card = {**card, "version": version, "files": sorted(p.name for p in staging.iterdir())}
            card["model_bytes"] = (staging / MODEL_FILE).stat().st_size
            card["model_sha256"] = file_sha256(staging / MODEL_FILE)  # checked before every scoring run
            (staging / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n")
            os.rename(staging, self.root / version)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return version

    def promote(self, version: str, *, force: bool = False, tolerance: float = 0.0) -> Promotion:
        """Point current.json at `version` when it is at least as good as the current one: by labelled real
        photos when both cards carry figures on a shared set (ferbatch.models._choice), else by PublicTest."""
        new_card = self.card(version)
        previous = self.current_version(strict=not force)  # a forced promotion repairs a damaged pointer
        if previous is not None and not self._has_valid_card(previous):
            previous = None  # a dangling pointer, or a card that cannot be read, is no model to defend
        if previous is None or force:
            reason = "forced" if force else "no current model"
        else:
            old_card = self.card(previous)
            new_score, old_score = promotion_score(new_card), promotion_score(old_card)
            standing = real_photo_standing(new_card, old_card, new_score, old_score, tolerance)
            if standing is not None and not standing.eligible:
                return Promotion(False, version, previous, standing.reason)
            if standing is not None:
                reason = standing.reason
            elif new_score + tolerance < old_score:
                return Promotion(
                    False, version, previous,
                    f"PublicTest accuracy {new_score:.4f} is below the current {old_score:.4f} "
                    f"(tolerance {tolerance:.4f})",
                )
            else:
                reason = f"PublicTest accuracy {new_score:.4f} is not below the current {old_score:.4f}"
        _write_json_atomic(
            self.root / CURRENT_FILE,
            {"version": version, "promoted_at": datetime.now(UTC).isoformat(timespec="seconds")},
        )
        return Promotion(True, version, previous, reason)


def _peek(path: Path) -> dict | None:
    """A card's JSON object for a quick look (its status), or None when it is not one."""
    try:
        card = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return card if isinstance(card, dict) else None


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def runtime_versions() -> dict[str, str]:
    import keras

    versions = {"keras": keras.__version__, "backend": keras.backend.backend(), "python": platform.python_version()}
    try:
        import tensorflow as tf

        versions["tensorflow"] = tf.__version__
    except ImportError:  # trained under JAX or PyTorch
        pass
    return versions


def selection_note(data_summary: dict) -> str:
    """What chose the card's checkpoint and what decides its promotion, in words."""
    beside_extra = any(name.endswith("/") for name in data_summary.get("sources", {}))
    checkpoint = ("checkpoint chosen on the mean of PublicTest and the extra folder's held-out fifth"
                  if beside_extra else "checkpoint chosen on PublicTest")
    return (f"{checkpoint}; LR plateaus, early stopping and calibration use PublicTest; labelled real photos "
            "decide promotion, PublicTest its floor; PrivateTest is the final test")


def build_card(
    *,
    architecture: str,
    parameters: int,
    training_config: dict,
    data_summary: dict,
    metrics: dict,
    epochs_run: int,
    best_epoch: int,
    wall_time_s: float,
    stopped_early: bool,
    input_contract: dict,
) -> dict:
    """The model card: what the model is, how it was trained and how well it does."""
    return {
        "version": None,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "architecture": architecture,
        "parameters": parameters,
        "class_names": list(CLASS_NAMES),
        "input_contract": input_contract,
        "training_config": training_config,
        "seed": training_config.get("seed"),
        "epochs_run": epochs_run,
        "best_epoch": best_epoch,
        "stopped_early": stopped_early,
        "wall_time_s": wall_time_s,
        "label_source": data_summary["label_source"],
        "data": data_summary,
        "runtime": runtime_versions(),
        "selection": selection_note(data_summary),
        "promotion_metric": ".".join(PROMOTION_METRIC) + " (before calibration, if any)",
        "metrics": metrics,
    }
