"""Run under KERAS_BACKEND=jax by tests/test_backends.py: train, save, and predict with a TF-saved model.

    python jax_side.py ARRAYS.npz OUT_DIR SHIPPED_MODEL.keras

Needs only keras, jax and numpy (plus this repository on PYTHONPATH), like a GPU machine without TensorFlow.
"""

from __future__ import annotations

import sys
from pathlib import Path

import keras
import numpy as np

from ferbatch.training import PRESETS, preset, train

assert keras.backend.backend() == "jax", keras.backend.backend()
arrays, out, shipped = np.load(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
config = preset("smoke").with_overrides(
    epochs=1, precision="mixed_bfloat16", lr_schedule="cosine", augmentation=PRESETS["vgg"].augmentation
)
result = train(config, arrays["train_x"], arrays["train_y"], arrays["public_x"], arrays["public_y"], out / "work")
result.classifier.save(out / "jax_trained.keras")
probe = arrays["probe"][..., None].astype("float32")
np.save(out / "jax_trained_on_probe.npy", result.classifier.predict(probe, verbose=0))
np.save(out / "shipped_on_probe.npy", keras.saving.load_model(shipped, compile=False).predict(probe, verbose=0))
