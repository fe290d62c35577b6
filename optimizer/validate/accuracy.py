"""Top-1 accuracy on the test split, with the model's own runtime or a second one."""

from __future__ import annotations

import base64
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
        from optimizer.quiet import native_stderr_captured

        with native_stderr_captured():  # LiteRT announces its delegate on every (re)size
            run = load(runtime, model.path, threads=os.cpu_count() or 1)
            return np.concatenate([run(x[i:i + batch]) for i in range(0, len(x), batch)])
    from optimizer.sources.tf_models import predict as tf_predict

    return tf_predict(model, x)


def score(probs: np.ndarray, labels: np.ndarray | None) -> dict:
    """Top-1 accuracy in percent, or None for images without labels."""
    return {
        "samples": len(probs),
        "accuracy": None if labels is None else round(
            100.0 * float(np.mean(probs.argmax(axis=1) == labels)), 3),
        "finite": bool(np.isfinite(probs).all()),
    }


def pack(scores: np.ndarray) -> dict:
    """float32 scores as JSON for the measurement cache (exact, and a third of the text)."""
    arr = np.ascontiguousarray(scores, dtype=np.float32)
    return {"shape": list(arr.shape), "float32": base64.b64encode(arr.tobytes()).decode()}


def unpack(doc: dict) -> np.ndarray:
    return np.frombuffer(base64.b64decode(doc["float32"]), dtype=np.float32).reshape(
        doc["shape"])


def test_scores(model: ModelRef, dataset, limit: int | None,
                runtime: str | None = None) -> dict:
    """Score, answers and packed scores on the test split: one unit of work, so it can run
    here or on a Ray worker and come back as the same cached record."""
    from optimizer.data import prepared

    probs = predict(model, prepared(dataset, "test", model.preprocess, limit=limit), runtime)
    labels = dataset.labels_of("test", limit) if dataset.labeled else None
    result = score(probs, labels)
    result["top1"] = probs.argmax(axis=1).tolist()
    result["scores"] = pack(probs)
    return result
