"""The retrain pipeline as plain typed steps; `flows/retrain.py` wires them as Prefect tasks.

prepare_data -> fit -> calibrate -> assess -> register -> promote
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

import keras

from ferbatch import plots
from ferbatch.calibration import apply_class_bias, biased_predictions, fit_class_bias
from ferbatch.classes import CLASS_NAMES
from ferbatch.data import FerData, load_training_data, source_digests
from ferbatch.errors import FerbatchError
from ferbatch.evaluation import classification_metrics, evaluate_splits
from ferbatch.model import INPUT_CONTRACT
from ferbatch.registry import ModelRegistry, Promotion, build_card
from ferbatch.scoring import KerasClassifier
from ferbatch.training import TrainConfig, TrainResult, train

log = logging.getLogger(__name__)


def work_dir(models_dir: str | Path) -> Path:
    """Where an in-progress training run keeps its checkpoints and report (hidden from the registry)."""
    return Path(models_dir) / ".work"


def prepare_data(
    data_path: str | Path,
    ferplus_labels: str | Path | None,
    extra_folder: str | Path | None,
    report_dir: Path,
) -> FerData:
    """Load and validate the data, and write the data report pictures."""
    data = load_training_data(data_path, ferplus_labels, extra_folder)
    shutil.rmtree(report_dir, ignore_errors=True)  # pictures of an earlier run must not reach this card
    plots.write_data_report(data, report_dir)
    summary = data.summary()
    log.info("data: %d faces used of %d rows; rejected %s", summary["rows_used"], summary["rows_read"],
             summary["rejected"] or "none")
    return data


def fit(config: TrainConfig, data: FerData, workdir: Path, resume: bool) -> TrainResult:
    return train(config, *data.subset("Training"), *data.subset("PublicTest"), workdir / "checkpoints", resume)


def calibrate(config: TrainConfig, classifier: keras.Model, data: FerData) -> dict | None:
    """Fold PublicTest-chosen class biases into `classifier` when the recipe asks; what was done, for the card."""
    if config.calibration == "none":
        return None
    faces, labels = data.subset("PublicTest")
    probabilities = KerasClassifier(classifier, version="calibrating").predict(faces)
    bias = fit_class_bias(probabilities, labels)
    apply_class_bias(classifier, bias)
    before = classification_metrics(labels, probabilities.argmax(axis=1))
    after = classification_metrics(labels, biased_predictions(probabilities, bias))
    log.info("calibration on PublicTest: biases %s; accuracy %.4f -> %.4f, macro-F1 %.4f -> %.4f",
             dict(zip(CLASS_NAMES, bias.round(2).tolist(), strict=True)), before["accuracy"], after["accuracy"],
             before["macro_f1"], after["macro_f1"])
    return {
        "objective": config.calibration,
        "chosen_on": "PublicTest",
        "logit_bias": dict(zip(CLASS_NAMES, bias.round(4).tolist(), strict=True)),
        **{f"PublicTest_{when}": {"accuracy": round(m["accuracy"], 4), "macro_f1": round(m["macro_f1"], 4)}
           for when, m in (("before", before), ("after", after))},
    }


def assess(classifier: keras.Model, data: FerData) -> dict:
    """PublicTest and PrivateTest metrics, plain and with flip test-time augmentation."""
    return evaluate_splits(classifier, data)


def register(
    registry: ModelRegistry,
    config: TrainConfig,
    data: FerData,
    result: TrainResult,
    metrics: dict,
    report_dir: Path,
    calibration: dict | None = None,
) -> str:
    """Write curves and confusion matrices, build the card and register a new version."""
    pictures = [plots.training_curves(result.history, report_dir / "training_curves.png")]
    for split, by_mode in metrics.items():
        for mode, values in by_mode.items():
            title = f"{split} ({mode}): accuracy {values['accuracy']:.3f}"
            pictures.append(
                plots.confusion_matrix_plot(values["confusion_matrix"], title,
                                            report_dir / f"confusion_{split}_{mode}.png")
            )
    pictures += sorted(p for p in report_dir.glob("*.png") if p not in pictures)
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
    version = registry.register(result.classifier, card, pictures)
    log.info("registered model %s in %s", version, registry.root)
    return version


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
    config: TrainConfig,
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


def _same_recipe(config: TrainConfig, on_card: dict | None) -> bool:
    """Compare through TrainConfig, so a card written before a setting existed reads as its default."""
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
