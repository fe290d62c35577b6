"""Keras / SavedModel to ONNX with tf2onnx, refused unless the outputs match the source."""

from __future__ import annotations

import re
from typing import Literal

import numpy as np
from pydantic import Field

from optimizer.errors import StepFailed
from optimizer.model import FILE_NAMES, ModelRef
from optimizer.steps.base import StepConfig, StepContext

INPUT_NAME = "input"


class ExportOnnxConfig(StepConfig):
    step: Literal["export_onnx"] = "export_onnx"
    opset: int = Field(default=17, ge=13, le=21)
    atol: float = Field(default=1e-4, gt=0, description="max |onnx - source| on test inputs")
    check_samples: int = Field(default=32, ge=1, le=10_000)


def _tf_callable(model: ModelRef):
    """The source as a tf.function over float32 batches with a dynamic batch dimension."""
    import tensorflow as tf

    from optimizer.sources.tf_models import load_tf

    fn = load_tf(model)
    spec = (tf.TensorSpec((None, *model.preprocess.input_shape()[1:]), tf.float32, INPUT_NAME),)
    return tf.function(fn, input_signature=spec), spec


def run(model: ModelRef, config: ExportOnnxConfig, ctx: StepContext) -> ModelRef:
    import tf2onnx

    from optimizer.data import prepared

    fn, spec = _tf_callable(model)
    try:
        proto, _ = tf2onnx.convert.from_function(
            fn, input_signature=spec, opset=config.opset, output_path=None
        )
    except Exception as exc:  # tf2onnx raises bare Exceptions naming the op it cannot map
        raise StepFailed(config.name or config.step, f"tf2onnx could not convert: {exc}") from exc
    canonical_names(proto)
    out_path = ctx.out_dir / FILE_NAMES["onnx"]
    out_path.write_bytes(proto.SerializeToString())

    x = prepared(ctx.dataset, "test", model.preprocess)[: config.check_samples]
    expected = np.asarray(fn(x)).astype(np.float32)
    import onnxruntime as ort

    sess = ort.InferenceSession(str(out_path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    diff = float(np.max(np.abs(got - expected)))
    agree = float(np.mean(got.argmax(1) == expected.argmax(1)))
    if not diff <= config.atol:
        raise StepFailed(
            config.name or config.step,
            f"ONNX output differs from the source by {diff:.3g} (> atol {config.atol}) on "
            f"{len(x)} test inputs; top-1 agreement {agree:.1%}",
        )
    return ModelRef(
        kind="onnx",
        path=out_path,
        preprocess=model.preprocess,
        classes=model.classes,
        info={
            "opset": config.opset,
            "parity_max_abs_diff": diff,
            "parity_top1_agreement": agree,
            "parity_samples": len(x),
            "nodes": len(proto.graph.node),
        },
    )


_SUFFIX = re.compile(r"__(\d+)(?=(:\d+)?$)")


def canonical_names(proto) -> None:
    """Renumber the `__N` suffixes tf2onnx takes from a process-wide counter, in order of
    first use, so one model converts to the same bytes in a fresh or a long-lived process."""
    g = proto.graph
    g.doc_string = ""  # names TensorFlow's traced function, numbered per process
    numbers: dict[str, str] = {}

    def fix(name: str) -> str:
        m = _SUFFIX.search(name)
        if not m:
            return name
        new = numbers.setdefault(m[1], str(len(numbers) + 1))
        return name[: m.start(1)] + new + name[m.end(1):]

    def fix_value(v) -> None:
        v.name = fix(v.name)
        for dim in v.type.tensor_type.shape.dim:
            if dim.dim_param:
                dim.dim_param = fix(dim.dim_param)

    for v in (*g.input, *g.output, *g.value_info):
        fix_value(v)
    for t in g.initializer:
        t.name = fix(t.name)
    for n in g.node:
        n.name = fix(n.name)
        n.input[:] = [fix(x) for x in n.input]
        n.output[:] = [fix(x) for x in n.output]
