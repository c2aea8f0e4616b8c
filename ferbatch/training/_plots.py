"""PNG pictures people look at: the data report, training curves and confusion matrices."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; batch machines have no display
import matplotlib.pyplot as plt
import numpy as np

from ferbatch.classes import CLASS_NAMES, SPLITS
from ferbatch.training._data import FerData


def _save(figure: plt.Figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def class_distribution(data: FerData, path: Path) -> Path:
    counts = data.class_counts()
    figure, ax = plt.subplots(figsize=(9, 4))
    width = 0.8 / len(SPLITS)
    positions = np.arange(len(CLASS_NAMES))
    for i, split in enumerate(SPLITS):
        ax.bar(positions + i * width, counts[split], width, label=f"{split} ({sum(counts[split])})")
    ax.set_xticks(positions + width, CLASS_NAMES)
    ax.set_ylabel("faces")
    ax.set_title(f"Class distribution per split (labels: {data.label_source})")
    ax.legend()
    return _save(figure, path)


FACES_PICTURE = "sample_faces.png"  # faces of the data itself: for the run's own report, never a card


def sample_faces(data: FerData, path: Path, per_class: int = 8, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    figure, axes = plt.subplots(len(CLASS_NAMES), per_class, figsize=(per_class * 1.1, len(CLASS_NAMES) * 1.2))
    for row, name in enumerate(CLASS_NAMES):
        candidates = np.flatnonzero(data.labels == row)
        chosen = rng.choice(candidates, size=min(per_class, len(candidates)), replace=False)
        for col in range(per_class):
            ax = axes[row, col]
            ax.axis("off")
            if col < len(chosen):
                ax.imshow(data.images[chosen[col]], cmap="gray", vmin=0, vmax=255)
        axes[row, 0].set_title(name, loc="left", fontsize=9)
    return _save(figure, path)


def pixel_histogram(data: FerData, path: Path) -> Path:
    histogram = np.bincount(data.images.ravel(), minlength=256)
    figure, ax = plt.subplots(figsize=(7, 3.5))
    ax.bar(np.arange(256), histogram, width=1.0, color="grey")
    ax.set_xlabel("grey value")
    ax.set_ylabel("pixels")
    ax.set_title(f"Pixel histogram ({len(data.images)} faces)")
    return _save(figure, path)


def write_data_report(data: FerData, folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [
        class_distribution(data, folder / "class_distribution.png"),
        sample_faces(data, folder / FACES_PICTURE),
        pixel_histogram(data, folder / "pixel_histogram.png"),
    ]


def training_curves(history: dict[str, list[float]], path: Path) -> Path:
    figure, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(10, 4))
    epochs = np.arange(1, len(history.get("loss", [])) + 1)
    for key, label in (("loss", "Training"), ("val_loss", "PublicTest")):
        if key in history:
            loss_ax.plot(epochs, history[key], label=label)
    for key, label in (("accuracy", "Training"), ("val_accuracy", "PublicTest")):
        if key in history:
            acc_ax.plot(epochs, history[key], label=label)
    loss_ax.set_title("loss")
    acc_ax.set_title("accuracy")
    for ax in (loss_ax, acc_ax):
        ax.set_xlabel("epoch")
        ax.legend()
    return _save(figure, path)


def member_curves(members: list[dict], path: Path) -> Path:
    """An ensemble's picture of its training: every member's PublicTest accuracy by epoch."""
    figure, ax = plt.subplots(figsize=(7, 4))
    for member in members:
        curve = member.get("public_test_curve") or []
        ax.plot(np.arange(1, len(curve) + 1), curve, label=f"seed {member.get('seed')}")
    ax.set_title("members: PublicTest accuracy")
    ax.set_xlabel("epoch")
    ax.legend()
    return _save(figure, path)


def confusion_matrix_plot(matrix: list[list[int]], title: str, path: Path) -> Path:
    counts = np.asarray(matrix)
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    figure, ax = plt.subplots(figsize=(6.5, 5.5))
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(CLASS_NAMES)):
        for j in range(len(CLASS_NAMES)):
            ax.text(j, i, f"{counts[i, j]}\n{rates[i, j]:.0%}", ha="center", va="center", fontsize=7,
                    color="white" if rates[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(CLASS_NAMES)), CLASS_NAMES, rotation=45)
    ax.set_yticks(range(len(CLASS_NAMES)), CLASS_NAMES)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    return _save(figure, path)
