"""Models move between Keras backends: a GPU machine may train under JAX, this one evaluates under TensorFlow.

Opt-in: set FERBATCH_JAX_PYTHON to a Python that has jax and keras (no TensorFlow needed), e.g.
    python3 -m venv /tmp/jaxenv && /tmp/jaxenv/bin/pip install jax keras h5py
    FERBATCH_JAX_PYTHON=/tmp/jaxenv/bin/python pytest -m backends
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from ferbatch.models import ModelRegistry

JAX_PYTHON = os.environ.get("FERBATCH_JAX_PYTHON")
REPO = Path(__file__).resolve().parents[1]

pytestmark = [
    pytest.mark.backends,
    pytest.mark.skipif(not JAX_PYTHON, reason="FERBATCH_JAX_PYTHON is not set to a Python with jax and keras"),
]


@pytest.fixture(scope="module")
def jax_run(tmp_path_factory, sample_data, random_faces):
    out = tmp_path_factory.mktemp("jax")
    train_x, train_y = sample_data.subset("Training")
    public_x, public_y = sample_data.subset("PublicTest")
    np.savez(out / "arrays.npz", train_x=train_x, train_y=train_y, public_x=public_x, public_y=public_y,
             probe=random_faces)
    env = {**os.environ, "KERAS_BACKEND": "jax", "PYTHONPATH": str(REPO), "JAX_PLATFORMS": "cpu"}
    done = subprocess.run(
        [JAX_PYTHON, str(REPO / "tests" / "backends" / "jax_side.py"), str(out / "arrays.npz"), str(out),
         str(ModelRegistry.at().model_path())],
        env=env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def test_a_model_trained_under_jax_loads_and_predicts_the_same_under_tensorflow(jax_run, random_faces):
    import keras

    model = keras.saving.load_model(jax_run / "jax_trained.keras", compile=False)
    predicted = model.predict(random_faces[..., None].astype("float32"), verbose=0)
    np.testing.assert_allclose(predicted, np.load(jax_run / "jax_trained_on_probe.npy"), atol=1e-4)


def test_the_shipped_model_predicts_the_same_under_jax(jax_run, random_faces):
    registry = ModelRegistry.at()
    predicted = registry.load_model().predict(random_faces[..., None].astype("float32"), verbose=0)
    np.testing.assert_allclose(predicted, np.load(jax_run / "shipped_on_probe.npy"), atol=1e-4)
