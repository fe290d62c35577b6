"""Keras application networks with fresh weights (or a user's file), for any class count.

The network normalises its own input with per-channel statistics of the training images, so
it accepts exactly what the recipe's preprocessing produces, whatever its scale.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from optimizer.errors import BadInput


@dataclass(frozen=True)
class Arch:
    ctor: str  # name in keras.applications
    min_size: int = 32
    alpha: bool = False  # takes a width multiplier
    preprocessing_flag: bool = False  # has include_preprocessing, which we turn off


ARCHITECTURES: dict[str, Arch] = {
    "MobileNetV2": Arch("MobileNetV2", alpha=True),
    "MobileNetV3Small": Arch("MobileNetV3Small", alpha=True, preprocessing_flag=True),
    "MobileNetV3Large": Arch("MobileNetV3Large", alpha=True, preprocessing_flag=True),
    "EfficientNetB0": Arch("EfficientNetB0"),
    "EfficientNetV2B0": Arch("EfficientNetV2B0", preprocessing_flag=True),
    "NASNetMobile": Arch("NASNetMobile"),
    "ResNet50": Arch("ResNet50"),
    "Xception": Arch("Xception", min_size=71),
}


def check_size(architecture: str, size: int) -> None:
    need = ARCHITECTURES[architecture].min_size
    if size < need:
        raise ValueError(f"{architecture} needs an input_size of at least {need}, got {size}")


def _backbone(spec, channels: int):
    import keras

    arch = ARCHITECTURES[spec.architecture]
    kwargs = {"input_shape": (spec.input_size, spec.input_size, channels), "weights": None,
              "include_top": False, "pooling": "avg"}
    if arch.alpha:
        kwargs["alpha"] = spec.alpha
    if arch.preprocessing_flag:
        kwargs["include_preprocessing"] = False
    if spec.architecture.startswith("EfficientNet"):
        kwargs["classes"] = 1000  # unused without the top; keeps Keras' argument checks quiet
    try:
        base = getattr(keras.applications, arch.ctor)(**kwargs)
    except ValueError as exc:
        raise BadInput(f"{spec.label}: Keras cannot build it: {exc}") from None
    if spec.weights is not None:
        _load_weights(base, Path(spec.weights), spec.label)
    # Keras' 0.999 BN momentum is tuned for ImageNet-length runs; with a few hundred steps
    # the moving averages would still hold their initial values and test accuracy collapses.
    for layer in base.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9
    return base


def _load_weights(base, path: Path, label: str) -> None:
    try:
        base.load_weights(str(path))
    except Exception as exc:  # h5py, shape mismatches and unknown formats all land here
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BadInput(f"{path}: cannot load these weights into {label} without its top "
                       f"(same architecture, width and channels?): {first}") from None


def build(spec, channels: int, n_classes: int, mean: np.ndarray, var: np.ndarray):
    """(logits model, probabilities model) sharing one set of layers.

    Training works on logits (distillation needs them at a temperature); the probabilities
    model is what gets saved, exported and deployed, like any classifier.
    """
    import keras

    check_size(spec.architecture, spec.input_size)
    base = _backbone(spec, channels)
    inp = keras.Input((spec.input_size, spec.input_size, channels), name="input")
    # Rescaling, not Normalization: its constants live in the config, so tf2onnx folds them
    # instead of turning the statistics into extra graph inputs
    std = np.sqrt(np.maximum(var, 1e-6))
    x = keras.layers.Rescaling((1 / std).tolist(), offset=(-mean / std).tolist(),
                               name="normalize")(inp)
    x = base(x)
    logits = keras.layers.Dense(n_classes, name="logits")(x)
    probs = keras.layers.Softmax(name="predictions")(logits)
    name = spec.label.replace(".", "_")
    return keras.Model(inp, logits, name=f"{name}_logits"), keras.Model(inp, probs, name=name)


def channel_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and variance of an NHWC batch, in float64 for stability."""
    flat = x.reshape(-1, x.shape[-1]).astype(np.float64)
    return flat.mean(axis=0), flat.var(axis=0)
