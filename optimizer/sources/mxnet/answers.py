"""Reading an MMS handler's answer for one image, whatever shape its author chose.

Stock MMS vision services answer a top-5 list of {"probability": p, "class": name}; the
example handlers {"label", "score"}; others a {label: score} map, a bare label, or the
score vector itself.
"""

from __future__ import annotations

from typing import Any

LABEL_KEYS = ("label", "class", "class_name", "name", "category", "prediction")
SCORE_KEYS = ("score", "probability", "prob", "confidence")
WRAPPERS = ("predictions", "prediction", "results", "result", "top", "outputs")


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    return float(value) if isinstance(value, (int, float)) else None


def _label(value: Any, classes: list[str]) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < len(classes):
        return classes[value]
    if isinstance(value, (str, int, float)) and not isinstance(value, bool):
        text = str(value).strip()
        # synset lines often read "n01440764 tench": either half may be what was meant
        if text not in classes and " " in text and text.split(" ", 1)[1] in classes:
            return text.split(" ", 1)[1]
        return text
    return None


def _item(entry: dict, classes: list[str]) -> tuple[str | None, float | None]:
    label = next((entry[k] for k in LABEL_KEYS if k in entry), None)
    score = next((_number(entry[k]) for k in SCORE_KEYS if k in entry), None)
    return _label(label, classes), score


def read_answer(answer: Any, classes: list[str]) -> tuple[str | None, dict[str, float]]:
    """(top-1 label, {label: score} for the labels it scored); (None, {}) if unreadable."""
    if isinstance(answer, dict):
        for key in WRAPPERS:
            if key in answer:
                return read_answer(answer[key], classes)
        top, score = _item(answer, classes)
        if top is not None:
            return top, ({top: score} if score is not None else {})
        pairs = {str(k): _number(v) for k, v in answer.items()}
        if pairs and all(v is not None for v in pairs.values()):
            scored = {_label(k, classes) or k: float(v) for k, v in pairs.items()}  # type: ignore[arg-type]
            return max(scored, key=scored.__getitem__), scored
        return None, {}
    if isinstance(answer, list) and answer:
        if all(isinstance(e, dict) for e in answer):
            items = [_item(e, classes) for e in answer]
            scored = {k: v for k, v in items if k is not None and v is not None}
            top = max(scored, key=scored.__getitem__) if scored else items[0][0]
            return top, scored
        if isinstance(answer[0], (list, dict)) and len(answer) == 1:  # a batch of one
            return read_answer(answer[0], classes)
        numbers = [_number(v) for v in answer]
        if all(v is not None for v in numbers) and len(numbers) == len(classes):
            scored = dict(zip(classes, numbers, strict=True))
            return max(scored, key=scored.__getitem__), scored  # type: ignore[arg-type]
        return None, {}
    return _label(answer, classes), {}


def shape_of(answer: Any) -> dict[str, Any] | None:
    """A top-k list of {label, score} objects as the handler wrote it (its key names, in
    its order), so the function can answer the same way; None for any other shape."""
    if not (isinstance(answer, list) and answer and all(isinstance(e, dict) for e in answer)):
        return None
    keys = list(answer[0])
    label = next((k for k in keys if k in LABEL_KEYS), None)
    score = next((k for k in keys if k in SCORE_KEYS), None)
    if label is None or score is None:
        return None
    return {"kind": "top-k list", "k": len(answer), "label": label, "score": score,
            "keys": keys}
