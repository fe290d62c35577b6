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
    if kind == "tensorflow":
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        import keras

        model = keras.saving.load_model(str(path), compile=False, safe_mode=True)
        return lambda x: np.asarray(model(x, training=False))
    raise ValueError(f"unknown model runtime '{kind}'")


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
