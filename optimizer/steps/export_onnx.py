"""Keras / SavedModel to ONNX with tf2onnx, refused unless the outputs match the source."""

from __future__ import annotations

import functools
import json
import logging
import re
import threading
from typing import Any, Literal

import numpy as np
from pydantic import Field

from optimizer.errors import StepFailed
from optimizer.model import FILE_NAMES, ModelRef
from optimizer.steps.base import StepConfig, StepContext

INPUT_NAME = "input"
_CONVERTING = threading.Lock()


class ExportOnnxConfig(StepConfig):
    step: Literal["export_onnx"] = "export_onnx"
    opset: int = Field(default=17, ge=13, le=21)
    atol: float = Field(default=1e-4, gt=0, description="max |onnx - source| on test inputs")
    check_samples: int = Field(default=32, ge=1, le=10_000)


def _tf_callable(model: ModelRef):
    """The source as a tf.function over float32 batches with a dynamic batch dimension."""
    import tensorflow as tf

    from optimizer.inference.tf import load_tf

    fn = load_tf(model)
    spec = (tf.TensorSpec((None, *model.preprocess.input_shape()[1:]), tf.float32, INPUT_NAME),)
    return tf.function(fn, input_signature=spec), spec


# Keras marks some helpers (grouped convolutions in ConvNeXt) jit-only and never-inline;
# tf2onnx cannot see into a call it may not inline
_NO_INLINE = ("_noinline", "_XlaMustCompile")


def _erfc_as_erf(node, tf) -> list:
    """Erfc (exact GELU in Keras 3) has no tf2onnx rule; 1 - Erf(x) is the same function."""
    from tensorflow.core.framework import node_def_pb2

    erf = node_def_pb2.NodeDef(name=f"{node.name}/erf", op="Erf", input=list(node.input))
    erf.attr["T"].CopyFrom(node.attr["T"])
    one = node_def_pb2.NodeDef(name=f"{node.name}/one", op="Const")
    one.attr["dtype"].CopyFrom(node.attr["T"])
    one.attr["value"].tensor.CopyFrom(tf.make_tensor_proto(
        1.0, dtype=tf.dtypes.as_dtype(node.attr["T"].type)))
    sub = node_def_pb2.NodeDef(name=node.name, op="Sub", input=[one.name, erf.name])
    sub.attr["T"].CopyFrom(node.attr["T"])
    return [erf, one, sub]


REWRITES = {"Erfc": _erfc_as_erf}


def frozen_graph(fn) -> tuple[Any, list[str], list[str], dict[str, int]]:
    """(GraphDef with weights and captured constants folded in, input and output tensor
    names, rewrites applied). Freezing here rather than in tf2onnx keeps constants a layer
    captured by value (EfficientNet's Normalization) from becoming graph inputs."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import (
        convert_variables_to_constants_v2,
    )

    frozen = convert_variables_to_constants_v2(fn.get_concrete_function(),
                                               lower_control_flow=False,
                                               aggressive_inlining=True)
    graph = frozen.graph.as_graph_def(add_shapes=True)
    applied: dict[str, int] = {}
    for f in graph.library.function:
        if any(key in f.attr for key in _NO_INLINE):
            applied["never-inline function inlined"] = applied.get(
                "never-inline function inlined", 0) + 1
        for key in _NO_INLINE:
            if key in f.attr:
                del f.attr[key]
    nodes = []
    for node in graph.node:
        for key in _NO_INLINE:
            if key in node.attr:
                del node.attr[key]
        if node.op in REWRITES:
            applied[node.op] = applied.get(node.op, 0) + 1
            nodes += REWRITES[node.op](node, tf)
        else:
            nodes.append(node)
    for f in graph.library.function:
        body = []
        for node in f.node_def:
            body += REWRITES[node.op](node, tf) if node.op in REWRITES else [node]
        del f.node_def[:]
        f.node_def.extend(body)
    del graph.node[:]
    graph.node.extend(nodes)
    inputs = [f"{n.name}:0" for n in graph.node if n.op == "Placeholder"]
    return graph, inputs, [t.name for t in frozen.outputs], applied


class _Warnings(logging.Handler):
    """tf2onnx logs, rather than raises, the passes it could not apply and the ops it could
    not map; both belong in the step's record, and the second is fatal."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage().splitlines()[0][:300])


def _layer(node_name: str) -> str:
    """The Keras layer a TensorFlow node belongs to (`model_1/layer_name_1/op`)."""
    parts = node_name.split("/")
    name = parts[1] if len(parts) > 2 else parts[0]
    return re.sub(r"_\d+$", "", name)


def _unconverted(proto) -> dict[str, list[str]]:
    """Ops left in the ONNX graph that no ONNX (or contrib) schema defines: op -> layers."""
    import onnx

    out: dict[str, list[str]] = {}
    for node in proto.graph.node:
        if not onnx.defs.has(node.op_type, node.domain or ""):
            layers = out.setdefault(node.op_type, [])
            if (layer := _layer(node.name)) not in layers:
                layers.append(layer)
    return out


def _node_hash(node) -> int:
    return hash(node.name)


@functools.cache
def _settle_converter() -> None:
    """Once per process: what of tf2onnx's process state would leak into its output.

    Its transpose pass walks sets of Node objects, which Python orders by memory address
    (hashed by name instead: a node's name is fixed for its life and equality stays
    identity); and the first conversion in a process folds one Reshape fewer than every
    later one (seen on a MobileNetV3 student: 248 nodes first, 247 after any other
    conversion, even of x + 1), so a tiny conversion runs first.
    """
    import tensorflow as tf
    import tf2onnx
    from tf2onnx.graph import Node

    Node.__hash__ = _node_hash
    spec = (tf.TensorSpec((None, 2), tf.float32, INPUT_NAME),)
    graph, inputs, outputs, _ = frozen_graph(
        tf.function(lambda x: tf.nn.relu(x) + 1.0, input_signature=spec))
    tf2onnx.convert.from_graph_def(graph, input_names=inputs, output_names=outputs, opset=13)


def convert(fn, opset: int, step: str) -> tuple[Any, dict[str, Any]]:
    """The ONNX proto and what the converter did (rewrites, passes it could not apply)."""
    import tf2onnx
    import tf2onnx.utils

    try:
        graph, inputs, outputs, applied = frozen_graph(fn)
    except Exception as exc:
        raise StepFailed(step, f"TensorFlow could not freeze the model's graph: "
                         f"{_first_line(exc)}") from None
    if len(inputs) != 1:
        raise StepFailed(step, f"the frozen graph takes {len(inputs)} inputs ({inputs}); "
                         "expected one image tensor")
    warnings = _Warnings()
    logger = logging.getLogger("tf2onnx")
    logger.addHandler(warnings)
    try:
        with _CONVERTING:  # the name counter is process-wide
            _settle_converter()
            tf2onnx.utils.INTERNAL_NAME = 1  # numbers its new nodes from here, as if fresh
            proto, _ = tf2onnx.convert.from_graph_def(
                graph, input_names=inputs, output_names=outputs, opset=opset,
                tensors_to_rename={inputs[0]: INPUT_NAME})
    except Exception as exc:  # tf2onnx raises bare Exceptions naming the op it cannot map
        raise StepFailed(step, f"tf2onnx could not convert: {_first_line(exc)}") from None
    finally:
        logger.removeHandler(warnings)
    if missing := _unconverted(proto):
        shown = "; ".join(f"{op} (in layer {', '.join(layers[:3])}"
                          f"{', ...' if len(layers) > 3 else ''})"
                          for op, layers in missing.items())
        raise StepFailed(step, f"tf2onnx has no ONNX rule for TensorFlow op {shown}; replace "
                         "that layer with built-in ones, or export the model to ONNX yourself "
                         "and use source kind onnx")
    return proto, {"rewrites": applied,
                   "converter_warnings": list(dict.fromkeys(warnings.messages))}


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:400] if text else type(exc).__name__


def run(model: ModelRef, config: ExportOnnxConfig, ctx: StepContext) -> ModelRef:
    from optimizer.data.dataset import prepared

    name = config.name or config.step
    fn, _ = _tf_callable(model)
    proto, record = convert(fn, config.opset, name)
    for warning in record["converter_warnings"]:
        ctx.progress.log(f"[yellow]note[/] {name}: tf2onnx: {warning} (the graph is correct "
                         "but may be less optimised; recorded in the report)")
    canonical_names(proto)
    labels = proto.metadata_props.add()
    labels.key, labels.value = "labels", json.dumps(model.classes)
    out_path = ctx.out_dir / FILE_NAMES["onnx"]
    out_path.write_bytes(proto.SerializeToString())

    x = prepared(ctx.dataset, "test", model.preprocess)[: config.check_samples]
    expected = np.asarray(fn(x)).astype(np.float32)
    import onnxruntime as ort

    try:
        sess = ort.InferenceSession(str(out_path), providers=["CPUExecutionProvider"])
        got = sess.run(None, {sess.get_inputs()[0].name: x})[0]
    except Exception as exc:
        raise StepFailed(name, f"ONNX Runtime cannot run the exported model: "
                         f"{_first_line(exc)}") from None
    diff = float(np.max(np.abs(got - expected)))
    agree = float(np.mean(got.argmax(1) == expected.argmax(1)))
    if not diff <= config.atol:
        raise StepFailed(
            name,
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
            **{k: v for k, v in record.items() if v},
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

    # numbered in node order, which is stable; the initializers' order is not (a set's)
    for n in g.node:
        n.name = fix(n.name)
        n.input[:] = [fix(x) for x in n.input]
        n.output[:] = [fix(x) for x in n.output]
    for v in (*g.input, *g.output, *g.value_info):
        fix_value(v)
    for t in g.initializer:
        t.name = fix(t.name)
    _shared_constants(g)
    ordered = sorted(g.initializer, key=lambda t: t.name)
    copies = [type(t)() for t in ordered]
    for copy, t in zip(copies, ordered, strict=True):
        copy.CopyFrom(t)
    del g.initializer[:]
    g.initializer.extend(copies)


def _shared_constants(g) -> None:
    """tf2onnx merges equal constants under the name of whichever member it met first in a
    set, which differs between processes; name each merged one by its first use instead."""
    users: dict[str, int] = {}
    for n in g.node:
        for x in n.input:
            users[x] = users.get(x, 0) + 1
    order = {x: i for i, x in enumerate(dict.fromkeys(x for n in g.node for x in n.input))}
    shared = sorted((t for t in g.initializer if users.get(t.name, 0) > 1),
                    key=lambda t: order[t.name])
    taken = {t.name for t in g.initializer} | {x for n in g.node for x in n.output}
    renamed = {}
    for i, t in enumerate(shared):
        new = f"shared_const_{i}"
        while new in taken:
            new += "_"
        renamed[t.name], t.name = new, new
    if renamed:
        for n in g.node:
            n.input[:] = [renamed.get(x, x) for x in n.input]
        for v in g.input:
            v.name = renamed.get(v.name, v.name)
