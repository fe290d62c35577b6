"""Loading TensorFlow-side models (Keras files, SavedModels) as a batch -> probabilities call."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from optimizer.errors import BadInput
from optimizer.model import ModelRef


def load_keras(path: Path):
    """Safe mode refuses Lambda layers and other pickled Python code inside the file."""
    import keras

    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "safe_mode" in msg or "Lambda" in msg:
            # Keras suggests safe_mode=False, which would run code from the file: not offered
            raise BadInput(
                f"{path}: the model holds a Lambda layer (Python code stored in the file), "
                "which optimizer does not run. Replace it with built-in layers or a "
                "registered custom layer and save again, or export the model to SavedModel "
                "or ONNX and use source kind savedmodel or onnx") from None
        raise BadInput(f"{path}: cannot load Keras model (safe mode): {msg}") from None


def load_savedmodel(path: Path, signature: str):
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(str(path))
    except Exception as exc:
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise BadInput(f"{path}: cannot load SavedModel: {msg}") from None
    if signature not in loaded.signatures:
        have = ", ".join(loaded.signatures) or "none"
        raise BadInput(f"{path}: SavedModel has no signature '{signature}' (has: {have})")
    sig = loaded.signatures[signature]
    inputs = sig.structured_input_signature[1]
    if len(inputs) != 1:
        raise BadInput(f"{path}: signature '{signature}' must take one image tensor, "
                       f"takes {sorted(inputs)}")
    outputs = sig.structured_outputs
    if len(outputs) != 1:
        raise BadInput(f"{path}: signature '{signature}' must return one tensor, "
                       f"returns {sorted(outputs)}")
    (in_name,) = inputs
    (out_name,) = outputs
    return loaded, sig, in_name, out_name, inputs[in_name]


def load_tf(model: ModelRef) -> Callable:
    """A function from a float32 batch to the model's output, for tf.function and predict."""
    if model.kind == "keras":
        net = load_keras(model.path)
        return lambda x: net(x, training=False)
    if model.kind == "savedmodel":
        loaded, sig, in_name, out_name, _ = load_savedmodel(
            model.path, model.info.get("signature", "serving_default")
        )

        def call(x):
            _ = loaded  # keep the trackable objects alive as long as the function
            return sig(**{in_name: x})[out_name]

        return call
    raise ValueError(f"not a TensorFlow model: {model.kind}")


def predict(model: ModelRef, x: np.ndarray, batch: int = 64) -> np.ndarray:
    import tensorflow as tf

    fn = tf.function(load_tf(model))
    parts = [np.asarray(fn(tf.constant(x[i : i + batch]))) for i in range(0, len(x), batch)]
    return np.concatenate(parts).astype(np.float32)
