"""The usual ways an image endpoint prepared its pixels, as Preprocess variants to try
against its handler's answers: scale 1 or 1/255; no normalisation, ImageNet's, or the
numbers written in the handler's own code; RGB or BGR; stretch, or resize then crop the
center; then the resampling filter of the best. The size is the model's (the signature's),
so it is not varied."""

from __future__ import annotations

import ast
import json

from optimizer.preprocess_spec import Preprocess

IMAGENET_MEAN = [0.485, 0.456, 0.406]  # in 0..1 units
IMAGENET_STD = [0.229, 0.224, 0.225]
MAX_FOUND = 6
NORMALISATION = ("scale", "mean", "std")
FILTERS = ("bilinear", "bicubic-opencv", "bicubic", "nearest")


def numbers_in(source: str | None, channels: int) -> list[list[float]]:
    """Lists of one number per channel written in the handler's code (mean/std candidates)."""
    if not source:
        return []
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    found: list[list[float]] = []
    for node in ast.walk(tree):
        if not isinstance(node, (ast.List, ast.Tuple)) or len(node.elts) != channels:
            continue
        values = [_constant(e) for e in node.elts]
        if all(v is not None for v in values) and values not in found:
            found.append(values)  # type: ignore[arg-type]
    return found[:MAX_FOUND]


def _constant(node: ast.expr) -> float | None:
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        inner = _constant(node.operand)
        return -inner if inner is not None else None
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) \
            and not isinstance(node.value, bool):
        return float(node.value)
    return None


def _scale_for(values: list[float]) -> float:
    """Numbers above ~1.5 were written for 0..255 pixels; smaller ones for 0..1."""
    return 1.0 if max(abs(v) for v in values) > 1.5 else 1 / 255


def normalisations(source: str | None, channels: int) -> list[tuple[list[float], list[float],
                                                                     float]]:
    """(mean, std, scale) candidates."""
    out = [([0.0], [1.0], 1.0), ([0.0], [1.0], 1 / 255)]
    if channels == 3:
        out += [(IMAGENET_MEAN, IMAGENET_STD, 1 / 255),
                ([v * 255 for v in IMAGENET_MEAN], [v * 255 for v in IMAGENET_STD], 1.0)]
    found = numbers_in(source, channels)
    for mean in found:
        out.append((mean, [1.0], _scale_for(mean)))
        for std in found:
            if std is not mean and all(v > 0 for v in std):
                out.append((mean, std, _scale_for(mean + std)))
    return out


def variants(pre: Preprocess, source: str | None) -> list[Preprocess]:
    assert pre.size is not None
    crop_to = round(min(pre.size) * 256 / 224)  # ImageNet's resize 256, crop 224
    orders = ("RGB", "BGR") if pre.channels == 3 else ("RGB",)
    out: dict[str, Preprocess] = {}
    for mean, std, scale in normalisations(source, pre.channels):
        for order in orders:
            for fit, resize_to in (("stretch", None), ("crop", crop_to)):
                data = {**pre.model_dump(), "mean": mean, "std": std, "scale": scale,
                        "channel_order": order, "fit": fit, "resize_to": resize_to}
                try:
                    candidate = Preprocess.model_validate(data)
                except ValueError:
                    continue
                out.setdefault(candidate.model_dump_json(), candidate)
    return list(out.values())


def filters(best: Preprocess) -> list[Preprocess]:
    """The best variant with each resampling filter: MMS's stock services resized with
    OpenCV's bicubic (MXNet's imresize), hand-written ones mostly with PIL's bilinear."""
    return [best.model_copy(update={"resize": f}) for f in FILTERS]


def describe(found: Preprocess, pre: Preprocess) -> str:
    """The fields to paste under `source:` as `preprocess:`, in YAML flow style: the
    normalisation always, other fields where they differ from the recipe's."""
    new, old = found.model_dump(mode="json"), pre.model_dump(mode="json")
    keys = [k for k in new if k in NORMALISATION or new[k] != old[k]]
    return "{" + ", ".join(f"{k}: {json.dumps(new[k])}" for k in keys) + "}"
