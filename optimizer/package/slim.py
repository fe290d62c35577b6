"""Removing what the import does not need, with a record of every byte removed."""

from __future__ import annotations

import shutil
from pathlib import Path

from optimizer.package.elfcheck import is_elf, needed
from optimizer.package.slim_rules import RULES


def _tree_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _under(p: Path, paths: set[Path] | dict[Path, str]) -> bool:
    return p in paths or any(parent in paths for parent in p.parents)


def _protected(root: Path, doomed: set[Path]) -> set[str]:
    """Names of shared libraries some kept ELF file needs."""
    names: set[str] = set()
    for p in root.rglob("*"):
        if p.is_file() and not _under(p, doomed) and is_elf(p):
            names.update(needed(p))
    return names


def slim(root: Path) -> dict:
    """Apply RULES under root; returns bytes before/after and what each rule removed."""
    before = _tree_size(root)
    matches: dict[Path, str] = {}
    for pattern, reason in RULES:
        for p in sorted(root.glob(pattern)):
            if not any(parent in matches for parent in p.parents):
                matches.setdefault(p, f"{pattern}: {reason}")
    keep = _protected(root, set(matches))
    removed: dict[str, int] = {}
    kept_needed = []
    for p, rule in sorted(matches.items()):
        if p.is_file() and p.name in keep:
            kept_needed.append(p.relative_to(root).as_posix())
            continue
        removed[rule] = removed.get(rule, 0) + _tree_size(p)
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
    return {
        "bytes_before": before,
        "bytes_after": _tree_size(root),
        "removed_by_rule": dict(sorted(removed.items(), key=lambda kv: -kv[1])),
        "kept_because_needed": kept_needed,
    }
