"""A teacher's outputs on the training images, as logits for distillation at a temperature."""

from __future__ import annotations

import numpy as np

from optimizer.inference.predict import predict
from optimizer.model import ModelRef
from optimizer.preprocess_spec import apply

CHUNK = 4096


def as_logits(out: np.ndarray) -> np.ndarray:
    """Classifiers end in softmax or not; log-probabilities are logits up to a constant."""
    out = out.astype(np.float64)
    if out.min() >= 0 and np.allclose(out.sum(axis=1), 1.0, atol=1e-3):
        return np.log(np.clip(out, 1e-12, None)).astype(np.float32)
    return out.astype(np.float32)


def logits(teacher: ModelRef, images: list[np.ndarray]) -> np.ndarray:
    """In chunks, so 60,000 images at the teacher's resolution never sit in memory at once."""
    parts = [predict(teacher, apply(images[i : i + CHUNK], teacher.preprocess))
             for i in range(0, len(images), CHUNK)]
    out = np.concatenate(parts)
    if out.ndim != 2 or out.shape[1] != len(teacher.classes):
        raise ValueError(f"teacher gives outputs of shape {out.shape[1:]}, expected "
                         f"({len(teacher.classes)},) class scores")
    if not np.isfinite(out).all():
        raise ValueError("teacher gives non-finite outputs")
    return as_logits(out)
