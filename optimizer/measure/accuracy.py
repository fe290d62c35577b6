"""Top-1 accuracy on the test split, with the model's own runtime or a second one."""

from __future__ import annotations

import base64

import numpy as np

from optimizer.inference.predict import predict
from optimizer.model import ModelRef


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
    from optimizer.data.dataset import prepared

    probs = predict(model, prepared(dataset, "test", model.preprocess, limit=limit), runtime)
    labels = dataset.labels_of("test", limit) if dataset.labeled else None
    result = score(probs, labels)
    result["top1"] = probs.argmax(axis=1).tolist()
    result["scores"] = pack(probs)
    return result
