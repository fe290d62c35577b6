"""Label names as files hold them: one per line, a JSON list, or an index-to-name mapping
(JSON or the Python literal YOLO exporters write). Shared by the labels a recipe names, ONNX
metadata and MMS synset files."""

from __future__ import annotations

import ast
import json
from pathlib import Path

from optimizer.errors import BadInput

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
