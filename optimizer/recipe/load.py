"""Reading a recipe file: YAML with line numbers, validated against the schema, and every
error as `FILE:LINE: key.path: message`."""

from __future__ import annotations

import difflib
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError

from optimizer.errors import RecipeError
from optimizer.recipe.schema import Recipe, Wiring
from optimizer.recipe.yamlfile import load as load_yaml


def _discriminator(err: dict[str, Any]) -> str:
    return str((err.get("ctx") or {}).get("discriminator", "kind")).strip("'")


def _format_error(err: dict[str, Any], known: list[str]) -> str:
    kind, msg = err["type"], err["msg"]
    if kind == "extra_forbidden":
        key = str(err["loc"][-1])
        near = difflib.get_close_matches(key, known, n=1)
        return f"unknown key '{key}'" + (f" (did you mean '{near[0]}'?)" if near else "")
    if kind == "union_tag_invalid":
        ctx = err.get("ctx", {})
        return f"unknown {_discriminator(err)} {ctx.get('tag')!r}; choose one of " \
            f"{ctx.get('expected_tags')}"
    if kind == "union_tag_not_found":
        return f"missing key '{_discriminator(err)}'"
    if kind == "missing":
        return "required key is missing"
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    inp = err.get("input")
    if kind not in ("value_error", "assertion_error") and not isinstance(inp, dict | list):
        shown = repr(inp)
        msg += f" (got {shown if len(shown) <= 60 else shown[:57] + '...'})"
    return msg


def _model_at(tp: Any, value: Any) -> Any:
    """The pydantic model (or list item type) that validates `value` under annotation `tp`."""
    origin = get_origin(tp)
    if origin is Annotated:
        return _model_at(get_args(tp)[0], value)
    if origin in (Union, UnionType):
        tag = value.get("kind", value.get("step")) if isinstance(value, dict) else None
        options = [a for a in get_args(tp) if isinstance(a, type) and issubclass(a, BaseModel)]
        for option in options:
            for name in ("kind", "step"):
                field = option.model_fields.get(name)
                if field is not None and tag in get_args(field.annotation):
                    return option
        return options[0] if len(options) == 1 else None
    return tp


def _known_keys(data: Any, path: tuple) -> list[str]:
    """Field names of the model at `path`'s parent, for did-you-mean hints."""
    tp: Any = Recipe
    node = data
    for part in path[:-1]:
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            return []
        if isinstance(part, int):
            tp = get_args(tp)[0] if get_origin(tp) is list else None
        elif isinstance(tp, type) and issubclass(tp, BaseModel):
            fields = {f.alias or n: f for n, f in tp.model_fields.items()}
            tp = fields[part].annotation if part in fields else None
        else:
            return []
        tp = _model_at(tp, node)  # resolves unions (Optional included) to a model or None
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [f.alias or n for n, f in tp.model_fields.items()]
    return []


def load_recipe(path: str | Path) -> Recipe:
    """Parse and validate; every error names file, key path and line, and is a RecipeError."""
    path = Path(path)
    doc = load_yaml(path)
    try:
        return Recipe.model_validate(doc.data, context={"base": path.parent.resolve()})
    except ValidationError as exc:
        found = [_recipe_error(path, doc, err) for err in exc.errors()]
        unique = list({e.first: e for e in found}.values())
        first = unique[0]
        raise RecipeError(first.file, first.line, first.path, first.message,
                          also=unique[1:]) from None


def _recipe_error(path: Path, doc, err: dict[str, Any]) -> RecipeError:
    loc = tuple(err["loc"])
    cause = (err.get("ctx") or {}).get("error")
    if isinstance(cause, Wiring):
        loc = cause.loc
    shown = _without_tags(doc.data, loc)
    if err["type"] == "union_tag_invalid":
        shown = (*shown, _discriminator(err))
    dotted = ".".join(str(p) for p in shown) or "(top level)"
    message = _format_error(err, _known_keys(doc.data, shown))
    line = doc.line_for(shown)
    if err["type"] == "missing" and shown[:-1]:
        line = doc.line_for(shown[:-1])
    return RecipeError(str(path), line, dotted, message)


SHAPE_TAGS = ("list", "grid")


def _without_tags(data: Any, loc: tuple) -> tuple:
    """Drop the union tags pydantic puts in error paths (steps.2.quantize.mode -> steps.2.mode).

    Every discriminated union here is tagged by a `kind` or `step` key, and pydantic always
    puts the tag right after the union's own position, so a part equal to the current
    mapping's tag value is the tag.
    """
    node, shown, tag_seen = data, [], False
    for part in loc:
        if part in SHAPE_TAGS and not (isinstance(node, dict) and part in node):
            continue  # a union told apart by shape (steps.N.candidates: list or grid)
        if (not tag_seen and isinstance(node, dict)
                and part in (node.get("kind"), node.get("step"))):
            tag_seen = True
            continue
        shown.append(part)
        tag_seen = False
        try:
            node = node[part]
        except (KeyError, IndexError, TypeError):
            node = None
    return tuple(shown)


def json_schema() -> dict:
    return Recipe.model_json_schema(by_alias=True)
