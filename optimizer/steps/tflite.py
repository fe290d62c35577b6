"""Keras / SavedModel to a LiteRT (TFLite) flatbuffer, fp32 or full-integer int8.

LiteRT with XNNPACK is a runtime candidate in its own right: a much smaller wheel than
TensorFlow, and XNNPACK's int8 kernels are tuned for both AVX2 and Neoverse dotprod. The
int8 model keeps float input and output, so the handler feeds it exactly what it feeds the
ONNX model. An fp32 conversion must match the source within `atol`; an int8 one is held
to the recipe's accuracy gates like any other quantized artifact.
"""

from __future__ import annotations

import warnings
from typing import Literal

import numpy as np
from pydantic import Field

from optimizer.errors import StepFailed
from optimizer.model import FILE_NAMES, ModelRef
from optimizer.steps.base import StepConfig, StepContext


class TfliteConfig(StepConfig):
    step: Literal["tflite"] = "tflite"
    quantize: Literal["none", "int8"] = Field(
        default="none", description="int8: full-integer weights and activations, float I/O")
    calibration_samples: int = Field(default=256, ge=1, le=100_000,
                                     description="train images that set activation ranges")
    atol: float = Field(default=1e-4, gt=0, description="max |tflite - source| (fp32 only)")
    check_samples: int = Field(default=32, ge=1, le=10_000)


def run(model: ModelRef, config: TfliteConfig, ctx: StepContext) -> ModelRef:
    import tensorflow as tf

    from optimizer.data.dataset import prepared
    from optimizer.handler.engines import load
    from optimizer.quiet import native_stderr_captured
    from optimizer.steps.export_onnx import _tf_callable

    name = config.name or config.step
    fn, _ = _tf_callable(model)
    conv = tf.lite.TFLiteConverter.from_concrete_functions([fn.get_concrete_function()], fn)
    if config.quantize == "int8":
        calib = prepared(ctx.dataset, "train", model.preprocess,
                         limit=config.calibration_samples)
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: ([calib[i:i + 1]] for i in range(len(calib)))
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    try:
        # the converter prints its own notes (to descriptor 2) and warns on float I/O
        with native_stderr_captured(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            flat = conv.convert()
    except Exception as exc:  # the converter names the op it cannot lower
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise StepFailed(name, f"the TFLite converter failed: {first}") from exc
    out = ctx.out_dir / FILE_NAMES["tflite"]
    out.write_bytes(flat)

    x = prepared(ctx.dataset, "test", model.preprocess, limit=config.check_samples)
    expected = np.asarray(fn(x)).astype(np.float32)
    with native_stderr_captured():
        got = load("litert", out, threads=1)(x)
    diff = float(np.max(np.abs(got - expected)))
    agree = float(np.mean(got.argmax(1) == expected.argmax(1)))
    if config.quantize == "none" and not diff <= config.atol:
        raise StepFailed(name, f"LiteRT output differs from the source by {diff:.3g} (> atol "
                               f"{config.atol}) on {len(x)} test inputs; top-1 agreement "
                               f"{agree:.1%}")
    from ai_edge_litert.interpreter import Interpreter

    ops = sorted({d["op_name"] for d in Interpreter(model_path=str(out))._get_ops_details()})
    return ModelRef(
        kind="tflite", path=out, preprocess=model.preprocess, classes=model.classes,
        info={"quantize": config.quantize, "parity_max_abs_diff": diff,
              "parity_top1_agreement": agree, "parity_samples": len(x), "ops": ops,
              "calibration_samples": config.calibration_samples
              if config.quantize == "int8" else None},
    )
