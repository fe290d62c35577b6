"""Top-1 accuracy on the test split and agreement with the source model's answers."""

from __future__ import annotations

import os

import numpy as np

from optimizer import targets
from optimizer.model import ModelRef


def predict(model: ModelRef, x: np.ndarray, runtime: str | None = None,
            batch: int = 64) -> np.ndarray:
    """Scores with the model's own runtime, or with `runtime` (OpenVINO for an ONNX file)."""
    runtime = runtime or targets.default_runtime(model.kind)
    if runtime == "onnxruntime":
        from optimizer.steps.onnx_util import run_batch, session

        return run_batch(session(model.path), x)
    if runtime in ("litert", "openvino"):
        from optimizer.handler.runtime import load

        run = load(runtime, model.path, threads=os.cpu_count() or 1)
        return np.concatenate([run(x[i:i + batch]) for i in range(0, len(x), batch)])
    from optimizer.sources.tf_models import predict as tf_predict

    return tf_predict(model, x)


def score(probs: np.ndarray, labels: np.ndarray, reference: np.ndarray | None) -> dict:
    """Percentages; `reference` is the source model's top-1 on the same inputs."""
    top1 = probs.argmax(axis=1)
    out = {
        "samples": len(labels),
        "accuracy": round(100.0 * float(np.mean(top1 == labels)), 3),
        "finite": bool(np.isfinite(probs).all()),
    }
    if reference is not None:
        out["agreement"] = round(100.0 * float(np.mean(top1 == reference)), 3)
    return out
