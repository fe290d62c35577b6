"""Removing what the import does not need, with a record of every byte removed."""

from __future__ import annotations

import shutil
from pathlib import Path

from optimizer.model import size_bytes
from optimizer.package.elfcheck import is_elf, needed, soname
from optimizer.package.slim_rules import ENGINE_RULES, RULES


def _under(p: Path, paths: set[Path] | dict[Path, str]) -> bool:
    return p in paths or any(parent in paths for parent in p.parents)


def _protected(root: Path, doomed: set[Path]) -> set[str]:
    """Names of shared libraries some kept ELF file needs."""
    names: set[str] = set()
    for p in root.rglob("*"):
        if p.is_file() and not _under(p, doomed) and is_elf(p):
            names.update(needed(p))
    return names


def _by_distribution(root: Path) -> dict[str, int]:
    from optimizer.package.layers import groups

    return {dist: sum(size_bytes(p) for p in entries)
            for dist, entries in sorted(groups(root).items())}


def zipped_by_distribution(root: Path) -> dict[str, int]:
    """What each distribution takes zipped: a layer holds whole ones, under 50 MB each."""
    from optimizer.archive import files_under
    from optimizer.package.layers import groups
    from optimizer.package.sizes import deflated

    return {dist: sum(deflated(name, f) for e in entries
                      for name, f in (files_under(e) if e.is_dir() else [(e.name, e)]))
            for dist, entries in sorted(groups(root).items())}


ORPHAN_RULE = "*.libs/*: vendored library no kept ELF file needs any more"


def orphans(root: Path) -> list[Path]:
    """Vendored libraries (auditwheel's `*.libs` folders) that no ELF file outside them,
    directly or through another vendored library, needs."""
    vendored = {p for d in root.glob("*.libs") if d.is_dir() for p in d.iterdir()
                if p.is_file() and is_elf(p)}
    wanted = _protected(root, vendored)
    reached: set[Path] = set()
    while True:
        new = {p for p in vendored - reached if p.name in wanted or soname(p) in wanted}
        if not new:
            break
        reached |= new
        for p in new:
            wanted.update(needed(p))
    return sorted(vendored - reached)


def slim(root: Path, engine: str | None = None) -> dict:
    """Apply RULES (and the engine's ENGINE_RULES) under root; returns bytes before/after
    and what each rule removed."""
    before = size_bytes(root)
    dists_before = _by_distribution(root)
    matches: dict[Path, str] = {}
    for pattern, reason in (*RULES, *ENGINE_RULES.get(engine or "", ())):
        for p in sorted(root.glob(pattern)):
            if not any(parent in matches for parent in p.parents):
                matches.setdefault(p, f"{pattern}: {reason}")
    keep = _protected(root, set(matches))
    removed: dict[str, int] = {}
    kept_needed = []
    for p, rule in sorted(matches.items()):
        files = [p] if p.is_file() else [q for q in p.rglob("*") if q.is_file()]
        needed_here = [q for q in files if is_elf(q) and (q.name in keep or soname(q) in keep)]
        if needed_here:  # the whole match stays: a kept library loads something in it
            kept_needed += [q.relative_to(root).as_posix() for q in needed_here]
            continue
        removed[rule] = removed.get(rule, 0) + size_bytes(p)
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
    for p in orphans(root):
        removed[ORPHAN_RULE] = removed.get(ORPHAN_RULE, 0) + p.stat().st_size
        p.unlink()
    dists_after = _by_distribution(root)
    return {
        "bytes_before": before,
        "bytes_after": size_bytes(root),
        "removed_by_rule": dict(sorted(removed.items(), key=lambda kv: -kv[1])),
        "by_distribution": {d: {"before": b, "after": dists_after.get(d, 0)}
                            for d, b in dists_before.items()},
        "kept_because_needed": kept_needed,
    }
