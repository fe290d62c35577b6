"""How far an artifact's answers are from the source's, overall and class by class.

With labels these add to accuracy; without labels they are the whole story: top-1
agreement, the mean KL divergence of the artifact's probabilities from the source's, and
the largest change in any probability. Per class, quantization often hurts one class while
the mean barely moves, so each class gets its own accuracy (or agreement) and the largest
drop is a gate of its own.
"""

from __future__ import annotations

import numpy as np

from optimizer.artifact import Agreement, ClassDrop, PerClass

EPS = 1e-7


def distributions(scores: np.ndarray) -> np.ndarray:
    """Rows of probabilities: a softmax of logits, or outputs that already are (quantized
    softmax rows only sum to one within a few percent, so they are renormalised)."""
    s = np.asarray(scores, dtype=np.float64)
    if s.size and s.min() >= 0 and np.allclose(s.sum(axis=1), 1.0, atol=0.05):
        return s / np.maximum(s.sum(axis=1, keepdims=True), EPS)
    z = np.exp(s - s.max(axis=1, keepdims=True))
    return z / z.sum(axis=1, keepdims=True)


def compare(source: np.ndarray, other: np.ndarray) -> Agreement:
    """Top-1 agreement (%), mean KL(source || other) in nats, and max |delta p|."""
    p, q = distributions(source), distributions(other)
    kl = np.sum(p * (np.log(np.clip(p, EPS, None)) - np.log(np.clip(q, EPS, None))), axis=1)
    return Agreement(agreement=round(100.0 * float(np.mean(p.argmax(1) == q.argmax(1))), 3),
                     mean_kl=round(float(np.mean(kl)), 6),
                     max_prob_diff=round(float(np.max(np.abs(p - q))), 6))


def per_class(classes: list[str], top1: np.ndarray, labels: np.ndarray | None,
              source_top1: np.ndarray) -> PerClass:
    """Accuracy per true class, or (no labels) agreement per class the source answered."""
    basis = source_top1 if labels is None else labels
    n, score = [], []
    for c in range(len(classes)):
        mine = basis == c
        n.append(int(mine.sum()))
        score.append(round(100.0 * float(np.mean(top1[mine] == c)), 3) if mine.any() else None)
    return PerClass("agreement with the source's answers" if labels is None else "accuracy",
                    tuple(n), tuple(score))


def class_drop(classes: list[str], mine: PerClass, source: PerClass) -> ClassDrop:
    """The largest per-class drop in points against the source (or from full agreement)."""
    drops = []
    for c, (s, ref) in enumerate(zip(mine.score, source.score, strict=True)):
        if s is None:
            continue
        base = 100.0 if mine.by_agreement else (ref or 0.0)
        drops.append((round(base - s, 3), c))
    if not drops:
        return ClassDrop(0.0, None)
    drop, c = max(drops, key=lambda d: (d[0], -d[1]))
    return ClassDrop(drop, classes[c] if drop > 0 else None)
