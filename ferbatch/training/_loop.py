"""Train a FER classifier from in-memory uint8 arrays, with per-epoch checkpoints and resume.

Model selection (best epoch, LR plateaus, early stopping) looks at PublicTest, and, when the run trains beside
an extra folder, equally at that folder's held-out fifth (selection_score); PrivateTest never enters this
module.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import keras
import numpy as np

from ferbatch.classes import CLASS_NAMES, IMAGE_SIZE, NUM_CLASSES
from ferbatch.errors import FerbatchError
from ferbatch.models import (
    NEGATIVE_CLASSES,
    create_model,
    inference_copy,
    serving_model,
    widen_into,
    with_augmentation,
)
from ferbatch.training._recipes import Augmentation, TrainConfig

log = logging.getLogger(__name__)


class FaceBatches(keras.utils.PyDataset):
    """Shuffled (x, y, sample weight) batches from uint8 arrays, y one-hot or the given soft targets; the last
    partial batch is dropped.

    Dropping the remainder avoids a TensorFlow 2.21 oneDNN crash seen on odd-sized training batches.
    The shuffle order (and a crop recipe's augmentation) depends only on (seed, epoch), so a resumed run sees
    the same batches.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        batch_size: int,
        seed: int,
        class_weight: np.ndarray | None = None,
        first_epoch: int = 0,
        crop: int = 0,
        augmentation: Augmentation | None = None,
        targets: np.ndarray | None = None,
        teacher: keras.Model | None = None,
        teacher_weight: float | np.ndarray = 0.0,
        teacher_views: str = "augmented",
    ) -> None:
        super().__init__()
        self.teacher, self.teacher_weight, self.teacher_views = teacher, teacher_weight, teacher_views
        self.crop, self.augmentation = crop, augmentation or Augmentation()
        if len(images) < batch_size:
            raise FerbatchError(f"only {len(images)} training faces, fewer than one batch of {batch_size}")
        self.images, self.labels, self.batch_size, self.seed = images, labels, batch_size, seed
        if targets is not None and targets.shape != (len(labels), NUM_CLASSES):
            raise FerbatchError(f"targets must be ({len(labels)}, {NUM_CLASSES}), not {targets.shape}")
        self.targets = np.eye(NUM_CLASSES, dtype="float32")[labels] if targets is None else targets.astype("float32")
        self.sample_weight = (
            class_weight[labels].astype("float32") if class_weight is not None else np.ones(len(labels), "float32")
        )
        self.epoch = first_epoch
        self._order = self._permutation()

    def _permutation(self) -> np.ndarray:
        return np.random.default_rng([self.seed, self.epoch]).permutation(len(self.labels))

    def __len__(self) -> int:
        return len(self.labels) // self.batch_size

    def __getitem__(self, index: int):
        rows = self._order[index * self.batch_size : (index + 1) * self.batch_size]
        if self.crop:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            x, unstretched = augmented_views(self.images[rows], self.crop, self.augmentation, rng)
            x, unstretched = x[..., None], unstretched[..., None]
        else:
            x = unstretched = self.images[rows, :, :, None].astype("float32")
        y = self.targets[rows]
        if self.teacher is not None:
            seen = unstretched if self.teacher_views == "unstretched" else x
            weight = (self.teacher_weight[rows, None] if isinstance(self.teacher_weight, np.ndarray)
                      else self.teacher_weight)
            y = (1 - weight) * y + weight * teacher_probabilities(self.teacher, seen)
        return x, y, self.sample_weight[rows]

    def start_epoch(self, epoch: int) -> None:
        """Called by the training loop as each epoch begins (0-based, as Keras counts)."""
        self.epoch = epoch
        self._order = self._permutation()

    def on_epoch_end(self) -> None:
        # Keras also calls this after peeking at a batch before training; the epoch comes from start_epoch.
        pass


def teacher_probabilities(teacher: keras.Model, crops: np.ndarray) -> np.ndarray:
    """A served (48x48 input) teacher's probabilities on (N, side, side, 1) crops. Each crop is padded back to
    48 by reflection, so a crop network's centre crop inside the teacher is the very crop the student sees."""
    pad = (IMAGE_SIZE - crops.shape[1]) // 2
    faces = crops if pad == 0 else np.pad(crops, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="reflect")
    return np.asarray(teacher.predict_on_batch(faces), dtype=np.float32)


def augmented_crops(faces: np.ndarray, side: int, augmentation: Augmentation, rng: np.random.Generator
                    ) -> np.ndarray:
    """Random `side`-pixel crops of (N, 48, 48) uint8 faces, as float32 0..255, with the recipe's augmentation:
    rotation, scale and width stretch about the centre (reflected border), mirror, and random erasing (Zhong
    et al. 2017: 2-40% of the crop, aspect 0.3-3.3, filled with noise).
    """
    return augmented_views(faces, side, augmentation, rng)[0]


def augmented_views(faces: np.ndarray, side: int, augmentation: Augmentation, rng: np.random.Generator
                    ) -> tuple[np.ndarray, np.ndarray]:
    """augmented_crops, and the very same crops without their width stretch (the one array twice when the
    recipe does not stretch): what an "unstretched" teacher scores."""
    out = np.empty((len(faces), side, side), dtype=np.float32)
    unstretched = np.empty_like(out) if augmentation.stretch else out
    margin = IMAGE_SIZE - side
    centre = (IMAGE_SIZE / 2 - 0.5, IMAGE_SIZE / 2 - 0.5)
    for i, face in enumerate(faces):
        # Draw every random number whether or not it is used, so each image consumes a fixed count.
        angle = rng.uniform(-1, 1) * augmentation.rotation * 360
        scale = 1 + rng.uniform(-1, 1) * augmentation.zoom
        top, left = rng.integers(0, margin + 1, size=2)
        mirror = augmentation.flip and rng.random() < 0.5
        erase = rng.random() < augmentation.erasing
        area, log_aspect, ey, ex = rng.uniform(0.02, 0.4), rng.uniform(np.log(0.3), np.log(1 / 0.3)), *rng.random(2)
        # Drawn only by recipes that stretch, so every other recipe keeps its batches (and its resumes).
        width = np.exp(rng.uniform(-1, 1) * np.log1p(augmentation.stretch)) if augmentation.stretch else 1.0
        noise = None
        for target, stretch in [(out, width)] + ([(unstretched, 1.0)] if augmentation.stretch else []):
            image = face
            if angle or scale != 1 or stretch != 1:
                matrix = cv2.getRotationMatrix2D(centre, angle, scale)
                if stretch != 1:  # then widen (or narrow) about the centre column
                    matrix = np.array([[stretch, 0, centre[0] * (1 - stretch)], [0, 1, 0]]) @ np.vstack(
                        [matrix, [0, 0, 1]])
                image = cv2.warpAffine(face, matrix, (IMAGE_SIZE, IMAGE_SIZE), flags=cv2.INTER_LINEAR,
                                       borderMode=cv2.BORDER_REFLECT_101)
            crop = image[top : top + side, left : left + side].astype(np.float32)
            if mirror:
                crop = crop[:, ::-1]
            if erase:
                aspect = np.exp(log_aspect)
                h = min(side, max(1, round(np.sqrt(area * side * side * aspect))))
                w = min(side, max(1, round(np.sqrt(area * side * side / aspect))))
                y0, x0 = int(ey * (side - h + 1)), int(ex * (side - w + 1))
                crop = crop.copy()
                if noise is None:  # one patch of noise for both views
                    noise = rng.uniform(0, 255, size=(h, w))
                crop[y0 : y0 + h, x0 : x0 + w] = noise
            target[i] = crop
    return out, unstretched


def centre_crops(faces: np.ndarray, side: int) -> np.ndarray:
    """The centre `side`-pixel square of (N, 48, 48) faces (what a crop network is evaluated on)."""
    top = (IMAGE_SIZE - side) // 2
    return np.asarray(faces)[:, top : top + side, top : top + side]


def balanced_class_weights(labels: np.ndarray) -> np.ndarray:
    """n / (k * count) per class, as in scikit-learn's 'balanced'; absent classes get weight 0."""
    counts = np.bincount(labels, minlength=NUM_CLASSES).astype("float64")
    with np.errstate(divide="ignore"):
        weights = np.where(counts > 0, counts.sum() / (NUM_CLASSES * counts), 0.0)
    return weights


# The best epoch's weights, without optimizer state (Keras's save_weights of a compiled model keeps it, which
# doubles an unfinished version's size). Runs checkpointed before held them in LEGACY_BEST_WEIGHTS.
BEST_WEIGHTS = "best.weights.npz"
LEGACY_BEST_WEIGHTS = "best.weights.h5"


def _save_best_weights(classifier: keras.Model, workdir: Path) -> None:
    tmp = workdir / "best.weights.tmp.npz"
    np.savez(tmp, *classifier.get_weights())
    os.replace(tmp, workdir / BEST_WEIGHTS)


def _load_best_weights(classifier: keras.Model, workdir: Path) -> None:
    if (workdir / BEST_WEIGHTS).is_file():
        with np.load(workdir / BEST_WEIGHTS) as saved:
            classifier.set_weights([saved[f"arr_{i}"] for i in range(len(saved.files))])
    elif (workdir / LEGACY_BEST_WEIGHTS).is_file():
        classifier.load_weights(workdir / LEGACY_BEST_WEIGHTS)


class _Bookkeeping(keras.callbacks.Callback):
    """Per-epoch checkpoint, best-on-PublicTest weights, LR plateaus and early stopping, all resumable."""

    def __init__(self, workdir: Path, config: TrainConfig, classifier: keras.Model, state: dict,
                 batches: FaceBatches, stop_at: float | None = None,
                 monitor: tuple[np.ndarray, np.ndarray] | None = None, step_deadline: float | None = None) -> None:
        super().__init__()
        self.workdir, self.config, self.classifier, self.batches = workdir, config, classifier, batches
        self.monitor = monitor
        self.state = state
        self.stop_at = stop_at  # time.time() after which no new epoch starts (the chunk's deadline)
        self.step_deadline = step_deadline  # time.time() after which no new training step starts
        self._steps: list[float] = []  # seconds of each training step of the epoch
        self._step_started = 0.0

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = dict(logs or {})
        lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
        row = {k: float(v) for k, v in logs.items() if k in ("loss", "accuracy", "val_loss", "val_accuracy")}
        row["lr"] = lr
        if self.monitor is not None:
            row.update(monitored_figures(self.classifier, *self.monitor, self.config))
        row["epoch_s"] = round(time.perf_counter() - self.state.pop("_epoch_started", time.perf_counter()), 2)
        row["steps"] = len(self._steps)
        row["step_s"] = round(steady_step_seconds(self._steps), 4)
        row["first_step_s"] = round(self._steps[0], 2) if self._steps else 0.0  # with tracing the step function
        history = self.state["history"]
        for key, value in row.items():
            history.setdefault(key, []).append(value)
        validated = "val_accuracy" in row
        val_acc = row.get("val_accuracy", -math.inf)
        # Without validation there is nothing to choose on: the latest weights are the ones kept.
        improved = selection_score(row) > best_selection_score(self.state) if validated else True
        if improved:
            self.state.update(best_val_accuracy=val_acc, best_epoch=epoch + 1, wait=0)
            _save_best_weights(self.classifier, self.workdir)
        else:
            self.state["wait"] += 1
        if self.config.lr_schedule == "plateau" and not improved:
            self.state["plateau_wait"] += 1
            if self.state["plateau_wait"] >= self.config.plateau_patience:
                self.model.optimizer.learning_rate = lr * 0.5
                self.state["plateau_wait"] = 0
        elif improved:
            self.state["plateau_wait"] = 0
        self.state["epochs_done"] = epoch + 1
        self.state["wall_time_s"] += row["epoch_s"]
        chunk = self.state["chunks"][-1]
        chunk.update(last_epoch=epoch + 1, wall_time_s=round(chunk["wall_time_s"] + row["epoch_s"], 2))
        if self.state["wait"] >= self.config.early_stopping_patience:
            self.state["stopped_early"] = True
            self.model.stop_training = True
        if self.stop_at is not None and time.time() + row["epoch_s"] > self.stop_at:
            self.model.stop_training = True  # the next epoch would end past the deadline
        self._save_checkpoint()
        log.info(
            "epoch %d/%d  loss %.4f  acc %.4f  %s  lr %.2e%s%s",
            epoch + 1, self.config.epochs, row.get("loss", math.nan), row.get("accuracy", math.nan),
            f"PublicTest loss {row['val_loss']:.4f} acc {val_acc:.4f}" if validated else
            f"{row['steps']} of {len(self.batches)} steps, {row['step_s']:.2f} s each", lr,
            "" if self.monitor is None else (
                f"  held out: acc {row['holdout_accuracy']:.4f} neutral {row['holdout_neutral_recall']:.4f}"
                f" negative bias {row['holdout_negative_bias']:+.3f}"),
            "  (best)" if improved else "",
        )

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.state["_epoch_started"] = time.perf_counter()
        self._steps = []
        self.batches.start_epoch(epoch)

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        self._step_started = time.perf_counter()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self._steps.append(time.perf_counter() - self._step_started)
        # Stop before a step that would end past the deadline, at the speed the steady steps show (after the first
        # step alone, only a deadline already past stops it: that step's time is mostly tracing).
        expected = steady_step_seconds(self._steps) if len(self._steps) > 1 else 0.0
        if self.step_deadline is not None and time.time() + expected > self.step_deadline:
            self.model.stop_training = True
            if len(self._steps) < len(self.batches):  # batches were left: the deadline cut the epoch short
                self.state["cut_short"] = True

    def _save_checkpoint(self) -> None:
        # Write then rename, so an interruption never leaves a half-written checkpoint behind.
        tmp_model = self.workdir / "checkpoint.tmp.keras"
        self.model.save(tmp_model)
        os.replace(tmp_model, self.workdir / "checkpoint.keras")
        state = {k: v for k, v in self.state.items() if not k.startswith("_")}
        tmp_state = self.workdir / "state.tmp.json"
        tmp_state.write_text(json.dumps(state, indent=1))
        os.replace(tmp_state, self.workdir / "state.json")


def steady_step_seconds(steps: list[float]) -> float:
    """Seconds a training step takes once running: the mean without the first step, which also traces (and,
    with jit_compile, compiles) the step function; 0.0 before any step."""
    steady = steps[1:] or steps
    return float(np.mean(steady)) if steady else 0.0


def monitored_figures(classifier: keras.Model, faces: np.ndarray, labels: np.ndarray, config: TrainConfig
                      ) -> dict[str, float]:
    """Accuracy, Neutral recall and negative-share bias (share read Angry/Disgust/Fear/Sad minus the true
    share) of the training classifier on held-out faces, through the evaluation view PublicTest uses."""
    view = _evaluation_view(faces, config)[..., None].astype("float32")
    predicted = np.argmax(np.asarray(classifier.predict(view, batch_size=256, verbose=0)), axis=1)
    negative = np.array([name in NEGATIVE_CLASSES for name in CLASS_NAMES])
    neutral_class = CLASS_NAMES.index("Neutral")
    neutral = labels == neutral_class
    return {
        "holdout_accuracy": float(np.mean(predicted == labels)),
        "holdout_neutral_recall": float(np.mean(predicted[neutral] == neutral_class)) if neutral.any() else math.nan,
        "holdout_negative_bias": float(negative[predicted].mean() - negative[labels].mean()),
    }


@dataclass
class TrainResult:
    classifier: keras.Model  # float32 inference model with the best PublicTest weights
    history: dict[str, list[float]]
    epochs_run: int
    best_epoch: int
    best_public_accuracy: float
    wall_time_s: float
    stopped_early: bool
    resumed: bool
    # False when the chunk's deadline came first: the work folder then holds what resuming needs.
    finished: bool = True
    run_id: str = ""
    chunks: list[dict] = field(default_factory=list)  # one per resumed stretch: epochs, wall time, machine
    cut_short: bool = False  # the step deadline ended an epoch before its last batch


def selection_score(row: dict) -> float:
    """What an epoch is chosen on: PublicTest accuracy, or with a held-out extra folder (faces in the wild) the
    mean of the two accuracies, so the kept weights read both FER2013 and the photos the run learnt from."""
    public = row.get("val_accuracy", -math.inf)
    return public if "holdout_accuracy" not in row else (public + row["holdout_accuracy"]) / 2


def best_selection_score(state: dict) -> float:
    """The kept epoch's selection score, from the history (so a run saved before the score existed resumes)."""
    epoch = state["best_epoch"]
    if epoch < 1:
        return -math.inf
    return selection_score({key: values[epoch - 1] for key, values in state["history"].items()
                            if len(values) >= epoch})


def _fresh_state(config: TrainConfig) -> dict:
    return {
        "run_id": uuid.uuid4().hex[:12],
        "config": config.to_dict(),
        "history": {},
        "epochs_done": 0,
        "best_val_accuracy": -math.inf,
        "best_epoch": 0,
        "wait": 0,
        "plateau_wait": 0,
        "wall_time_s": 0.0,
        "stopped_early": False,
        "chunks": [],
    }


def _machine() -> dict:
    return {"host": platform.node(), "cpus": os.cpu_count(), "backend": keras.backend.backend(),
            "processor": platform.processor() or platform.machine(), "accelerator": _accelerator()}


def _accelerator() -> str | None:
    """The GPU a chunk trained on under JAX or torch (the accelerator backends); None on CPU or TensorFlow,
    whose device query would be the loop's only TensorFlow API."""
    try:
        backend = keras.backend.backend()
        if backend == "jax":
            import jax

            device = jax.devices()[0]
            return None if device.platform == "cpu" else str(device.device_kind)
        if backend == "torch":
            import torch

            return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except Exception:  # a label on the card must never stop a training run
        return None
    return None


def _load_resume_state(workdir: Path, config: TrainConfig) -> dict | None:
    state_file, checkpoint = workdir / "state.json", workdir / "checkpoint.keras"
    if not (state_file.is_file() and checkpoint.is_file()):
        return None
    state = json.loads(state_file.read_text())
    # Everything but the epoch budget and the post-training calibration must match: resuming may extend
    # a run or calibrate it afresh, never change how its weights were trained.
    free = ("epochs", "calibration")
    saved = {k: v for k, v in TrainConfig.from_dict(state["config"]).to_dict().items() if k not in free}
    wanted = {k: v for k, v in config.to_dict().items() if k not in free}
    if saved != wanted:
        raise FerbatchError(
            f"{workdir}: the checkpoint there was made with a different training config; "
            "resume with the same settings or start without --resume"
        )
    return state


def _evaluation_view(faces: np.ndarray, config: TrainConfig) -> np.ndarray:
    return centre_crops(faces, config.crop) if config.crop else np.asarray(faces)


def _compile(model: keras.Model, config: TrainConfig, steps_per_epoch: int) -> None:
    learning_rate: float | keras.optimizers.schedules.LearningRateSchedule = config.learning_rate
    if config.lr_schedule == "cosine":
        # One warm-up epoch, then cosine decay; a one-epoch run (a quick check) skips the warm-up.
        warmup = steps_per_epoch if config.epochs > 1 else 0
        learning_rate = keras.optimizers.schedules.CosineDecay(
            0.0 if warmup else config.learning_rate,
            max(steps_per_epoch * config.epochs - warmup, 1),
            warmup_target=config.learning_rate if warmup else None,
            warmup_steps=warmup,
        )
    if config.optimizer == "sgd":
        optimizer = keras.optimizers.SGD(
            learning_rate, momentum=config.momentum, nesterov=True, weight_decay=config.weight_decay
        )
    else:
        optimizer = keras.optimizers.AdamW(learning_rate, weight_decay=config.weight_decay)
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
        metrics=["accuracy"],
        jit_compile=config.jit_compile,
    )


def train(
    config: TrainConfig,
    train_images: np.ndarray,
    train_labels: np.ndarray,
    public_images: np.ndarray,
    public_labels: np.ndarray,
    workdir: str | Path,
    resume: bool = False,
    stop_at: float | None = None,
    init_weights: keras.Model | None = None,
    train_targets: np.ndarray | None = None,
    teacher: keras.Model | None = None,
    teacher_weights: np.ndarray | None = None,
    monitor: tuple[np.ndarray, np.ndarray] | None = None,
    step_deadline: float | None = None,
    validate: bool = True,
) -> TrainResult:
    """Train on Training, select on PublicTest; checkpoint into `workdir` every epoch.

    teacher_weights: (N,) the batch teacher's share per training face (default config.teacher_weight for all).
    monitor: (faces, labels) measured every epoch beside PublicTest and kept in the history (the extra folder's
    held-out faces); it chooses nothing by itself.

    train_targets: (N, 7) soft targets for the training faces (FER+ votes, a teacher's mix) instead of their
    one-hot labels; class weights still follow the labels. teacher: a served model that scores every augmented
    batch, mixed into the targets with config.teacher_weight (a recipe whose teacher_views is not "centre").

    stop_at: a time.time() deadline; no epoch starts that would end after it, and the result is then
    `finished=False` with the work folder holding what `resume=True` needs. init_weights: a model of the same
    architecture (or a serving wrapper around one) whose weights a fresh run starts from.

    step_deadline: a time.time() after which no training step starts (checked after every batch, at the speed
    the steps show): an epoch it cuts short still ends as an epoch (validated, checkpointed, counted done) and
    the result says `cut_short`. validate=False trains without a PublicTest pass after each epoch and keeps
    the latest weights (best_public_accuracy is then -inf): for a caller that evaluates the model itself.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(config.seed)
    state = _load_resume_state(workdir, config) if resume else None
    resumed = state is not None
    if state is None:
        state = _fresh_state(config)
        for stale in ("checkpoint.keras", "state.json", BEST_WEIGHTS, LEGACY_BEST_WEIGHTS):
            (workdir / stale).unlink(missing_ok=True)

    batches = FaceBatches(
        train_images,
        train_labels,
        config.batch_size,
        config.seed,
        balanced_class_weights(train_labels) if config.class_weights else None,
        first_epoch=state["epochs_done"],
        crop=config.crop,
        augmentation=config.augmentation,
        targets=train_targets,
        teacher=teacher,
        teacher_weight=config.teacher_weight if teacher_weights is None else teacher_weights,
        teacher_views=config.teacher_views,
    )
    if resumed:
        trainer = keras.saving.load_model(workdir / "checkpoint.keras")
        trainer.jit_compile = config.jit_compile
        # A crop recipe trains the classifier itself; a whole-face one wraps it in augmentation layers.
        classifier = trainer if config.crop else trainer.get_layer(config.architecture)
        log.info("resuming from %s after epoch %d", workdir, state["epochs_done"])
    else:
        mean = float(train_images.mean() / 255.0)
        variance = float(train_images.var() / 255.0**2)
        start = starting_network(init_weights, config.architecture) if init_weights is not None else None
        if start is not None:  # the weights were trained behind the starting network's input scaling
            mean, variance = input_scaling(start)
        classifier = create_model(
            config.architecture, input_side=config.crop or IMAGE_SIZE, pixel_mean=mean, pixel_variance=variance,
            dtype_policy=config.precision,
        )
        if start is not None:
            start_from(classifier, start, config.seed)
            log.info("starting from the weights of %s (%s)", init_weights.name, start.name)
        trainer = classifier if config.crop else with_augmentation(classifier, config.augmentation, config.seed)
        _compile(trainer, config, len(batches))

    _add_run_identity(state)
    bookkeeping = _Bookkeeping(workdir, config, classifier, state, batches, stop_at, monitor, step_deadline)
    state["config"] = config.to_dict()
    already_done = state["epochs_done"] >= config.epochs or state["stopped_early"]
    if not already_done:
        state["chunks"].append({"started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                                "first_epoch": state["epochs_done"] + 1, "last_epoch": state["epochs_done"],
                                "wall_time_s": 0.0, **_machine()})
        trainer.fit(
            batches,
            epochs=config.epochs,
            initial_epoch=state["epochs_done"],
            validation_data=(_evaluation_view(public_images, config)[..., None].astype("float32"),
                             np.eye(NUM_CLASSES)[public_labels]) if validate else None,
            validation_batch_size=256,
            callbacks=[bookkeeping],
            shuffle=False,  # FaceBatches shuffles by (seed, epoch); Keras's own shuffle would not resume
            verbose=0,
        )
    _load_best_weights(classifier, workdir)
    served = inference_copy(classifier, config.architecture)
    if config.crop:
        served = serving_model([served], crops=1, flip=False, name=config.architecture)
    return TrainResult(
        classifier=served,
        history=state["history"],
        epochs_run=state["epochs_done"],
        best_epoch=state["best_epoch"],
        best_public_accuracy=state["best_val_accuracy"],
        wall_time_s=round(state["wall_time_s"], 2),
        stopped_early=state["stopped_early"],
        resumed=resumed,
        finished=state["epochs_done"] >= config.epochs or state["stopped_early"],
        run_id=state["run_id"],
        chunks=state["chunks"],
        cut_short=bool(state.get("cut_short")),
    )


def input_scaling(classifier: keras.Model) -> tuple[float, float]:
    """(mean, variance) of the pixels scaled to 0..1 that a classifier's "normalise" layer assumes."""
    normaliser = classifier.get_layer("normalise")
    return (float(np.ravel(keras.ops.convert_to_numpy(normaliser.mean))[0]),
            float(np.ravel(keras.ops.convert_to_numpy(normaliser.variance))[0]))


def _add_run_identity(state: dict) -> None:
    """A run id and chunk list for a checkpoint written before they existed (one chunk, from its history)."""
    state.setdefault("run_id", uuid.uuid4().hex[:12])
    if "chunks" not in state:
        done = state["epochs_done"]
        state["chunks"] = [{"first_epoch": 1, "last_epoch": done, "host": "unrecorded",
                            "wall_time_s": round(sum(state["history"].get("epoch_s", [])), 2)}] if done else []


# Added channels start as copies of existing ones; a little noise lets them learn something else.
WIDENING_NOISE = 0.01


def starting_network(model: keras.Model, architecture: str) -> keras.Model:
    """The network a run of `architecture` starts from: one of that architecture, or else the one network of
    another (which `start_from` widens), alone or inside a serving wrapper."""
    try:
        return same_architecture(model, architecture)
    except FerbatchError:
        inner = [layer for layer in model.layers if isinstance(layer, keras.Model)]
        if len(inner) > 1:
            raise
        return inner[0] if inner else model


def start_from(classifier: keras.Model, start: keras.Model, seed: int) -> None:
    """Give a new classifier the weights of `start`: as they are for the same architecture, widened (outputs
    unchanged) for a narrower network of the same layers."""
    if start.name.split("__")[0] == classifier.name:
        classifier.set_weights(start.get_weights())
        return
    try:
        widen_into(start, classifier, seed, noise=WIDENING_NOISE)
    except ValueError as error:
        raise FerbatchError(f"cannot start a {classifier.name} run from model {start.name!r}: {error}") from None


def same_architecture(model: keras.Model, architecture: str) -> keras.Model:
    """`model` itself, or the one network of that architecture inside a serving wrapper."""
    if model.name == architecture and not any(isinstance(layer, keras.Model) for layer in model.layers):
        return model
    inner = [layer for layer in model.layers if isinstance(layer, keras.Model)]
    if len(inner) == 1 and inner[0].name.split("__")[0] == architecture:
        return inner[0]
    raise FerbatchError(f"cannot start a {architecture} run from model {model.name!r}: not one {architecture} network")
