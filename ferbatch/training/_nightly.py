"""The nightly retrain as plain steps; `flows/nightly.py` and `flows/retrain.py` wire them.

plan_nightly -> (skip | fine-tune | retrain). A fine-tune: load the data and the user's labelled faces, measure the
current model on the user holdout, fine-tune each of its networks from their weights within the time budget,
assemble, evaluate, register, then gate on PublicTest AND the user holdout. A refused candidate is remembered in
the registry (`refused.json`), so the same data and recipe from the same current model are not trained again.

Ensembles: every member network is fine-tuned from its own weights for a share of the budget and the members are
assembled as before. One fine-tuned member alone would be gated against the whole ensemble, which is about two
PublicTest points ahead of any single member of the shipped model (0.7008 vs 0.6768-0.6838): it would be refused
every time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from ferbatch.errors import FerbatchError, RegistryError
from ferbatch.models import ModelRegistry, Promotion, promotion_score
from ferbatch.models._cards import read_refused
from ferbatch.training._data import FerData, source_digests
from ferbatch.training._labelled import LabelledFaces, load_labelled_folder
from ferbatch.training._recipes import TrainConfig, recipe

log = logging.getLogger(__name__)

REFUSED_FILE = "refused.json"
FINE_TUNE_EPOCHS = 5  # the fine-tune's schedule; the time budget usually stops it earlier
FINE_TUNE_LR_FACTOR = 0.01  # of the recipe's peak rate; 0.1 cost the shipped members up to a point in one epoch
BUDGET_RESERVE = 0.2  # share of train.max_minutes kept for loading, evaluation and registration
USER_SHARE = 0.05  # the user's faces are repeated to about this share of a training epoch ...
USER_MAX_REPEAT = 20  # ... but at most this many times
FORCE_HINT = "`ferbatch nightly --force-retrain` trains it anyway"


@dataclass(frozen=True)
class NightlyPlan:
    action: str  # "skip", "fine_tune" or "retrain" (from scratch, with preset_name)
    reason: str
    preset_name: str | None = None
    base_version: str | None = None  # the current model when the plan was made
    key: str | None = None  # what a refused candidate of this plan is remembered by


def _follows(card: dict, preset_name: str) -> bool:
    """Whether the current model's card is of this recipe (a fine-tuned model keeps its base's preset)."""
    if card.get("preset"):
        return card["preset"] == preset_name
    from ferbatch.training._pipeline import _same_recipe

    return _same_recipe(recipe(preset_name), card.get("training_config"))


def candidate_key(action: str, sources: dict, recipe_settings: dict, base_version: str | None) -> str:
    payload = json.dumps({"action": action, "sources": sources, "recipe": recipe_settings, "base": base_version},
                         sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def _changes(old: dict, new: dict) -> str:
    changed = sorted(name for name in {*old, *new} if old.get(name) != new.get(name))
    return ", ".join(changed) or "none"


def plan_nightly(registry: ModelRegistry, data_path: str | Path, labels: str | Path | None = None,
                 extra_folder: str | Path | None = None, preset_name: str | None = None,
                 force: bool = False) -> NightlyPlan:
    """What tonight's retrain does. With no train.preset the nightly follows the current model's recipe and only
    fine-tunes it, when the training files changed since it was trained; naming another recipe trains that one
    from scratch once. A plan whose candidate the gate already refused is skipped unless forced."""
    sources = source_digests(data_path, labels, extra_folder)
    current = registry.current_version()
    if current is None:
        if preset_name is None:
            return NightlyPlan("skip", "no current model and no train.preset to train one: run `ferbatch train "
                                       "--preset NAME` once (see `ferbatch presets`)")
        plan = NightlyPlan("retrain", "no current model", preset_name)
    else:
        card = registry.card(current)
        if preset_name is not None and not _follows(card, preset_name):
            plan = NightlyPlan("retrain", f"train.preset {preset_name} is not model {current}'s recipe "
                                          f"({card.get('preset') or 'unnamed'})", preset_name, current)
        elif (card.get("data") or {}).get("sources") != sources:
            changed = _changes((card.get("data") or {}).get("sources") or {}, sources)
            plan = NightlyPlan("fine_tune", f"training data differs from model {current}'s ({changed})",
                               base_version=current)
        elif force:
            plan = NightlyPlan("fine_tune", "forced", base_version=current)
        else:
            return NightlyPlan("skip", f"model {current} was trained on the same data with the same config",
                               base_version=current)
    settings = recipe(plan.preset_name).to_dict() if plan.action == "retrain" else {
        "epochs": FINE_TUNE_EPOCHS, "learning_rate_factor": FINE_TUNE_LR_FACTOR}
    key = candidate_key(plan.action, sources, settings, plan.base_version)
    plan = NightlyPlan(plan.action, plan.reason if not force else f"forced ({plan.reason})", plan.preset_name,
                       plan.base_version, key)
    refused = refused_candidates(registry).get(key)
    if refused and not force:
        return NightlyPlan("skip", f"the same {'fine-tune' if plan.action == 'fine_tune' else 'retrain'} on the "
                                   f"same data was refused on {refused['at'][:10]} ({refused['version']}: "
                                   f"{refused['reason']}); {FORCE_HINT}", plan.preset_name, plan.base_version, key)
    trained = None if force else _registered_candidate(registry, plan, sources, settings)
    if trained:  # registered, then interrupted before the gate recorded a verdict: not trained twice
        return NightlyPlan("skip", f"the same {'fine-tune' if plan.action == 'fine_tune' else 'retrain'} on the "
                                   f"same data is registered already as {trained} (the run ended before its gate); "
                                   f"`ferbatch models promote {trained}` gates it; {FORCE_HINT}",
                           plan.preset_name, plan.base_version, key)
    return plan


def _registered_candidate(registry: ModelRegistry, plan: NightlyPlan, sources: dict, settings: dict) -> str | None:
    """A version other than the current one that this plan would train again: the same base (or recipe), the same
    data and the same fine-tune settings, on its card."""
    current = registry.current_version()
    for version in reversed(registry.versions()):
        if version == current:
            continue
        try:
            card = registry.card(version)
        except RegistryError:
            continue
        if (card.get("data") or {}).get("sources") != sources:
            continue
        tuned = card.get("fine_tune") or {}
        if plan.action == "fine_tune" and tuned.get("from") == plan.base_version and tuned.get("settings") == settings:
            return version
        if plan.action == "retrain" and not tuned and card.get("preset") == plan.preset_name \
                and card.get("role") != "member":
            return version
    return None


def refused_candidates(registry: ModelRegistry) -> dict[str, dict]:
    """The refused candidates on record; a record that is not valid is a warning (the night goes on)."""
    path = Path(registry.root) / REFUSED_FILE
    if not path.is_file():
        return {}
    try:
        return read_refused(path)
    except RegistryError as exc:
        log.warning("%s", exc)
        return {}


def record_refused(registry: ModelRegistry, plan: NightlyPlan, version: str, reason: str) -> None:
    """Remember that this plan's candidate was refused, so the next night does not train it again."""
    if plan.key is None:
        return
    entries = refused_candidates(registry)
    entries[plan.key] = {"version": version, "reason": reason, "action": plan.action, "base": plan.base_version,
                         "at": datetime.now(UTC).isoformat(timespec="seconds")}
    path = Path(registry.root) / REFUSED_FILE
    if path.is_file() and not entries.keys() - {plan.key}:  # a record that was not valid is kept aside, not lost
        try:
            read_refused(path)
        except RegistryError:
            aside = path.with_name(f"{REFUSED_FILE}.invalid-{datetime.now(UTC):%Y%m%dT%H%M%SZ}")
            os.replace(path, aside)
            log.warning("%s: moved to %s; a new record of refused candidates starts", path, aside.name)
    fd, tmp = tempfile.mkstemp(prefix=f".{REFUSED_FILE}.", dir=path.parent)
    with os.fdopen(fd, "w") as handle:
        json.dump(entries, handle, indent=2)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


# ---- the fine-tune steps ----


@dataclass(frozen=True)
class FineTuneSetup:
    base_version: str
    configs: tuple[TrainConfig, ...]  # one per network, already with the fine-tune's settings
    ensemble: dict | None  # the base card's ensemble recipe (members, views), None for one network
    started_at: float  # time.time() when the nightly retrain began: the budget counts from here
    deadline: float  # no training epoch ends after this


def fine_tune_config(config: TrainConfig) -> TrainConfig:
    return config.with_overrides(epochs=FINE_TUNE_EPOCHS, learning_rate=config.learning_rate * FINE_TUNE_LR_FACTOR,
                                 early_stopping_patience=FINE_TUNE_EPOCHS, calibration="none")


def fine_tune_setup(registry: ModelRegistry, base_version: str, max_minutes: float,
                    started_at: float | None = None) -> FineTuneSetup:
    """The recipe of each network of `base_version`, turned into a short low-rate fine-tune, and the deadline."""
    card = registry.card(base_version)
    settings = card.get("training_config") or {}
    try:
        if "ensemble" in settings:
            member = TrainConfig.from_dict(settings["member"])
            configs = [member.with_overrides(seed=seed) for seed in settings["ensemble"]["seeds"]]
        else:
            configs = [TrainConfig.from_dict(settings)]
    except (FerbatchError, KeyError, TypeError) as exc:
        raise FerbatchError(f"model {base_version}: its card names no recipe to fine-tune ({exc})") from None
    started_at = time.time() if started_at is None else started_at
    deadline = started_at + max_minutes * 60 * (1 - BUDGET_RESERVE)
    return FineTuneSetup(base_version, tuple(fine_tune_config(c) for c in configs), settings.get("ensemble"),
                         started_at, deadline)


def user_faces(extra_folder: str | Path | None) -> LabelledFaces | None:
    """The user's labelled faces, split into training and holdout (None without an extra folder)."""
    return load_labelled_folder(extra_folder) if extra_folder is not None else None


def holdout_accuracy(model, labelled: LabelledFaces | None) -> float | None:
    """Plain accuracy on the user holdout; None when there is no holdout face."""
    from ferbatch.scoring import KerasClassifier

    if labelled is None or not labelled.holdout.any():
        return None
    faces, labels = labelled.held_out()
    predicted = KerasClassifier(model, version="holdout").predict(faces).argmax(axis=1)
    return float((predicted == labels).mean())


def base_networks(model) -> list:
    """The networks inside a registered model: a plain network itself, or every member of a serving wrapper."""
    import keras

    inner = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    return inner or [model]


def fine_tune_training_set(data: FerData) -> tuple[np.ndarray, np.ndarray, int]:
    """FER2013 Training plus the user's training faces, these repeated so they are not lost among 28,709."""
    training = data.split == 0
    images, labels = data.images[training], data.labels[training]
    user = data.source_row[training] == -1
    n_user = int(user.sum())
    if not n_user:
        return images, labels, 1
    repeat = int(np.clip(round(USER_SHARE * (len(labels) - n_user) / n_user), 1, USER_MAX_REPEAT))
    extra_images = np.repeat(images[user], repeat - 1, axis=0)
    extra_labels = np.repeat(labels[user], repeat - 1)
    return np.concatenate([images, extra_images]), np.concatenate([labels, extra_labels]), repeat


def fine_tune_network(config: TrainConfig, data: FerData, workdir: Path, network, index: int, count: int,
                      deadline: float):
    """Fine-tune one network from its weights until its share of the time left (at least one epoch)."""
    from ferbatch.training._loop import train
    from ferbatch.training._pipeline import checkpoint_dir

    network.name = config.architecture  # a member inside a wrapper is named <architecture>__m<i>
    stop_at = time.time() + max(deadline - time.time(), 0) / (count - index)
    images, labels, repeat = fine_tune_training_set(data)
    log.info("fine-tuning network %d of %d (%s, seed %d) on %d faces (user faces x%d) until %s", index + 1, count,
             config.architecture, config.seed, len(labels), repeat,
             datetime.fromtimestamp(stop_at, UTC).strftime("%H:%M:%S UTC"))
    return train(config, images, labels, *data.subset("PublicTest"), checkpoint_dir(workdir), False,
                 stop_at=stop_at, init_weights=network)


def time_for_another(results: list, deadline: float) -> bool:
    """Whether one more network can train an epoch before the deadline, at the slowest epoch seen so far. The
    first network always trains; a later one without the time keeps its weights, so the run ends in budget."""
    epochs = [s for result in results if result is not None for s in result.history.get("epoch_s", [])]
    return not epochs or time.time() + max(epochs) <= deadline


def assemble_fine_tuned(results: list, networks: list, setup: FineTuneSetup, name: str):
    """The fine-tuned networks (a network left out for time: its base weights) served as the base model was."""
    from ferbatch.models import serving_model
    from ferbatch.training._loop import same_architecture

    if setup.ensemble is None:
        return results[0].classifier
    architecture = setup.configs[0].architecture
    chosen = [same_architecture(result.classifier, architecture) if result is not None else network
              for result, network in zip(results, networks, strict=True)]
    return serving_model(chosen, crops=setup.ensemble["crops"], flip=setup.ensemble["flip"], name=name)


def register_fine_tuned(registry: ModelRegistry, setup: FineTuneSetup, data: FerData, model, results: list,
                        metrics: dict, report_dir: Path, data_pictures: list[Path], gate_figures: dict,
                        user_faces: dict | None) -> str:
    """Register the candidate with the base's recipe and preset, how it was fine-tuned, and the gate's figures."""
    from ferbatch.models import INPUT_CONTRACT, build_card
    from ferbatch.training import _plots as plots
    from ferbatch.training._pipeline import _confusion_pictures

    base = registry.card(setup.base_version)
    members = [{"seed": config.seed, "fine_tuned": True, "epochs_run": result.epochs_run,
                "best_epoch": result.best_epoch, "best_public_accuracy": round(result.best_public_accuracy, 4),
                "wall_time_s": result.wall_time_s,
                "public_test_curve": [round(a, 4) for a in result.history.get("val_accuracy", [])],
                "chunks": result.chunks} if result is not None else
               {"seed": config.seed, "fine_tuned": False, "why": "no time left for an epoch: base weights kept"}
               for config, result in zip(setup.configs, results, strict=True)]
    trained = [result for result in results if result is not None]
    curves = (plots.training_curves(results[0].history, report_dir / "training_curves.png") if len(results) == 1
              else plots.member_curves(members, report_dir / "training_curves.png"))
    card = build_card(
        architecture=base["architecture"], parameters=int(model.count_params()),
        training_config=base["training_config"], data_summary=data.summary(), metrics=metrics,
        epochs_run=sum(r.epochs_run for r in trained), best_epoch=results[0].best_epoch if len(results) == 1 else 0,
        wall_time_s=round(sum(r.wall_time_s for r in trained), 2), stopped_early=False, input_contract=INPUT_CONTRACT,
    )
    card.update(
        version=registry.new_version_name(f"{base['architecture']}-finetuned"),
        preset=base.get("preset"), role=base.get("role", "model"), calibration=None,
        history=results[0].history if len(results) == 1 else {},
        fine_tune={
            "from": setup.base_version,
            "settings": {"epochs": FINE_TUNE_EPOCHS, "learning_rate_factor": FINE_TUNE_LR_FACTOR},
            "budget_minutes": round((setup.deadline - setup.started_at) / 60 / (1 - BUDGET_RESERVE), 2),
            "stopped_at_deadline": any(not r.finished for r in trained) or len(trained) < len(results),
            "networks": members,
            "user_faces": user_faces,
        },
        gate=gate_figures,
    )
    if base.get("views"):
        card["views"] = base["views"]
    version = registry.register(model, card, [curves, *_confusion_pictures(metrics, report_dir), *data_pictures])
    log.info("registered fine-tuned model %s (from %s)", version, setup.base_version)
    return version


def gate_figures(registry: ModelRegistry, base_version: str, metrics: dict, labelled: LabelledFaces | None,
                 holdout_before: float | None, holdout_after: float | None) -> dict:
    """PublicTest and user-holdout accuracy, before (the current model) and after (the candidate)."""
    after_public = float(metrics["PublicTest"]["plain"]["accuracy"])
    return {
        "PublicTest": {"before": round(promotion_score(registry.card(base_version)), 4),
                       "after": round(after_public, 4)},
        "user_holdout": {"faces": 0 if labelled is None else int(labelled.holdout.sum()),
                         "before": None if holdout_before is None else round(holdout_before, 4),
                         "after": None if holdout_after is None else round(holdout_after, 4)},
    }


def gate(registry: ModelRegistry, version: str, figures: dict, tolerance: float = 0.0) -> Promotion:
    """Promote only if neither PublicTest nor the user holdout is worse than the current model's (within
    `tolerance`). A holdout with no face leaves PublicTest alone to decide."""
    holdout = figures["user_holdout"]
    current = registry.current_version()
    if holdout["before"] is not None and holdout["after"] + tolerance < holdout["before"]:
        decision = Promotion(False, version, current,
                             f"user holdout accuracy {holdout['after']:.4f} is below the current "
                             f"{holdout['before']:.4f} ({holdout['faces']} faces, tolerance {tolerance:.4f})")
    else:
        decision = registry.promote(version, tolerance=tolerance)
        if holdout["before"] is not None:
            decision = Promotion(decision.promoted, version, decision.previous,
                                 f"{decision.reason}; user holdout accuracy {holdout['after']:.4f}, current "
                                 f"{holdout['before']:.4f} ({holdout['faces']} faces)")
        else:
            decision = Promotion(decision.promoted, version, decision.previous,
                                 f"{decision.reason}; no user holdout faces")
    log.info("%s %s: %s", "promoted" if decision.promoted else "kept the current model, not", version,
             decision.reason)
    return decision


def _figure(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def nightly_markdown(plan: NightlyPlan, result: dict | None = None) -> str:
    """What the nightly retrain did, for the flow's artifact: the decision, and the gate's figures."""
    lines = ["## Nightly retrain", "", f"- decision: **{plan.action.replace('_', '-')}** ({plan.reason})"]
    if plan.action == "skip":
        lines.append(f"- to train anyway: {FORCE_HINT.split(' trains')[0]}")
        return "\n".join(lines) + "\n"
    if result is None:
        return "\n".join(lines) + "\n"
    lines.append(f"- candidate: {result.get('version')}, {'promoted' if result.get('promoted') else 'not promoted'}"
                 f" ({result.get('reason')})")
    figures = result.get("gate")
    if figures:
        holdout = figures["user_holdout"]
        lines += ["", "| figure | current model | candidate |", "|---|---|---|",
                  f"| PublicTest accuracy | {_figure(figures['PublicTest']['before'])} | "
                  f"{_figure(figures['PublicTest']['after'])} |",
                  f"| user holdout accuracy ({holdout['faces']} faces) | {_figure(holdout['before'])} | "
                  f"{_figure(holdout['after'])} |"]
    if result.get("minutes") is not None:
        lines += ["", f"fine-tune took {result['minutes']:.1f} of {result.get('budget_minutes')} minutes"]
    if not result.get("promoted"):
        lines.append(f"\nThe refusal is recorded: the same data and recipe are not trained again; {FORCE_HINT}.")
    return "\n".join(lines) + "\n"
