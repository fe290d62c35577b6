"""Can the build vouch for its source? Scored on the test split before any step runs.

Every later gate compares artifacts with the source, so a source that is wrong about the
data (classes in another order than its outputs, the wrong preprocessing, an untrained
file) makes every artifact look perfect. Two symptoms give it away: accuracy near chance,
and a confusion matrix whose mass sits off the diagonal in a pattern a renaming of the
classes would fix. The second names the order to paste into the recipe.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from optimizer.errors import SourceRejected

# a permutation "fixes" the source when it at least halves the errors and gains this much
MIN_GAIN_POINTS = 5.0
# share of the way from chance to 100% below which a model is called near chance
CHANCE_HEADROOM = 0.1


def confusion(labels: np.ndarray, predicted: np.ndarray, k: int) -> np.ndarray:
    """k x k counts: rows the true class, columns the model's answer."""
    out = np.zeros((k, k), dtype=np.int64)
    np.add.at(out, (labels, predicted), 1)
    return out


def chance(labels: np.ndarray) -> float:
    """Percent right by always answering the commonest test class."""
    return 100.0 * float(np.bincount(labels).max()) / max(1, len(labels))


def near_chance_limit(labels: np.ndarray) -> float:
    """Chance, plus three standard errors or a tenth of the headroom, whichever is more."""
    c = chance(labels)
    p, n = c / 100.0, max(1, len(labels))
    return c + max(300.0 * math.sqrt(p * (1 - p) / n), CHANCE_HEADROOM * (100.0 - c))


def best_order(conf: np.ndarray, classes: list[str]) -> tuple[list[str], float]:
    """The class names in the output order that agrees most with the labels, and the
    accuracy the source would have with it (an optimal assignment on the confusion matrix)."""
    from scipy.optimize import linear_sum_assignment

    rows, cols = linear_sum_assignment(-conf)
    order = list(classes)
    for true, out in zip(rows, cols, strict=True):
        order[out] = classes[true]
    return order, 100.0 * float(conf[rows, cols].sum()) / max(1, int(conf.sum()))


def check(labels: np.ndarray, predicted: np.ndarray, classes: list[str], accuracy: float,
          min_accuracy: float | None, classes_from: str, trained_here: bool = False,
          carried: str | None = None) -> dict[str, Any]:
    """The record for the report; raises SourceRejected when the source cannot be trusted.
    `trained_here`: the tool trained the source itself (an `architecture` source);
    `carried`: where the labels the model carries were read, if the order came from them."""
    conf = confusion(labels, predicted, len(classes))
    order, reordered = best_order(conf, classes)
    limit = near_chance_limit(labels)
    record: dict[str, Any] = {
        "accuracy": round(accuracy, 3), "chance": round(chance(labels), 3),
        "near_chance_below": round(limit, 3), "min_source_accuracy": min_accuracy,
        "best_order_accuracy": round(reordered, 3), "classes_from": classes_from,
    }
    wrong_order = (order != classes and reordered - accuracy >= MIN_GAIN_POINTS
                   and 100.0 - reordered <= 0.5 * (100.0 - accuracy))
    problems = []
    if accuracy < limit:
        below = accuracy < record["chance"] - (limit - record["chance"])
        problems.append(f"{'far below' if below else 'near'} chance ({record['chance']:.2f}% "
                        "for always answering the commonest class)")
    if min_accuracy is not None and accuracy < min_accuracy:
        problems.append(f"below validate.min_source_accuracy {min_accuracy:g}%")
    if wrong_order:
        problems.append(f"its answers match the labels far better with the classes in "
                        f"another order ({reordered:.2f}%)")
    if not problems:
        record["verdict"] = "ok"
        return record
    record["verdict"] = "rejected"
    message = (f"the source model scores {accuracy:.2f}% on the {len(labels)} test images: "
               + "; ".join(problems) + ". Every artifact would copy its mistakes, so nothing "
               "was built.")
    if wrong_order and carried:
        message += (f" The labels the model carries ({carried}) are probably not in its "
                    "output order; write them in this order: "
                    + json.dumps(order, ensure_ascii=False))
    elif wrong_order:
        message += (f" The dataset's classes ({classes_from}) are probably not in the model's "
                    "output order; set them in the recipe, under dataset:  classes: "
                    + json.dumps(order, ensure_ascii=False))
    elif trained_here:
        message += (" It was trained here: train it longer (source.train.epochs) or with "
                    "another source.train.learning_rate.")
    else:
        message += (" Check that the model was trained for this data, and its preprocessing "
                    "(source.preprocess: scale, mean/std, channel_order, fit).")
    record["suggested_classes"] = order if wrong_order else None
    raise SourceRejected(message, record)
