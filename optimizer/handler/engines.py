"""Loading the packaged model once, and running a batch through it."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np


def threads_for_memory(memory_mb: int, steps: Sequence[Sequence[int]], mb_per_vcpu: int) -> int:
    """Whole vCPUs Lambda gives this memory size; a fractional share still runs one thread."""
    if memory_mb < mb_per_vcpu:
        return 1
    for bound, count in steps:
        if memory_mb <= bound:
            return int(count)
    return max(1, math.ceil(memory_mb / mb_per_vcpu))


def memory_mb(default: int) -> int:
    try:
        return int(os.environ.get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", default))
    except ValueError:
        return default


# the module each engine's load imports first, timed apart from the load itself
ENGINE_MODULES = {"onnxruntime": "onnxruntime", "litert": "ai_edge_litert.interpreter",
                   "openvino": "openvino", "tensorflow": "tensorflow",
                   "intel-tensorflow": "tensorflow"}


def import_engine(kind: str) -> None:
    import importlib

    if kind in ENGINE_MODULES:
        importlib.import_module(ENGINE_MODULES[kind])


def load(kind: str, path: Path, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    """A function from an input batch to the model's first output."""
    if kind == "onnxruntime":
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        opts.log_severity_level = 3
        sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        name = sess.get_inputs()[0].name
        return lambda x: np.asarray(sess.run(None, {name: x})[0])
    if kind == "litert":
        return _litert(path, threads)
    if kind == "openvino":
        import openvino as ov

        # f32 precision: a host with bf16 or AMX must not quietly change the arithmetic
        compiled = ov.Core().compile_model(str(path), "CPU", {
            "INFERENCE_NUM_THREADS": threads, "NUM_STREAMS": 1, "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_PRECISION_HINT": "f32"})
        request, output = compiled.create_infer_request(), compiled.output(0)
        return lambda x: np.array(request.infer({0: x})[output])
    if kind in ("tensorflow", "intel-tensorflow"):
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        import keras

        model = keras.saving.load_model(str(path), compile=False, safe_mode=True)
        return lambda x: np.asarray(model(x, training=False))
    raise ValueError(f"unknown model runtime '{kind}'")


def _litert(path: Path, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    """LiteRT with XNNPACK; the input is resized when the batch size changes."""
    from ai_edge_litert.interpreter import Interpreter

    it = Interpreter(model_path=str(path), num_threads=threads)
    inp = it.get_input_details()[0]
    out_index = it.get_output_details()[0]["index"]
    shape: list[tuple[int, ...]] = [tuple(inp["shape"])]
    it.allocate_tensors()

    def run(x: np.ndarray) -> np.ndarray:
        if x.shape != shape[0]:
            it.resize_tensor_input(inp["index"], list(x.shape))
            it.allocate_tensors()
            shape[0] = x.shape
        it.set_tensor(inp["index"], np.ascontiguousarray(x, dtype=inp["dtype"]))
        it.invoke()
        return np.array(it.get_tensor(out_index))
    return run


def top_k(scores: np.ndarray, labels: list[str], k: int, logits: bool) -> list[list[dict]]:
    if logits:
        z = scores - scores.max(axis=1, keepdims=True)
        e = np.exp(z)
        scores = e / e.sum(axis=1, keepdims=True)
    k = min(k, scores.shape[1])
    out = []
    for row in scores:
        order = np.argsort(-row, kind="stable")[:k]
        out.append([{"label": labels[i], "index": int(i), "score": round(float(row[i]), 6)}
                    for i in order])
    return out
