"""Emotion classifiers behind a small interface: `predict(faces) -> probabilities`.

`KerasClassifier` wraps a registered model; tests inject fakes with the same two members.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from ferbatch.classes import IMAGE_SIZE, NUM_CLASSES
from ferbatch.config import CLASSIFIER_PRECISIONS, DEFAULT_BATCH_SIZE


@runtime_checkable
class EmotionClassifier(Protocol):
    version: str

    def predict(self, faces: np.ndarray) -> np.ndarray:
        """(N, 48, 48) uint8 faces -> (N, 7) probabilities in FER2013 class order."""
        ...


# The CPU flags (Linux /proc/cpuinfo names) of native bfloat16 arithmetic, which oneDNN uses for convolutions
# and matrix products; without them it would emulate bfloat16, slower than float32.
NATIVE_BFLOAT16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})
_CPUINFO = Path("/proc/cpuinfo")


def cpu_flags(cpuinfo: Path = _CPUINFO) -> frozenset[str]:
    """The first processor's feature flags, empty where /proc/cpuinfo is not there (macOS, Windows)."""
    try:
        text = cpuinfo.read_text(errors="replace")
    except OSError:
        return frozenset()
    line = next((line for line in text.splitlines() if line.split(":", 1)[0].strip() in ("flags", "Features")), "")
    return frozenset(line.partition(":")[2].split())


@cache
def _native_bfloat16() -> bool:
    """Whether the classifier runs on a CPU with native bfloat16 (a visible GPU would run it instead)."""
    import tensorflow as tf

    return bool(NATIVE_BFLOAT16_FLAGS & cpu_flags()) and not tf.config.list_physical_devices("GPU")


def resolve_precision(requested: str) -> str:
    """The arithmetic a classifier uses: "auto" is bfloat16 on the TensorFlow backend on a CPU with native
    bfloat16 and no GPU (about twice the faces a second; the same verdicts within rounding, docs/benchmarks.md) and
    float32 anywhere else. The rewrite is TensorFlow's, so another Keras backend always computes float32."""
    if requested not in CLASSIFIER_PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(CLASSIFIER_PRECISIONS)}, not {requested!r}")
    import keras

    if requested == "float32" or keras.config.backend() != "tensorflow":
        return "float32"
    return "bfloat16" if requested == "bfloat16" or _native_bfloat16() else "float32"


_BFLOAT16_REWRITE = "auto_mixed_precision_onednn_bfloat16"
_rewrite_lock = threading.Lock()
_rewrite_users = 0  # calls inside _bfloat16_rewrite now, across threads
_rewrite_before = False  # the option as the first of them found it


@contextmanager
def _bfloat16_rewrite() -> Iterator[None]:
    """TensorFlow's oneDNN rewrite of convolutions and matrix products to bfloat16, for the calls inside only.

    It is a process-wide optimizer option, read when a graph runs, so it is switched on around each call and
    back after: training and evaluation in the same process keep float32. Calls overlapping in threads (a
    multi-threaded Dask worker) share one switch: on at the first, back as it was after the last. Switching
    costs nothing measurable.
    """
    import tensorflow as tf

    global _rewrite_users, _rewrite_before
    with _rewrite_lock:
        if _rewrite_users == 0:
            _rewrite_before = bool(tf.config.optimizer.get_experimental_options().get(_BFLOAT16_REWRITE, False))
            tf.config.optimizer.set_experimental_options({_BFLOAT16_REWRITE: True})
        _rewrite_users += 1
    try:
        yield
    finally:
        with _rewrite_lock:
            _rewrite_users -= 1
            if _rewrite_users == 0:
                tf.config.optimizer.set_experimental_options({_BFLOAT16_REWRITE: _rewrite_before})


class KerasClassifier:
    """A registered `model.keras`, called in batches of at most `batch_size` faces.

    `precision` is "float32" or "bfloat16" (TensorFlow backend only; see `resolve_precision` for "auto").
    """

    def __init__(self, model, version: str, batch_size: int = DEFAULT_BATCH_SIZE, flip_tta: bool = False,
                 precision: str = "float32") -> None:
        self.model, self.version = model, version
        self.batch_size, self.flip_tta = batch_size, flip_tta
        self.precision = resolve_precision(precision)

    @classmethod
    def from_registry(
        cls, models_dir: str | Path, version: str | None = None, batch_size: int = DEFAULT_BATCH_SIZE,
        flip_tta: bool = False, precision: str = "float32",
    ) -> KerasClassifier:
        from ferbatch.models import ModelRegistry

        registry = ModelRegistry(models_dir)
        chosen = registry.resolve(version)
        return cls(registry.load_model(chosen), chosen, batch_size, flip_tta, precision).warmed_up()

    @contextmanager
    def _arithmetic(self) -> Iterator[None]:
        if self.precision == "bfloat16":
            with _bfloat16_rewrite():
                yield
        else:
            yield

    def warmed_up(self) -> KerasClassifier:
        """Trace the model before the first real batch: Keras traces the first batch size, then a shape-generic
        function at the second, so two tiny batches take both traces (about 1 s for the 3-network model) off
        the first chunk's critical path."""
        with self._arithmetic():
            for n in (1, 2):
                self.model.predict_on_batch(np.zeros((n, IMAGE_SIZE, IMAGE_SIZE, 1), np.float32))
        return self

    def _predict_batches(self, x: np.ndarray) -> np.ndarray:
        # Batches of at most batch_size at their own size: padding a chunk's last batch to a fixed shape cost
        # up to 40% more work (650 faces in chunks of about 208 padded to 256), and Keras traces a shape-generic
        # function after the second size, so exact sizes add no tracing.
        out = np.empty((len(x), NUM_CLASSES), dtype=np.float32)
        with self._arithmetic():
            for start in range(0, len(x), self.batch_size):
                chunk = x[start : start + self.batch_size, :, :, None].astype(np.float32)
                out[start : start + len(chunk)] = np.asarray(self.model.predict_on_batch(chunk))
        return out

    def predict(self, faces: np.ndarray) -> np.ndarray:
        faces = np.asarray(faces)
        if len(faces) == 0:
            return np.zeros((0, NUM_CLASSES), dtype=np.float32)
        probabilities = self._predict_batches(faces)
        if self.flip_tta:
            probabilities = (probabilities + self._predict_batches(faces[:, :, ::-1])) / 2
        if self.precision == "bfloat16":  # a bfloat16 softmax sums to 1 only within about 0.01
            probabilities /= probabilities.sum(axis=1, keepdims=True)
        return probabilities
