"""YAML loading that remembers where each key came from.

PyYAML drops line numbers once it builds Python objects, and silently keeps the last of two
duplicate keys; recipes need both caught so every error can say file:line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from optimizer.errors import RecipeError

MAX_NODES = 10_000  # after alias expansion; a billion-laughs recipe stops here
MAX_BYTES = 1_000_000


@dataclass
class LoadedYaml:
    file: str
    data: Any
    lines: dict[tuple, int] = field(default_factory=dict)

    def line_for(self, loc: tuple) -> int | None:
        """Line of the deepest part of `loc` that exists in the file.

        Pydantic puts union tags (e.g. a step kind) into error locations; parts that are not
        in the YAML are skipped instead of ending the walk.
        """
        best = self.lines.get((), None)
        path: tuple = ()
        for part in loc:
            candidate = (*path, part)
            if candidate in self.lines:
                path = candidate
                best = self.lines[path]
        return best


def _walk(node: yaml.Node, path: tuple, out: LoadedYaml, budget: list[int]) -> None:
    budget[0] -= 1
    if budget[0] < 0:
        raise RecipeError(
            out.file, node.start_mark.line + 1, "", f"more than {MAX_NODES} YAML nodes after "
            "expanding aliases (alias bomb?)"
        )
    out.lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            key = key_node.value
            line = key_node.start_mark.line + 1
            if key in seen:
                dotted = ".".join(str(p) for p in (*path, key))
                raise RecipeError(
                    out.file, line, dotted, f"duplicate key (first defined on line {seen[key]})"
                )
            seen[key] = line
            out.lines[(*path, key)] = line
            _walk(value_node, (*path, key), out, budget)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, (*path, i), out, budget)


def load(path: Path) -> LoadedYaml:
    file = str(path)
    if not path.is_file():
        raise RecipeError(file, None, "", "recipe file not found")
    if path.stat().st_size > MAX_BYTES:
        raise RecipeError(file, None, "", f"recipe larger than {MAX_BYTES} bytes")
    text = path.read_text(encoding="utf-8", errors="replace")
    try:  # the reader refuses control characters as soon as it is made
        loader = yaml.SafeLoader(text)
    except yaml.YAMLError as exc:
        raise RecipeError(file, None, "", f"invalid YAML: {exc}") from None
    try:
        node = loader.get_single_node()
        if node is None:
            raise RecipeError(file, 1, "", "recipe is empty")
        out = LoadedYaml(file=file, data=None)
        _walk(node, (), out, [MAX_NODES])
        out.data = loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        raise RecipeError(file, line, "", f"invalid YAML: {exc.problem or exc}") from None
    except yaml.YAMLError as exc:
        raise RecipeError(file, None, "", f"invalid YAML: {exc}") from None
    finally:
        loader.dispose()
    if not isinstance(out.data, dict):
        raise RecipeError(file, 1, "", "a recipe must be a mapping of keys to values")
    return out
