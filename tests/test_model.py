"""The contract every architecture in the factory must honour (the timm way: one test over all models)."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from ferbatch.errors import FerbatchError
from ferbatch.models import (
    INPUT_SHAPE,
    create_model,
    inference_copy,
    list_architectures,
    serving_model,
    widen_into,
    with_augmentation,
)
from ferbatch.training import Augmentation, start_from, starting_network


@pytest.fixture(scope="module", params=list_architectures())
def model(request):
    return create_model(request.param, pixel_mean=0.5, pixel_variance=0.06)


def test_factory_lists_the_documented_architectures():
    assert {"tiny", "fer_cnn", "vgg"} <= set(list_architectures())


def test_unknown_architecture_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown architecture 'resnet9000'"):
        create_model("resnet9000")


def test_takes_raw_grey_48x48_and_returns_seven_probabilities(model, random_faces):
    assert tuple(model.input_shape) == (None, *INPUT_SHAPE)
    probabilities = model.predict(random_faces[..., None].astype("float32"), verbose=0)
    assert probabilities.shape == (16, 7)
    assert probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    assert (probabilities >= 0).all()


def test_preprocessing_lives_inside_the_model(model):
    # The model's own first layers scale 0..255 to 0..1 and normalise with stored statistics.
    assert model.layers[1].name == "scale_0_1"
    assert model.layers[2].name == "normalise"
    x = np.full((1, *INPUT_SHAPE), 255.0, dtype="float32")
    scaled = keras.Model(model.input, model.get_layer("normalise").output).predict(x, verbose=0)
    np.testing.assert_allclose(scaled, (1.0 - 0.5) / np.sqrt(0.06), rtol=1e-4)


def test_save_and_load_round_trip_gives_the_same_predictions(model, random_faces, tmp_path):
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, compile=False)
    x = random_faces[..., None].astype("float32")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-6)


def test_mixed_precision_model_exports_a_float32_copy_with_the_same_weights(random_faces):
    mixed = create_model("tiny", dtype_policy="mixed_bfloat16")
    copy = inference_copy(mixed, "tiny")
    assert copy.get_layer("logits").compute_dtype == "float32"
    assert mixed.get_layer("logits").compute_dtype == "bfloat16"
    x = random_faces[..., None].astype("float32")
    np.testing.assert_allclose(copy.predict(x, verbose=0), mixed.predict(x, verbose=0), atol=0.02)


def test_augmentation_is_active_only_in_training(random_faces):
    classifier = create_model("tiny")
    trainer = with_augmentation(classifier, Augmentation(erasing=0.5), seed=1)
    x = random_faces[..., None].astype("float32")
    inference = trainer(x, training=False)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(inference), classifier.predict(x, verbose=0), atol=1e-6)
    augmented = keras.ops.convert_to_numpy(trainer(x, training=True))
    assert not np.allclose(augmented, keras.ops.convert_to_numpy(inference), atol=1e-4)


def _with_random_statistics(network: keras.Model, seed: int) -> keras.Model:
    """Fresh batch norms are the identity; give them statistics so that copying them is checked too."""
    rng = np.random.default_rng(seed)
    for layer in network.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, variance = layer.get_weights()
            layer.set_weights([rng.uniform(0.5, 1.5, gamma.shape), rng.normal(0, 0.2, beta.shape),
                               rng.normal(0, 0.2, mean.shape), rng.uniform(0.5, 2.0, variance.shape)])
    return network


def test_a_wider_network_starts_with_the_narrower_ones_outputs(random_faces):
    narrow = _with_random_statistics(create_model("crop_cnn", input_side=40, pixel_mean=0.4, pixel_variance=0.05), 1)
    with pytest.raises(ValueError, match="the same input scaling"):
        widen_into(narrow, create_model("crop_cnn_wide", input_side=40), seed=3)
    wide = create_model("crop_cnn_wide", input_side=40, pixel_mean=0.4, pixel_variance=0.05)
    widen_into(narrow, wide, seed=3)
    assert wide.count_params() > 1.5 * narrow.count_params()
    x = random_faces[:, 4:44, 4:44, None].astype("float32")
    np.testing.assert_allclose(wide.predict(x, verbose=0), narrow.predict(x, verbose=0), atol=1e-5)
    # The added filters are copies of existing ones, which the noise then parts.
    kernel = wide.get_layer(index=-6).get_weights()[0]
    assert kernel.shape[-1] == 384
    noisy = create_model("crop_cnn_wide", input_side=40, pixel_mean=0.4, pixel_variance=0.05)
    widen_into(narrow, noisy, seed=3, noise=0.01)
    assert not np.array_equal(noisy.get_layer(index=-6).get_weights()[0], kernel)
    np.testing.assert_allclose(noisy.predict(x, verbose=0), narrow.predict(x, verbose=0), atol=0.02)


@pytest.mark.parametrize(("source", "target"), [("crop_cnn_wide", "crop_cnn"), ("fer_cnn", "crop_cnn_wide")])
def test_widening_refuses_a_narrower_or_different_network(source, target):
    with pytest.raises(ValueError, match=f"cannot widen {source} into {target}"):
        widen_into(create_model(source, input_side=40), create_model(target, input_side=40), seed=0)


def test_a_run_starts_from_the_network_inside_a_registered_model(random_faces):
    network = create_model("crop_cnn", input_side=40, pixel_mean=0.45, pixel_variance=0.06)
    registered = serving_model([network])
    assert starting_network(registered, "crop_cnn") is network
    assert starting_network(registered, "crop_cnn_wide") is network  # widened by the run
    x = random_faces[:, 4:44, 4:44, None].astype("float32")
    same = create_model("crop_cnn", input_side=40, pixel_mean=0.45, pixel_variance=0.06)
    start_from(same, network, seed=0)
    np.testing.assert_array_equal(same.predict(x, verbose=0), network.predict(x, verbose=0))
    wide = create_model("crop_cnn_wide", input_side=40, pixel_mean=0.45, pixel_variance=0.06)
    start_from(wide, network, seed=0)
    np.testing.assert_allclose(wide.predict(x, verbose=0), network.predict(x, verbose=0), atol=0.02)
    with pytest.raises(FerbatchError, match="cannot start a crop_cnn_wide run from model 'fer_cnn'"):
        start_from(create_model("crop_cnn_wide"), create_model("fer_cnn"), seed=0)
