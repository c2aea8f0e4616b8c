"""The nightly retrain as plain steps; `flows/nightly.py` and `flows/retrain.py` wire them.

plan_nightly -> (skip | fine-tune | retrain). A fine-tune: load the data and the user's labelled faces, measure the
current model on the user holdout (and time it), fine-tune each of its networks from their weights on the user's
faces plus a FER2013 replay sample sized to the budget, stopping at a step deadline that leaves the evaluation and
registration their time, assemble, evaluate, register, then gate: the user holdout first, PublicTest as a guard
(docs/retraining.md). A refused candidate is remembered in the registry (`refused.json`), so the same data and
recipe from the same current model are not trained again.

Ensembles: every member network is fine-tuned from its own weights for a share of the budget and the members are
assembled as before. One fine-tuned member alone would be gated against the whole ensemble, which is about two
PublicTest points ahead of any single member of the shipped model (0.7008 vs 0.6768-0.6838): it would be refused
every time.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ferbatch.classes import NUM_CLASSES
from ferbatch.errors import FerbatchError, RegistryError
from ferbatch.models import ModelRegistry, Promotion, promotion_score
from ferbatch.models._cards import read_refused
from ferbatch.training._data import FerData, source_digests
from ferbatch.training._recipes import TrainConfig, recipe

if TYPE_CHECKING:
    from ferbatch.config import FerbatchConfig

log = logging.getLogger(__name__)

REFUSED_FILE = "refused.json"
# The fine-tune: one pass over a sample sized to the budget, in FER2013 Training's class mix, where the user's faces
# of a class take up to USER_SHARE of that class's places (at most USER_MAX_REPEAT times each) and a FER2013 replay
# sample the rest. Its rate: the recipe's peak times FINE_TUNE_DOSE / steps, within FINE_TUNE_LR_FACTORS, so a
# fast machine's long sample and a slow one's short sample move the weights about as far (on shipped networks:
# a tenth for 20 steps, or 0.03 for 60 to 100, gained 19 to 26 holdout points within half a PublicTest point; a
# tenth for 60 steps cost 1.7 points, and 0.03 for 20 steps gained 3).
FINE_TUNE_DOSE = 2.0
FINE_TUNE_LR_FACTORS = (0.03, 0.1)
USER_SHARE = 0.5
USER_MAX_REPEAT = 30
MIN_STEPS = 10  # a later network that cannot fit this many steps keeps its weights
MIN_HOLDOUT = 20  # fewer held-out faces than this and PublicTest decides alone
DEFAULT_PUBLIC_TOLERANCE = 0.015  # train.public_tolerance: PublicTest a better user holdout may cost
# The budget: measured at run time where it can be, with these allowances (2-core figures in docs/retraining.md).
SPEED_PROBE_FACES = 512  # PublicTest faces the current model is timed on
EVALUATION_MARGIN = 1.2  # evaluating the candidate, against the current model's timed speed
REGISTER_S = 10.0  # assembling, saving and registering the candidate, its pictures, the gate (1 s measured)
TRAIN_PER_PREDICT = 3.5  # a training step costs about this many times reading its faces (first network's plan)
NETWORK_OVERHEAD_S = 8.0  # building, first step and checkpoint of a network, before one is measured
NETWORK_TAIL_S = 2.0  # the checkpoint and inference copy after a network's last step
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
    settings = recipe(plan.preset_name).to_dict() if plan.action == "retrain" else fine_tune_settings()
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


def tonight(config: FerbatchConfig, registry: ModelRegistry, force: bool = False) -> tuple[NightlyPlan, Path | None]:
    """(plan, labelled folder) of tonight's retrain from the configuration: what `ferbatch nightly` asks before
    Prefect starts and the flow asks again. A labelling folder with nothing sorted into its class folders yet
    is not training data yet (None)."""
    from ferbatch.training._labelled import with_labelled_faces

    train = config.train
    extra_folder = with_labelled_faces(train.extra_folder)
    if train.data is None:
        return NightlyPlan("skip", "no train.data configured"), extra_folder
    return plan_nightly(registry, train.data, train.labels, extra_folder, train.preset, force), extra_folder


def _csv_header_problem(path: Path, columns: tuple[str, ...], what: str) -> str | None:
    """Why `path` is not a readable CSV with these columns in its header line (None: it is)."""
    import gzip

    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8", errors="replace") as handle:
            header = handle.readline()
    except (OSError, EOFError) as exc:
        return f"{path}: not a readable {what} file ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
    missing = [c for c in columns if c not in [name.strip() for name in header.split(",")]]
    return f"{path}: not a {what} file (no column {', '.join(missing)})" if missing else None


def nightly_problems(config: FerbatchConfig) -> list[str]:
    """Every mistake in the configuration that would stop tonight's run, one line each that names the
    ferbatch.toml key to set: folders, output, models, training data and the output folder's lock. Reads only:
    nothing is created or locked, so `ferbatch nightly` asks before it starts Prefect."""
    from ferbatch.reports import ReportStore
    from ferbatch.training._data import FERPLUS_COLUMNS, REQUIRED_COLUMNS
    from ferbatch.training._labelled import class_folders

    problems = []
    score, train = config.score, config.train
    if not score.folders:
        problems.append("score.folders is not set: set it in ferbatch.toml to the photo folders the nightly run "
                        "scores")
    problems += [f"score.folders: {folder}: no such folder" for folder in score.folders if not os.path.lexists(folder)]
    store = ReportStore(score.out)
    try:
        store.check_writable()
        store.check_free()
    except FerbatchError as exc:
        busy = "another ferbatch run is writing" in str(exc)
        problems.append(f"score.out: {score.out}: another ferbatch run is writing into this folder; wait for it to "
                        "finish or set score.out to another folder" if busy else f"score.out: {exc}")
    registry = ModelRegistry.at(config.models_dir)
    try:
        current = registry.current_version()
        if current is not None:
            registry.verify_model(current)
        elif train.data is None or train.preset is None:
            problems.append(f"models_dir: {registry.root} has no current model to score with: set models_dir to a "
                            "registry with one (or train.data and train.preset to train one tonight)")
    except FerbatchError as exc:
        problems.append(f"models_dir: {exc}")
    files = (("train.data", train.data, REQUIRED_COLUMNS, "FER2013 CSV"),
             ("train.labels", train.labels, ("Usage", *FERPLUS_COLUMNS), "FER+ label CSV"))
    for key, path, columns, what in files:
        if path is None:
            continue
        if not Path(path).is_file():
            problems.append(f"{key}: {path}: no such file")
        elif problem := _csv_header_problem(Path(path), columns, what):
            problems.append(f"{key}: {problem}")
    if train.labels is not None and train.data is None:
        problems.append("train.labels is set but train.data is not: set train.data to the FER2013 CSV they label")
    if train.extra_folder is not None:
        try:
            class_folders(train.extra_folder)
        except FerbatchError as exc:
            problems.append(f"train.extra_folder: {exc}")
    problems += [f"train.real_photos: {folder}: no such folder" for folder in train.real_photos
                 if not Path(folder).is_dir()]
    return problems


def check_nightly(config: FerbatchConfig) -> None:
    """Raise one FerbatchError listing every problem nightly_problems finds, a line each."""
    problems = nightly_problems(config)
    if problems:
        raise FerbatchError("\n".join(problems))


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
    deadline: float  # the whole retrain (training, evaluation, registration, gate) ends by then
    views: int = 1  # network views the served model runs per face (networks x crops x mirrors)

    @property
    def budget_minutes(self) -> float:
        return round((self.deadline - self.started_at) / 60, 2)


def fine_tune_config(config: TrainConfig) -> TrainConfig:
    """One pass over a budget-sized sample (the rate decays to 0 over it with a cosine recipe), no compilation by
    XLA (no faster a step on 2 cores, and seconds to compile each network), no calibration. The rate is set per
    network, from its steps (learning_rate_factor)."""
    return config.with_overrides(epochs=1, early_stopping_patience=1, calibration="none", jit_compile=False)


def learning_rate_factor(steps: int) -> float:
    """The share of the recipe's peak rate a fine-tune of `steps` steps trains at."""
    low, high = FINE_TUNE_LR_FACTORS
    return float(np.clip(FINE_TUNE_DOSE / max(steps, 1), low, high))


def fine_tune_setup(registry: ModelRegistry, base_version: str, max_minutes: float,
                    started_at: float | None = None) -> FineTuneSetup:
    """The recipe of each network of `base_version`, turned into a short fine-tune, and the deadline."""
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
    views = int((card.get("views") or {}).get("count") or len(configs))
    return FineTuneSetup(base_version, tuple(fine_tune_config(c) for c in configs), settings.get("ensemble"),
                         started_at, started_at + max_minutes * 60, views)


def user_faces_summary(data: FerData) -> dict | None:
    """The user's labelled faces in `data`: trained on, held out, rejected (None without any)."""
    training = int((data.source_row[data.split == 0] < 0).sum())
    holdout = 0 if data.extra_holdout is None else len(data.extra_holdout[1])
    rejected = {k: v for k, v in data.rejected.items() if k.startswith("extra_folder_")}
    if not (training or holdout or rejected):
        return None
    return {"faces": training + holdout, "training": training, "holdout": holdout, "rejected": rejected}


@dataclass(frozen=True)
class CurrentFigures:
    """The current model, measured before training: its user-holdout accuracy and how fast it reads faces."""

    holdout_accuracy: float | None
    seconds_per_face: float  # the whole served model, through the classifier that evaluation uses


def measure_current(model, data: FerData) -> CurrentFigures:
    """The current model's accuracy on the user holdout, and its speed on PublicTest faces (after a first call
    that builds the predict function): what evaluating the candidate will cost, and what a training step will."""
    from ferbatch.scoring import KerasClassifier

    classifier = KerasClassifier(model, version="current")
    faces, _ = data.subset("PublicTest")
    probe = faces[:SPEED_PROBE_FACES]
    classifier.predict(probe[:32])
    started = time.perf_counter()
    classifier.predict(probe)
    seconds_per_face = (time.perf_counter() - started) / max(len(probe), 1)
    return CurrentFigures(holdout_accuracy(model, data), seconds_per_face)


def holdout_accuracy(model, data: FerData) -> float | None:
    """Plain accuracy on the user holdout; None when there is no holdout face."""
    from ferbatch.scoring import KerasClassifier

    if data.extra_holdout is None or not len(data.extra_holdout[1]):
        return None
    faces, labels = data.extra_holdout
    predicted = KerasClassifier(model, version="holdout").predict(faces).argmax(axis=1)
    return float((predicted == labels).mean())


def training_deadline(setup: FineTuneSetup, data: FerData, current: CurrentFigures) -> float:
    """When training must stop so that evaluating (PublicTest, PrivateTest, the holdout) and registering the
    candidate, at the speed the current model showed, end by the deadline."""
    from ferbatch.training._evaluation import EVAL_SPLITS

    faces = sum(len(data.subset(split)[1]) for split in EVAL_SPLITS)
    faces += 0 if data.extra_holdout is None else len(data.extra_holdout[1])
    return setup.deadline - (faces * current.seconds_per_face * EVALUATION_MARGIN + REGISTER_S)


def base_networks(model) -> list:
    """The networks inside a registered model: a plain network itself, or every member of a serving wrapper."""
    import keras

    inner = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    return inner or [model]


def fine_tune_training_set(data: FerData, size: int, seed: int) -> tuple[np.ndarray, np.ndarray, float]:
    """About `size` training faces in FER2013 Training's class mix: of each class's places, the user's faces of
    that class take up to USER_SHARE (each repeated at most USER_MAX_REPEAT times) and a replay sample of FER2013
    faces of the class the rest. So the user's faces teach how their photos look without making their classes
    more common (half of every batch Neutral or Happy cost a network 8.5 PublicTest points in 20 steps), and the
    replay keeps what the network knew. The sample depends only on the data, `size` and `seed`; the batches
    shuffle it, so a run the deadline cuts short saw each part in its share. Returns (faces, labels, the mean
    number of times a user face appears)."""
    training = data.split == 0
    images, labels = data.images[training], data.labels[training]
    user = data.source_row[training] < 0
    rng = np.random.default_rng([seed, size])
    fer_labels = labels[~user]
    prior = np.bincount(fer_labels, minlength=NUM_CLASSES) / max(len(fer_labels), 1)
    user_part, replay_part = [], []
    for label in range(NUM_CLASSES):
        places = math.ceil(prior[label] * size - 1e-9)  # rounded up: the sample fills its `size` // batch steps
        mine = np.flatnonzero(user & (labels == label))
        theirs = np.flatnonzero(~user & (labels == label))
        n_mine = min(round(USER_SHARE * places), USER_MAX_REPEAT * len(mine)) if len(mine) else 0
        user_part.append(np.resize(rng.permutation(mine), n_mine))
        replay_part.append(rng.choice(theirs, min(places - n_mine, len(theirs)), replace=False))
    users, replay = np.concatenate(user_part).astype(int), np.concatenate(replay_part).astype(int)
    rows = np.concatenate([users, replay])
    return images[rows], labels[rows], round(len(users) / max(int(user.sum()), 1), 2)


@dataclass(frozen=True)
class NetworkPlan:
    steps: int  # batches in the network's sample
    step_deadline: float  # time.time() after which it starts no training step
    step_s: float  # the speed the plan assumed


def plan_network(runs: list[dict], index: int, count: int, train_until: float, setup: FineTuneSetup,
                 current: CurrentFigures, now: float | None = None) -> NetworkPlan | None:
    """How many steps network `index` trains, sized to its share of the training time left at the speed the
    networks before it showed (the first: from the current model's reading speed). None: a later network that
    cannot fit MIN_STEPS keeps its weights; the first always trains."""
    now = time.time() if now is None else now
    done = [run for run in runs if run.get("steps", 0) > 1]  # a lone step's time is mostly tracing
    if done:
        step_s = max(run["step_s"] for run in done)
        overhead_s = max(run["overhead_s"] for run in done)
    else:
        batch = setup.configs[index].batch_size
        step_s = TRAIN_PER_PREDICT * batch * current.seconds_per_face / setup.views  # one view of one network
        overhead_s = NETWORK_OVERHEAD_S
    share = (train_until - now) / (count - index)
    steps = int((share - overhead_s) / max(step_s, 1e-6))
    if steps < MIN_STEPS:
        if index > 0:
            return None
        steps = max(steps, 1)
    # The sample's last step ends by the network's share; the deadline cuts it if the steps run slower.
    return NetworkPlan(steps, now + share - NETWORK_TAIL_S, step_s)


def fine_tune_network(config: TrainConfig, data: FerData, workdir: Path, network, index: int, count: int,
                      plan: NetworkPlan) -> dict:
    """Fine-tune one network from its weights on its planned sample until its step deadline. Returns the
    TrainResult under "result" and what the next network's plan needs (steps, step_s, overhead_s)."""
    from ferbatch.training._loop import train
    from ferbatch.training._pipeline import checkpoint_dir

    started = time.perf_counter()
    network.name = config.architecture  # a member inside a wrapper is named <architecture>__m<i>
    factor = learning_rate_factor(plan.steps)
    config = config.with_overrides(learning_rate=config.learning_rate * factor)
    images, labels, repeat = fine_tune_training_set(data, plan.steps * config.batch_size, config.seed)
    log.info("fine-tuning network %d of %d (%s, seed %d): %d steps of %d faces (user faces x%s, the rest a "
             "FER2013 replay sample) at %.2g of the peak rate until %s", index + 1, count, config.architecture,
             config.seed, plan.steps, config.batch_size, repeat, factor,
             datetime.fromtimestamp(plan.step_deadline, UTC).strftime("%H:%M:%S UTC"))
    public = data.subset("PublicTest")
    result = train(config, images, labels, *public, checkpoint_dir(workdir), False, init_weights=network,
                   step_deadline=plan.step_deadline, validate=False)
    wall = time.perf_counter() - started
    steps = int(sum(result.history.get("steps", [0])))
    step_s = float(result.history.get("step_s", [plan.step_s])[-1]) or plan.step_s
    return {"result": result, "steps": steps, "planned_steps": plan.steps, "step_s": step_s,
            "learning_rate_factor": round(factor, 4),
            "overhead_s": round(max(wall - steps * step_s, 0.0), 2), "user_repeat": repeat,
            "wall_s": round(wall, 2)}


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


def register_fine_tuned(registry: ModelRegistry, setup: FineTuneSetup, data: FerData, model, runs: list,
                        metrics: dict, report_dir: Path, data_pictures: list[Path], gate_figures: dict,
                        user_faces: dict | None) -> str:
    """Register the candidate with the base's recipe and preset, how it was fine-tuned, and the gate's figures.
    `runs`: fine_tune_network's record per network, None for a network that kept its weights."""
    from ferbatch.models import INPUT_CONTRACT, build_card
    from ferbatch.training import _plots as plots
    from ferbatch.training._pipeline import _confusion_pictures

    base = registry.card(setup.base_version)
    members = [{"seed": config.seed, "fine_tuned": True, "steps": run["steps"], "planned_steps": run["planned_steps"],
                "step_s": round(run["step_s"], 3), "cut_short": run["result"].cut_short,
                "user_repeat": run["user_repeat"], "learning_rate_factor": run["learning_rate_factor"],
                "wall_time_s": run["wall_s"],
                "loss": [round(v, 4) for v in run["result"].history.get("loss", [])],
                "chunks": run["result"].chunks} if run is not None else
               {"seed": config.seed, "fine_tuned": False, "why": "no time left for its steps: base weights kept"}
               for config, run in zip(setup.configs, runs, strict=True)]
    trained = [run["result"] for run in runs if run is not None]
    curves = (plots.training_curves(trained[0].history, report_dir / "training_curves.png") if len(runs) == 1
              else plots.member_curves(members, report_dir / "training_curves.png"))
    card = build_card(
        architecture=base["architecture"], parameters=int(model.count_params()),
        training_config=base["training_config"], data_summary=data.summary(), metrics=metrics,
        epochs_run=sum(r.epochs_run for r in trained), best_epoch=trained[0].best_epoch if len(runs) == 1 else 0,
        wall_time_s=round(sum(r.wall_time_s for r in trained), 2), stopped_early=False, input_contract=INPUT_CONTRACT,
    )
    card.update(
        version=registry.new_version_name(f"{base['architecture']}-finetuned"),
        preset=base.get("preset"), role=base.get("role", "model"), calibration=None,
        history=trained[0].history if len(runs) == 1 else {},
        fine_tune={
            "from": setup.base_version,
            "settings": fine_tune_settings(),
            "budget_minutes": setup.budget_minutes,
            # the deadline ended a sample early, kept a network's weights, or left one fewer steps than MIN_STEPS
            "stopped_at_deadline": any(run is None or run["result"].cut_short or run["planned_steps"] < MIN_STEPS
                                       for run in runs),
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


def fine_tune_settings() -> dict:
    """How the nightly fine-tune trains (on the card, and part of what a refused candidate is remembered by)."""
    return {"epochs": 1, "learning_rate_factor": f"{FINE_TUNE_DOSE} / steps, within {list(FINE_TUNE_LR_FACTORS)}",
            "user_share_of_class": USER_SHARE, "user_max_repeat": USER_MAX_REPEAT,
            "sample": "FER2013 Training's class mix, user faces + FER2013 replay, sized to the budget"}


def more_faces_needed(holdout_faces: int) -> int:
    """About how many more labelled faces bring the holdout to MIN_HOLDOUT (every HOLDOUT_EVERY-th is held out)."""
    from ferbatch.training._labelled import HOLDOUT_EVERY

    return max(MIN_HOLDOUT - holdout_faces, 0) * HOLDOUT_EVERY


def too_few_holdout_note(holdout_faces: int) -> str | None:
    """The plain words for a holdout too small to decide on, or None when it is large enough."""
    if holdout_faces >= MIN_HOLDOUT:
        return None
    return (f"only {holdout_faces} held-out face{'s' if holdout_faces != 1 else ''} (fewer than {MIN_HOLDOUT}): "
            f"PublicTest decides alone; label about {more_faces_needed(holdout_faces)} more faces")


def gate_figures(registry: ModelRegistry, base_version: str, metrics: dict, holdout_faces: int,
                 holdout_before: float | None, holdout_after: float | None) -> dict:
    """PublicTest and user-holdout accuracy, before (the current model) and after (the candidate)."""
    after_public = float(metrics["PublicTest"]["plain"]["accuracy"])
    holdout = {"faces": int(holdout_faces),
               "before": None if holdout_before is None else round(holdout_before, 4),
               "after": None if holdout_after is None else round(holdout_after, 4),
               "enough": holdout_faces >= MIN_HOLDOUT}
    if not holdout["enough"]:
        holdout["note"] = too_few_holdout_note(holdout_faces)
    return {"PublicTest": {"before": round(promotion_score(registry.card(base_version)), 4),
                           "after": round(after_public, 4)},
            "user_holdout": holdout}


def gate(registry: ModelRegistry, version: str, figures: dict, tolerance: float = 0.0,
         public_tolerance: float = DEFAULT_PUBLIC_TOLERANCE) -> Promotion:
    """The fine-tune's gate (docs/retraining.md): with at least MIN_HOLDOUT held-out faces, a better user holdout
    promotes unless PublicTest fell more than `public_tolerance`, and a worse one refuses; an unchanged holdout,
    or too few faces, leaves PublicTest to decide alone (not below the current, within `tolerance`)."""
    holdout, public = figures["user_holdout"], figures["PublicTest"]
    current = registry.current_version()
    faces = f"{holdout['faces']} faces"
    if holdout["faces"] >= MIN_HOLDOUT and holdout["before"] is not None:
        change = f"user holdout accuracy {holdout['before']:.4f} -> {holdout['after']:.4f} ({faces})"
        drop = public["before"] - public["after"]
        if holdout["after"] < holdout["before"]:
            decision = Promotion(False, version, current, f"{change}: worse on your faces")
        elif holdout["after"] > holdout["before"] and drop > public_tolerance + 1e-9:
            decision = Promotion(False, version, current,
                                 f"{change}, but PublicTest accuracy {public['before']:.4f} -> {public['after']:.4f} "
                                 f"fell {drop * 100:.1f} points, more than train.public_tolerance "
                                 f"({public_tolerance * 100:.1f})")
        elif holdout["after"] > holdout["before"]:
            promoted = registry.promote(version, force=True)
            decision = Promotion(True, version, promoted.previous,
                                 f"{change}, PublicTest accuracy {public['before']:.4f} -> {public['after']:.4f} "
                                 f"(within train.public_tolerance, {public_tolerance * 100:.1f} points)")
        else:
            decision = registry.promote(version, tolerance=tolerance)
            decision = Promotion(decision.promoted, version, decision.previous,
                                 f"user holdout unchanged ({holdout['after']:.4f}, {faces}): {decision.reason}")
    else:
        decision = registry.promote(version, tolerance=tolerance)
        note = too_few_holdout_note(holdout["faces"]) or "no user holdout faces"
        decision = Promotion(decision.promoted, version, decision.previous, f"{decision.reason}; {note}")
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
        note = too_few_holdout_note(holdout["faces"])
        if note:
            lines += ["", f"**Too few held-out faces**: {note}."]
    if result.get("minutes") is not None:
        lines += ["", f"fine-tune took {result['minutes']:.1f} of {result.get('budget_minutes')} minutes"]
    if not result.get("promoted"):
        lines.append(f"\nThe refusal is recorded: the same data and recipe are not trained again; {FORCE_HINT}.")
    return "\n".join(lines) + "\n"
