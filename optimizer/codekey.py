"""The code a cached result depends on, found from the imports rather than listed by hand.

A result made by a function depends on the source of its module and of every module of this
package that module imports, directly or not: function-local and type-only imports count,
and so do the packages (`__init__`) above each module, which run when it is imported. A
hand-kept list of files misses the helper two imports away (the ONNX Runtime session that
every accuracy goes through), and then an upgrade reuses results the old code measured.
"""

from __future__ import annotations

import ast
import hashlib
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from types import FunctionType, ModuleType

PACKAGE = Path(__file__).resolve().parent
NAME = PACKAGE.name


@cache
def modules() -> dict[str, Path]:
    """Every module of the package, by dotted name, and its file."""
    out = {}
    for p in sorted(PACKAGE.rglob("*.py")):
        parts = [NAME, *p.relative_to(PACKAGE).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def _parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


@cache
def imports(module: str) -> frozenset[str]:
    """The modules of this package that `module` imports, anywhere in its file."""
    mods = modules()
    path = mods[module]
    pkg = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                keep = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                base = ".".join(keep + ([node.module] if node.module else []))
            names = [base] + [f"{base}.{a.name}" for a in node.names]
        for name in names:
            while name and name not in mods:
                name = name.rpartition(".")[0]
            if name and name != module:
                found.add(name)
    return frozenset(found)


def closure(names: Iterable[str]) -> list[str]:
    """The modules `names`, everything they import from this package, transitively, and
    the packages above each of them."""
    todo, seen = list(names), set()
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        todo += [*imports(m), *(p for p in _parents(m) if p in modules())]
    return sorted(seen)


@cache
def digest(*names: str) -> str:
    """sha256 over the names and sources of the closure of the modules `names`."""
    h = hashlib.sha256()
    for m in closure(names):
        h.update(m.encode() + b"\0" + modules()[m].read_bytes() + b"\0")
    return h.hexdigest()


def code_of(*made_by: FunctionType | ModuleType | type | str) -> str:
    """The digest of the code behind functions, classes or modules (or module names)."""
    names = []
    for obj in made_by:
        name = obj if isinstance(obj, str) else getattr(obj, "__module__", None) or obj.__name__
        if name == "__main__" or name not in modules():
            raise ValueError(f"{obj!r} is not code of the {NAME} package")
        names.append(name)
    return digest(*sorted(set(names)))
