"""Label names a model carries: a labels file named in the recipe, an ONNX model's
metadata_props, an MMS archive's synset.txt. Read before anything runs, so the dataset can
be put in the model's output order (or the build refused) in seconds.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

from optimizer.errors import BadInput

# metadata_props keys exporters use for class names (ours writes "labels")
ONNX_KEYS = ("labels", "classes", "class_names", "classLabels", "names")
MAX_LABELS_BYTES = 16 << 20


def parse(text: str, where: str) -> list[str]:
    """A JSON list, a {index: name} mapping (JSON or Python literal, as YOLO exporters
    write), or one name per line."""
    text = text.strip()
    if not text:
        raise BadInput(f"{where}: no labels in it")
    value = None
    if text[0] in "[{":
        try:
            value = json.loads(text)
        except ValueError:
            try:
                value = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                raise BadInput(f"{where}: starts like a list or mapping of labels but does "
                               "not parse") from None
    if isinstance(value, dict):
        try:
            index = {int(k): str(v) for k, v in value.items()}
        except (TypeError, ValueError):
            raise BadInput(f"{where}: a labels mapping needs integer keys") from None
        if sorted(index) != list(range(len(index))):
            raise BadInput(f"{where}: label indices must be 0..{len(index) - 1}")
        value = [index[i] for i in range(len(index))]
    if value is None:
        value = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not isinstance(value, list) or not all(isinstance(v, str | int) for v in value):
        raise BadInput(f"{where}: labels must be a list of names")
    names = [str(v).strip() for v in value]
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise BadInput(f"{where}: label(s) {dup[:5]} appear more than once")
    return names


def read_file(path: Path) -> list[str]:
    try:
        if path.stat().st_size > MAX_LABELS_BYTES:
            raise BadInput(f"{path}: larger than {MAX_LABELS_BYTES:,} bytes; not a labels file")
        return parse(path.read_text(encoding="utf-8-sig"), str(path))
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"{path}: cannot read labels ({exc})") from None


def from_onnx(path: Path) -> tuple[list[str], str] | None:
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:
        return None  # the source loader reports an unreadable model with its own message
    props = {p.key: p.value for p in model.metadata_props}
    for key in ONNX_KEYS:
        if props.get(key, "").strip():
            where = f"{path} metadata_props['{key}']"
            return parse(props[key], where), where
    return None


def of_source(cfg) -> tuple[list[str], str] | None:
    """(labels in output order, where they were read) or None when the model has none."""
    if (path := getattr(cfg, "labels", None)) is not None:
        return read_file(path), str(path)
    if cfg.kind == "onnx":
        return from_onnx(cfg.path)
    if cfg.kind == "mms-archive":
        from optimizer.mxnet import archive

        return archive.synset(cfg.path)
    return None
