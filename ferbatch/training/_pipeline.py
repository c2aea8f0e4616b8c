"""The retrain pipeline as plain typed steps; `flows/retrain.py` wires them as Prefect tasks.

prepare_data -> fit -> calibrate -> evaluate_splits -> register -> promote
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import keras
import numpy as np

from ferbatch.classes import CLASS_NAMES
from ferbatch.errors import FerbatchError
from ferbatch.models import INPUT_CONTRACT, ModelRegistry, Promotion, build_card, runtime_versions, serving_model
from ferbatch.scoring import KerasClassifier
from ferbatch.training import _plots as plots
from ferbatch.training._calibration import apply_class_bias, biased_predictions, fit_class_bias
from ferbatch.training._data import FerData, load_training_data, source_digests, with_teacher
from ferbatch.training._evaluation import classification_metrics
from ferbatch.training._labelled import load_labelled_folder
from ferbatch.training._loop import TrainResult, same_architecture, train
from ferbatch.training._recipes import CALIBRATION_OBJECTIVES, EnsembleRecipe, TrainConfig, preset

log = logging.getLogger(__name__)


def work_dir(models_dir: str | Path) -> Path:
    """Where an in-progress training run keeps its checkpoints and report (hidden from the registry)."""
    return Path(models_dir) / ".work"


def prepare_data(
    data_path: str | Path,
    ferplus_labels: str | Path | None,
    extra_folder: str | Path | None,
    report_dir: Path,
    targets: str = "labels",
) -> tuple[FerData, list[Path]]:
    """Load and validate the data; write the data report pictures and return those that go on the card.

    The montage of training faces stays in report_dir: a registry is committed, cloned and shipped in the
    image, and the faces of the training data are not the registry's to hand on."""
    data = load_training_data(data_path, ferplus_labels, extra_folder, targets)
    shutil.rmtree(report_dir, ignore_errors=True)  # pictures of an earlier run must not reach this card
    pictures = [picture for picture in plots.write_data_report(data, report_dir)
                if picture.name != plots.FACES_PICTURE]
    summary = data.summary()
    log.info("data: %d faces used of %d rows; rejected %s", summary["rows_used"], summary["rows_read"],
             summary["rejected"] or "none")
    return data, pictures


def checkpoint_dir(workdir: Path) -> Path:
    return Path(workdir) / "checkpoints"


def fit(config: TrainConfig, data: FerData, workdir: Path, resume: bool, stop_at: float | None = None,
        init_weights: keras.Model | None = None, teacher: keras.Model | None = None) -> TrainResult:
    images, labels = data.subset("Training")
    targets, extra = data.training_targets(), data.training_extra()
    if config.extra_repeat > 1 and extra.any():
        # Each extra-folder face appears extra_repeat times an epoch (the batches shuffle them apart).
        rows = np.concatenate([np.arange(len(labels))] + [np.flatnonzero(extra)] * (config.extra_repeat - 1))
        images, labels, extra = images[rows], labels[rows], extra[rows]
        targets = None if targets is None else targets[rows]
    teacher_weight = None
    if teacher is not None and config.extra_teacher_weight is not None:
        teacher_weight = np.where(extra, config.extra_teacher_weight, config.teacher_weight).astype(np.float32)
    return train(config, images, labels, *data.subset("PublicTest"), checkpoint_dir(workdir), resume,
                 stop_at=stop_at, init_weights=init_weights, train_targets=targets, teacher=teacher,
                 teacher_weights=teacher_weight, monitor=data.extra_holdout)


def batch_teacher(registry: ModelRegistry, config: TrainConfig) -> keras.Model | None:
    """The teacher that scores every augmented batch (a recipe whose teacher_views is not "centre"), else None."""
    if config.teacher is None or config.teacher_views == "centre":
        return None
    return registry.load_model(registry.resolve(config.teacher))


def teacher_targets(registry: ModelRegistry, config: TrainConfig, data: FerData, workdir: Path) -> FerData:
    """`data` with the recipe's teacher mixed into the training targets (unchanged without a teacher, or with
    one that scores the augmented batches instead: see batch_teacher).

    The teacher's probabilities on the Training faces are kept with the checkpoints, keyed by the teacher and
    the faces, so a resumed chunk (here or, through an unfinished version, anywhere) does not score them again."""
    if config.teacher is None or config.teacher_views != "centre":
        return data
    version = registry.resolve(config.teacher)
    faces, _ = data.subset("Training")
    key = hashlib.sha256(faces.tobytes()).hexdigest()[:16]
    cache = checkpoint_dir(workdir) / f"teacher-{version}-{key}.npy"
    if cache.is_file():
        probabilities = np.load(cache)
    else:
        log.info("scoring %d training faces with the teacher %s", len(faces), version)
        probabilities = KerasClassifier(registry.load_model(version), version=version).predict(faces)
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.save(cache, probabilities.astype(np.float32))
    return with_teacher(data, probabilities, config.teacher_weight, config.extra_teacher_weight)


def training_setup(
    registry: ModelRegistry,
    workdir: Path,
    config: TrainConfig,
    resume_from: str | None = None,
    init_from: str | None = None,
    overrides: dict | None = None,
) -> tuple[TrainConfig, bool, keras.Model | None]:
    """(config, resume, init_weights) for a run: continue a registered unfinished run, start from a registered
    model's weights, or neither. An unfinished run keeps its own recipe: of `overrides` only the epoch budget
    (plateau schedules) and the calibration apply to it."""
    if resume_from and init_from:
        raise FerbatchError("--resume-from continues a run and --init-from starts one: give one of them")
    if resume_from:
        card = registry.unfinished_card(resume_from)
        recipe = TrainConfig.from_dict(card["training_config"])
        wanted = {k: v for k, v in (overrides or {}).items() if v is not None}
        if recipe.lr_schedule == "cosine" and wanted.get("epochs", recipe.epochs) != recipe.epochs:
            raise FerbatchError(f"{resume_from} follows a {recipe.epochs}-epoch cosine schedule; its length is "
                                "part of the recipe and cannot change on resume")
        registry.restore_unfinished(resume_from, checkpoint_dir(workdir))
        log.info("resuming unfinished run %s (%s) after epoch %d of %d", resume_from, card.get("preset"),
                 card["epochs_done"], recipe.epochs)
        return recipe.with_overrides(epochs=wanted.get("epochs"), calibration=wanted.get("calibration")), True, None
    if init_from:
        return config, False, registry.load_model(registry.resolve(init_from))
    return config, False, None


def find_member(registry: ModelRegistry, config: TrainConfig, sources: dict) -> tuple[str | None, str | None]:
    """(finished, unfinished) registered versions of an ensemble member with this recipe on this data."""
    def same(card: dict) -> bool:
        return _same_recipe(config, card.get("training_config")) and (card.get("data") or {}).get("sources") == sources

    finished = [v for v in registry.versions() if registry.card(v).get("role") == "member" and same(registry.card(v))]
    unfinished = [v for v in registry.unfinished_versions() if same(registry.unfinished_card(v))]
    return (finished[-1] if finished else None), (unfinished[-1] if unfinished else None)


def assemble(members: list[keras.Model], recipe: EnsembleRecipe, name: str) -> keras.Model:
    """One model.keras that averages the members' probabilities over the recipe's views."""
    architecture = preset(recipe.member).architecture
    networks = [same_architecture(member, architecture) for member in members]
    return serving_model(networks, crops=recipe.crops, flip=recipe.flip, name=name)


def member_summary(registry: ModelRegistry, version: str) -> dict:
    """What an ensemble's card says of each member: its own metrics, curve and training time."""
    card = registry.card(version)
    recalls = {split: {c: round(card["metrics"][split]["plain"]["per_class"][c]["recall"], 4) for c in CLASS_NAMES}
               for split in card["metrics"]}
    return {
        "version": version, "seed": card["training_config"]["seed"], "best_epoch": card["best_epoch"],
        "epochs_run": card["epochs_run"], "wall_time_s": card["wall_time_s"], "chunks": card.get("chunks", []),
        "accuracy": {split: round(card["metrics"][split]["plain"]["accuracy"], 4) for split in card["metrics"]},
        "recall": recalls, "public_test_curve": [round(a, 4) for a in card["history"].get("val_accuracy", [])],
    }


def register_ensemble(registry: ModelRegistry, name: str, recipe: EnsembleRecipe, data: FerData,
                      model: keras.Model, metrics: dict, member_versions: list[str], report_dir: Path,
                      data_pictures: list[Path] = ()) -> str:
    """Register the assembled model with its members' curves and its own confusion matrices."""
    members = [member_summary(registry, v) for v in member_versions]
    pictures = [plots.member_curves(members, report_dir / "training_curves.png"),
                *_confusion_pictures(metrics, report_dir), *data_pictures]
    card = build_card(
        architecture=f"{len(members)}x{preset(recipe.member).architecture}",
        parameters=int(model.count_params()),
        training_config={"ensemble": recipe.to_dict(), "member": preset(recipe.member).to_dict()},
        data_summary=data.summary(),
        metrics=metrics,
        epochs_run=sum(m["epochs_run"] for m in members),
        best_epoch=0,
        wall_time_s=round(sum(m["wall_time_s"] for m in members), 2),
        stopped_early=False,
        input_contract=INPUT_CONTRACT,
    )
    card.update(preset=name, role="ensemble", members=members, history={},
                views={"crops": recipe.crops, "flip": recipe.flip, "count": len(members) * recipe.crops
                       * (2 if recipe.flip else 1)}, calibration=None)
    version = registry.register(model, card, pictures)
    log.info("registered ensemble %s of %s", version, ", ".join(member_versions))
    return version


def unfinished_card_for(checkpoints: Path, preset_name: str | None = None, data: FerData | None = None,
                        sources: dict | None = None) -> dict:
    """The card of an unfinished run, from the recipe its checkpoint state records. The data it trained on:
    `data` (loaded here), or only its `sources` digests (a run registered from its folder, without loading)."""
    state_file = Path(checkpoints) / "state.json"
    if not state_file.is_file():
        raise FerbatchError(f"{checkpoints}: no interrupted training run here (no state.json)")
    config = TrainConfig.from_dict(json.loads(state_file.read_text())["config"])
    return {
        "architecture": config.architecture,
        "preset": preset_name,
        "training_config": config.to_dict(),
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "runtime": runtime_versions(),
        "data": data.summary() if data is not None else ({"sources": sources} if sources else None),
        "selection": "checkpoint chosen on PublicTest only",
    }


def register_unfinished(registry: ModelRegistry, config: TrainConfig, result: TrainResult, workdir: Path,
                        preset_name: str | None = None, data: FerData | None = None) -> str:
    """Register the run's checkpoint as an unfinished version that `--resume-from` continues anywhere."""
    card = unfinished_card_for(checkpoint_dir(workdir), preset_name, data)
    version = registry.register_unfinished(checkpoint_dir(workdir), card)
    log.info("registered unfinished run %s: epoch %d of %d, best PublicTest %.4f so far; continue with "
             "`ferbatch train --resume-from %s`", version, result.epochs_run, config.epochs,
             result.best_public_accuracy, version)
    return version


def calibrate(config: TrainConfig, classifier: keras.Model, data: FerData) -> tuple[keras.Model, dict | None]:
    """(model, record): a copy of `classifier` with PublicTest-chosen class biases folded in when the recipe
    asks (else `classifier` itself), and what was done, for the card. `classifier` is never changed, so a
    retried step cannot add the biases twice."""
    if config.calibration == "none":
        return classifier, None
    faces, labels = data.subset("PublicTest")
    probabilities = KerasClassifier(classifier, version="calibrating").predict(faces)
    guard = None
    if data.extra_holdout is not None:  # the extra folder's held-out fifth guards what it taught
        guard_faces, guard_labels = data.extra_holdout
        guard = (KerasClassifier(classifier, version="calibrating").predict(guard_faces), guard_labels)
    bias = fit_class_bias(probabilities, labels, fixed=CALIBRATION_OBJECTIVES[config.calibration], guard=guard)
    calibrated = keras.models.clone_model(classifier)
    calibrated.set_weights(classifier.get_weights())
    apply_class_bias(calibrated, bias)
    before = classification_metrics(labels, probabilities.argmax(axis=1))
    after = classification_metrics(labels, biased_predictions(probabilities, bias))
    log.info("calibration on PublicTest: biases %s; accuracy %.4f -> %.4f, macro-F1 %.4f -> %.4f",
             dict(zip(CLASS_NAMES, bias.round(2).tolist(), strict=True)), before["accuracy"], after["accuracy"],
             before["macro_f1"], after["macro_f1"])
    record = {
        "objective": config.calibration,
        "chosen_on": "PublicTest" if guard is None else "PublicTest, guarded by the extra folder's held-out faces",
        "logit_bias": dict(zip(CLASS_NAMES, bias.round(4).tolist(), strict=True)),
        **{f"PublicTest_{when}": {"accuracy": round(m["accuracy"], 4), "macro_f1": round(m["macro_f1"], 4)}
           for when, m in (("before", before), ("after", after))},
    }
    if guard is not None:
        record["guard"] = {"faces": len(guard[1]), "accuracy_before": round(float(np.mean(
            guard[0].argmax(axis=1) == guard[1])), 4), "accuracy_after": round(float(np.mean(
                biased_predictions(guard[0], bias) == guard[1])), 4)}
        log.info("calibration guard (%d held-out extra faces): accuracy %.4f -> %.4f", len(guard[1]),
                 record["guard"]["accuracy_before"], record["guard"]["accuracy_after"])
    return calibrated, record


# What a calibrated copy does not inherit from its source's card: its own identity, files and measurements.
_NOT_INHERITED = ("version", "created_at", "files", "model_bytes", "model_sha256", "metrics", "real_photos",
                  "calibration", "gate")


def calibrate_registered(registry: ModelRegistry, version: str, data_path: str | Path, report_dir: Path,
                         objective: str = "macro_f1", guard_folder: str | Path | None = None) -> str:
    """Register a copy of model `version` with class biases chosen on the FER2013 file's PublicTest folded in (what
    `calibration = objective` does at the end of training), evaluated on every split; returns its version.

    The source is left as it is; the copy's card keeps the source's recipe, data and history, records the
    biases and the source under `calibration`, and its recipe says `calibration = objective`, so a retrain
    that follows the current model's recipe calibrates again. guard_folder: a labelled folder (the extra
    folder the model trained beside) whose held-out fifth guards the biases, as in training."""
    source = registry.card(version)
    if source.get("calibration"):
        raise FerbatchError(f"model {version} is calibrated already ({source['calibration'].get('objective')})")
    from ferbatch.training._data import load_fer2013
    from ferbatch.training._evaluation import evaluate_splits

    data = load_fer2013(data_path)
    if guard_folder is not None:
        held_out = load_labelled_folder(guard_folder).held_out()
        data = replace(data, extra_holdout=held_out if len(held_out[1]) else None)
    calibrated, record = calibrate(TrainConfig(calibration=objective), registry.load_model(version), data)
    metrics = evaluate_splits(calibrated, data)
    card = {key: value for key, value in source.items() if key not in _NOT_INHERITED}
    card.update(created_at=datetime.now(UTC).isoformat(timespec="seconds"), metrics=metrics,
                calibration={**record, "calibrated_from": version}, role="model")
    if "training_config" in card and "ensemble" not in card["training_config"]:
        card["training_config"] = {**card["training_config"], "calibration": objective}
    report_dir.mkdir(parents=True, exist_ok=True)
    calibrated_version = registry.register(calibrated, card, _confusion_pictures(metrics, report_dir))
    log.info("registered %s: %s with PublicTest-chosen class biases", calibrated_version, version)
    return calibrated_version


def register(
    registry: ModelRegistry,
    config: TrainConfig,
    data: FerData,
    result: TrainResult,
    metrics: dict,
    report_dir: Path,
    calibration: dict | None = None,
    preset_name: str | None = None,
    role: str = "model",
    data_pictures: list[Path] = (),
) -> str:
    """Write curves and confusion matrices, build the card and register a new version.

    role: "model" (a candidate for promotion) or "member" (one network of an ensemble preset)."""
    pictures = [plots.training_curves(result.history, report_dir / "training_curves.png"),
                *_confusion_pictures(metrics, report_dir), *data_pictures]
    card = build_card(
        architecture=config.architecture,
        parameters=int(result.classifier.count_params()),
        training_config=config.to_dict(),
        data_summary=data.summary(),
        metrics=metrics,
        epochs_run=result.epochs_run,
        best_epoch=result.best_epoch,
        wall_time_s=result.wall_time_s,
        stopped_early=result.stopped_early,
        input_contract=INPUT_CONTRACT,
    )
    card["history"] = result.history
    card["calibration"] = calibration
    card.update(run_id=result.run_id, chunks=result.chunks, preset=preset_name, role=role)
    version = registry.register(result.classifier, card, pictures)
    log.info("registered model %s in %s", version, registry.root)
    for superseded in registry.remove_unfinished(result.run_id):
        log.info("removed %s: the run it held has finished as %s", superseded, version)
    return version


def _confusion_pictures(metrics: dict, report_dir: Path) -> list[Path]:
    return [plots.confusion_matrix_plot(values["confusion_matrix"],
                                        f"{split} ({mode}): accuracy {values['accuracy']:.3f}",
                                        report_dir / f"confusion_{split}_{mode}.png")
            for split, by_mode in metrics.items() for mode, values in by_mode.items()]


def promote(registry: ModelRegistry, version: str, policy: str = "auto", tolerance: float = 0.0) -> Promotion:
    """policy: "auto" (the PublicTest gate), "never" (--no-promote) or "force" (--force-promote)."""
    if policy not in ("auto", "never", "force"):
        raise ValueError(f"unknown promotion policy {policy!r}")
    if policy == "never":
        return Promotion(False, version, registry.current_version(), "--no-promote")
    decision = registry.promote(version, force=policy == "force", tolerance=tolerance)
    log.info("%s %s: %s", "promoted" if decision.promoted else "kept the current model, not", version,
             decision.reason)
    return decision


@dataclass(frozen=True)
class RetrainDecision:
    retrain: bool
    reason: str


def retrain_decision(
    registry: ModelRegistry,
    config: TrainConfig | EnsembleRecipe,
    data_path: str | Path,
    ferplus_labels: str | Path | None = None,
    extra_folder: str | Path | None = None,
    force: bool = False,
) -> RetrainDecision:
    """Retrain unless the current model was trained on these very files with this very recipe."""
    if force:
        return RetrainDecision(True, "forced")
    current = registry.current_version()
    if current is None:
        return RetrainDecision(True, "no current model")
    card = registry.card(current)
    sources = source_digests(data_path, ferplus_labels, extra_folder)
    if card.get("data", {}).get("sources") != sources:
        return RetrainDecision(True, f"training data differs from model {current}'s")
    if not _same_recipe(config, card.get("training_config")):
        return RetrainDecision(True, f"training config differs from model {current}'s")
    return RetrainDecision(False, f"model {current} was trained on the same data with the same config")


def _same_recipe(config: TrainConfig | EnsembleRecipe, on_card: dict | None) -> bool:
    """Compare through TrainConfig, so a card written before a setting existed reads as its default."""
    if isinstance(config, EnsembleRecipe):
        return (on_card or {}).get("ensemble") == config.to_dict() and _same_recipe(
            preset(config.member), on_card.get("member"))
    try:
        return on_card is not None and TrainConfig.from_dict(on_card) == config
    except (FerbatchError, TypeError):
        return False


def metrics_markdown(card: dict, promotion: Promotion | None = None) -> str:
    """A metrics table for people: Prefect artifacts, the README, closing notes."""
    lines = [f"## Model {card['version']} ({card['architecture']}, {card['parameters']:,} parameters)", ""]
    lines += ["| split | mode | accuracy | macro-F1 | " + " | ".join(f"{c} recall" for c in CLASS_NAMES) + " |"]
    lines += ["|" + "---|" * (4 + len(CLASS_NAMES))]
    for split, by_mode in card["metrics"].items():
        for mode, m in by_mode.items():
            recalls = " | ".join(f"{m['per_class'][c]['recall']:.3f}" for c in CLASS_NAMES)
            lines.append(f"| {split} | {mode} | {m['accuracy']:.4f} | {m['macro_f1']:.4f} | {recalls} |")
    lines += ["", f"epochs run {card['epochs_run']} (best {card['best_epoch']}), wall time {card['wall_time_s']} s, "
              f"labels {card['label_source']}"]
    if card.get("calibration"):
        biases = ", ".join(f"{c} {b:+.2f}" for c, b in card["calibration"]["logit_bias"].items() if b)
        lines.append(f"calibration ({card['calibration']['objective']}, on PublicTest): {biases or 'no change'}")
    if promotion is not None:
        lines.append(f"promotion: {'promoted' if promotion.promoted else 'not promoted'} ({promotion.reason})")
    return "\n".join(lines)
