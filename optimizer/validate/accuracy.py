"""Top-1 accuracy on the test split and agreement with the source model's answers."""

from __future__ import annotations

import numpy as np

from optimizer.model import ModelRef


def predict(model: ModelRef, x: np.ndarray) -> np.ndarray:
    if model.kind == "onnx":
        from optimizer.steps.onnx_util import run_batch, session

        return run_batch(session(model.path), x)
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
