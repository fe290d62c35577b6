"""Scores of a batch of inputs from any model file, with its own engine or a named one."""

from __future__ import annotations

import os

import numpy as np

from optimizer import targets
from optimizer.model import ModelRef


def predict(model: ModelRef, x: np.ndarray, runtime: str | None = None,
            batch: int = 64) -> np.ndarray:
    """Scores with the model's own runtime, or with `runtime` (OpenVINO for an ONNX file)."""
    runtime = runtime or targets.default_engine(model.kind)
    if runtime == "onnxruntime":
        from optimizer.inference.onnx import run_batch, session

        return run_batch(session(model.path), x)
    if runtime in ("litert", "openvino"):
        from optimizer.handler.engines import load
        from optimizer.quiet import native_stderr_captured

        with native_stderr_captured():  # LiteRT announces its delegate on every (re)size
            run = load(runtime, model.path, threads=os.cpu_count() or 1)
            return np.concatenate([run(x[i:i + batch]) for i in range(0, len(x), batch)])
    from optimizer.inference.tf import predict as tf_predict

    return tf_predict(model, x)
