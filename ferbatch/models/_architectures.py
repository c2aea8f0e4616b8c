"""FER classifiers: a factory over named architectures, all with the same input/output contract.

Contract of every saved model: input float32 (N, 48, 48, 1) holding raw grey values 0..255, output
(N, 7) softmax probabilities in FER2013 class order. Scaling and normalisation live inside the model.
Augmentation is a separate wrapper used only for training, so saved models carry none of it.

Only `keras.*` APIs are used, so the same code trains under the TensorFlow, JAX or PyTorch backend.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import contextmanager
from typing import TYPE_CHECKING

import keras
import numpy as np
from keras import layers

from ferbatch.classes import IMAGE_SIZE, NUM_CLASSES

if TYPE_CHECKING:
    from ferbatch.training._recipes import Augmentation

INPUT_SHAPE = (IMAGE_SIZE, IMAGE_SIZE, 1)
INPUT_CONTRACT = {
    "shape": [None, IMAGE_SIZE, IMAGE_SIZE, 1],
    "dtype": "float32",
    "value_range": [0, 255],
    "colour": "grey",
    "output": f"(N, {NUM_CLASSES}) softmax probabilities in FER2013 class order",
    "preprocessing": "inside the model (rescale to 0..1, then normalise with training-set mean and variance)",
}

# An architecture builds the feature trunk and head on normalised inputs; the factory adds the rest.
Architecture = Callable[[keras.KerasTensor], keras.KerasTensor]
_ARCHITECTURES: dict[str, Architecture] = {}


def register_architecture(name: str) -> Callable[[Architecture], Architecture]:
    def decorate(build: Architecture) -> Architecture:
        _ARCHITECTURES[name] = build
        return build

    return decorate


def list_architectures() -> list[str]:
    return sorted(_ARCHITECTURES)


def _conv_block(x: keras.KerasTensor, filters: int, convs: int, dropout: float) -> keras.KerasTensor:
    for _ in range(convs):
        x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.Activation("relu")(x)
    x = layers.MaxPooling2D()(x)
    return layers.Dropout(dropout)(x) if dropout else x


@register_architecture("tiny")
def _tiny(x: keras.KerasTensor) -> keras.KerasTensor:
    """A few thousand parameters: for tests and smoke runs, not for use."""
    x = _conv_block(x, 8, 1, 0.0)
    x = _conv_block(x, 16, 1, 0.0)
    return layers.GlobalAveragePooling2D()(x)


@register_architecture("fer_cnn")
def _fer_cnn(x: keras.KerasTensor) -> keras.KerasTensor:
    """About 0.6M parameters; the default: trains in well under a minute per epoch on 2 CPU cores."""
    x = _conv_block(x, 32, 2, 0.1)
    x = _conv_block(x, 64, 2, 0.2)
    x = _conv_block(x, 128, 2, 0.3)
    x = _conv_block(x, 256, 1, 0.3)
    x = layers.GlobalAveragePooling2D()(x)
    return layers.Dropout(0.4)(x)


def _crop_trunk(x: keras.KerasTensor, last_stage: int) -> keras.KerasTensor:
    for filters in (32, 64, 128):
        x = _conv_block(x, filters, 2, 0.0)
    for _ in range(2):  # the last stage keeps its 5x5 map for the global pooling
        x = layers.Conv2D(last_stage, 3, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.Activation("relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    return layers.Dropout(0.4)(x)


@register_architecture("crop_cnn")
def _crop_cnn(x: keras.KerasTensor) -> keras.KerasTensor:
    """Four stages of two conv3x3-BN-ReLU, 32-64-128-256, on 40x40 crops: 1.18M parameters, 82M multiply-adds.

    The shape of the published 72-73% FER2013 recipes (random crops, several at test) at a width that
    trains on 2 CPU cores: about 2 minutes an epoch.
    """
    return _crop_trunk(x, 256)


@register_architecture("crop_cnn_wide")
def _crop_cnn_wide(x: keras.KerasTensor) -> keras.KerasTensor:
    """crop_cnn with a 384-filter last stage: 2.07M parameters, 104M multiply-adds.

    The room is added where it is cheap on a CPU: the 5x5 stage runs as dense matrix products, while the
    40x40 stage, where crop_cnn spends most of its time, is unchanged. `widen_into` starts it from a
    trained crop_cnn with the same outputs.
    """
    return _crop_trunk(x, 384)


@register_architecture("crop_cnn_slim")
def _crop_cnn_slim(x: keras.KerasTensor) -> keras.KerasTensor:
    """crop_cnn at scoring's budget: one 16-filter conv at 40x40, then 48-96-192; 0.65M parameters.

    The full-resolution stage is where crop_cnn spends its time on a CPU; thinning it and narrowing the rest
    by a quarter scores 2.2 times as many faces a second (2,665 against 1,220 at batch 256 on 2 cores,
    `benchmarks/score.py --child classify`).
    """
    x = _conv_block(x, 16, 1, 0.0)
    for filters in (48, 96):
        x = _conv_block(x, filters, 2, 0.0)
    for _ in range(2):
        x = layers.Conv2D(192, 3, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        x = layers.Activation("relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    return layers.Dropout(0.4)(x)


@register_architecture("vgg")
def _vgg(x: keras.KerasTensor) -> keras.KerasTensor:
    """VGG-style, 4 blocks 64-512 with a dense head (about 6M parameters); hours on CPU, minutes on a GPU."""
    for filters, dropout in ((64, 0.2), (128, 0.25), (256, 0.3), (512, 0.35)):
        x = _conv_block(x, filters, 2, dropout)
    x = layers.Flatten()(x)
    x = layers.Dense(512, use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    x = layers.Activation("relu")(x)
    return layers.Dropout(0.5)(x)


@contextmanager
def _dtype_policy(policy: str):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(policy)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


def create_model(
    architecture: str,
    *,
    input_side: int = IMAGE_SIZE,
    pixel_mean: float = 0.5,
    pixel_variance: float = 0.0625,
    dtype_policy: str = "float32",
) -> keras.Model:
    """Build a classifier on raw grey 0..255 squares of `input_side` pixels.

    At 48 it honours INPUT_CONTRACT as it is; a network trained on smaller crops does once wrapped by
    `serving_model`. Mean and variance are of pixels scaled to 0..1.
    """
    if architecture not in _ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; choose from {', '.join(list_architectures())}")
    with _dtype_policy(dtype_policy):
        inputs = keras.Input((input_side, input_side, 1), dtype="float32", name="grey_0_255")
        # Preprocessing stays float32 whatever the compute policy: it is cheap and keeps 0..255 exact.
        x = layers.Rescaling(1.0 / 255.0, dtype="float32", name="scale_0_1")(inputs)
        x = layers.Normalization(mean=pixel_mean, variance=pixel_variance, dtype="float32", name="normalise")(x)
        x = _ARCHITECTURES[architecture](x)
        x = layers.Dense(NUM_CLASSES, name="logits")(x)
        outputs = layers.Activation("softmax", dtype="float32", name="probabilities")(x)
    return keras.Model(inputs, outputs, name=architecture)


def with_augmentation(classifier: keras.Model, augmentation: Augmentation, seed: int) -> keras.Model:
    """Wrap a classifier with augmentation layers, which Keras runs only when training=True."""
    steps: list[layers.Layer] = []
    if augmentation.flip:
        steps.append(layers.RandomFlip("horizontal", seed=seed))
    if augmentation.rotation:
        steps.append(layers.RandomRotation(augmentation.rotation, fill_mode="reflect", seed=seed + 1))
    if augmentation.zoom:
        steps.append(layers.RandomZoom(augmentation.zoom, fill_mode="reflect", seed=seed + 2))
    if augmentation.translation:
        steps.append(
            layers.RandomTranslation(
                augmentation.translation, augmentation.translation, fill_mode="reflect", seed=seed + 3
            )
        )
    if augmentation.contrast:
        steps.append(layers.RandomContrast(augmentation.contrast, value_range=(0, 255), seed=seed + 4))
    if augmentation.erasing:
        steps.append(
            layers.RandomErasing(factor=augmentation.erasing, value_range=(0, 255), seed=seed + 5)
        )
    inputs = keras.Input(INPUT_SHAPE, dtype="float32")
    x = inputs
    for step in steps:
        x = step(x)
    return keras.Model(inputs, classifier(x), name=f"{classifier.name}_train")


def widen_into(source: keras.Model, target: keras.Model, seed: int, noise: float = 0.0) -> None:
    """Give `target` the function of `source`, a network of the same layers with fewer channels (Net2WiderNet,
    Chen et al. 2016).

    Each added channel copies a random existing one (its convolution filter and batch-norm statistics); the
    next layer divides the weights it reads from every copied channel by the number of copies, so the
    outputs are unchanged. `noise` (relative to each kernel's spread) lets the copies part when training.
    `target` is built with the input scaling of `source` (create_model's pixel_mean and pixel_variance).
    """
    kinds = (layers.Conv2D, layers.BatchNormalization, layers.Dense)
    olds, news = ([layer for layer in model.layers if isinstance(layer, kinds)] for model in (source, target))
    if [type(layer) for layer in olds] != [type(layer) for layer in news]:
        raise ValueError(f"cannot widen {source.name} into {target.name}: their layers differ")
    scaling = [[np.ravel(keras.ops.convert_to_numpy(getattr(model.get_layer("normalise"), statistic)))
                for statistic in ("mean", "variance")] for model in (source, target)]
    if not all(np.allclose(a, b) for a, b in zip(*scaling, strict=True)):
        raise ValueError(f"cannot widen {source.name} into {target.name}: build it with the same input scaling")
    rng = np.random.default_rng(seed)
    channel_of = np.arange(1)  # which source channel each target input channel copies; grey in
    for old, new in zip(olds, news, strict=True):
        weights = old.get_weights()
        if isinstance(old, layers.BatchNormalization):  # per channel: follows the channels as they are
            new.set_weights([w[channel_of] for w in weights])
            continue
        kernel, wanted = weights[0], new.get_weights()[0].shape
        if kernel.shape[-2] != channel_of.max() + 1 or wanted[-2] != channel_of.size or wanted[-1] < kernel.shape[-1]:
            raise ValueError(f"cannot widen {source.name} into {target.name}: {new.name} {wanted} does not "
                             f"extend {old.name} {kernel.shape}")
        copies = np.bincount(channel_of, minlength=kernel.shape[-2])
        kernel = kernel[..., channel_of, :] / copies[channel_of][:, None]
        outputs_wanted, outputs_there = wanted[-1], kernel.shape[-1]
        mapping = np.concatenate([np.arange(outputs_there),
                                  rng.integers(0, outputs_there, outputs_wanted - outputs_there)])
        kernel = kernel[..., mapping]
        if noise:
            kernel = kernel + rng.normal(0.0, noise * kernel.std(), kernel.shape).astype(kernel.dtype)
        new.set_weights([kernel, *(w[mapping] for w in weights[1:])])
        channel_of = mapping


def inference_copy(classifier: keras.Model, architecture: str) -> keras.Model:
    """A float32 copy of a (possibly mixed-precision) classifier: the portable form that gets registered."""
    normaliser = classifier.get_layer("normalise")
    copy = create_model(
        architecture,
        input_side=int(classifier.input_shape[1]),
        pixel_mean=float(np.ravel(keras.ops.convert_to_numpy(normaliser.mean))[0]),
        pixel_variance=float(np.ravel(keras.ops.convert_to_numpy(normaliser.variance))[0]),
    )
    copy.set_weights(classifier.get_weights())
    return copy


# Views of the 48x48 frame a crop-trained network is served on: the centre, then the four corners.
def crop_offsets(side: int, crops: int) -> list[tuple[int, int]]:
    """(top, left) of `crops` fixed crops of `side` pixels: 1 = the centre, 5 = the centre and four corners."""
    margin = IMAGE_SIZE - side
    centre = (margin // 2, margin // 2)
    corners = [(0, 0), (0, margin), (margin, 0), (margin, margin)]
    if crops not in (1, 5) or (crops == 5 and margin == 0):
        raise ValueError(f"crops must be 1 or 5 (5 needs a crop smaller than {IMAGE_SIZE}), not {crops}")
    return [centre] if crops == 1 else [centre, *corners]


def _mirror(x: keras.KerasTensor, side: int, name: str) -> keras.KerasTensor:
    """Left-right mirror with standard layers: move width last, multiply by the exchange matrix, move it back."""
    swap = layers.Dense(side, use_bias=False, trainable=False, name=f"{name}_mirror")
    x = layers.Permute((1, 3, 2), name=f"{name}_width_last")(x)
    x = swap(x)
    swap.set_weights([np.eye(side, dtype="float32")[::-1]])
    return layers.Permute((1, 3, 2), name=f"{name}_width_back")(x)


def serving_model(members: list[keras.Model], crops: int = 1, flip: bool = False, name: str = "fer_ensemble"
                  ) -> keras.Model:
    """One INPUT_CONTRACT model that averages every member's probabilities over fixed crops (and mirrors).

    Standard Keras layers only (Cropping2D, Permute, Dense, Average), so `keras.saving.load_model` reads it
    with nothing of ferbatch imported, and a reader makes one forward pass for the whole ensemble.
    """
    inputs = keras.Input(INPUT_SHAPE, dtype="float32", name="grey_0_255")
    outputs = []
    if len(members) > 1:  # layer names must be unique inside the wrapper
        for index, member in enumerate(members):
            member.name = f"{member.name.split('__')[0]}__m{index}"
    for index, member in enumerate(members):
        side = int(member.input_shape[1])
        offsets = crop_offsets(side, crops) if side < IMAGE_SIZE else [(0, 0)]
        for view, (top, left) in enumerate(offsets):
            bottom, right = IMAGE_SIZE - side - top, IMAGE_SIZE - side - left
            x = inputs
            if side < IMAGE_SIZE:
                x = layers.Cropping2D(((top, bottom), (left, right)), name=f"m{index}_crop{view}")(inputs)
            outputs.append(member(x))
            if flip:
                outputs.append(member(_mirror(x, side, f"m{index}_crop{view}")))
    output = outputs[0] if len(outputs) == 1 else layers.Average(name="probabilities_mean")(outputs)
    return keras.Model(inputs, output, name=name)
