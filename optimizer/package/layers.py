"""Splitting a dependency folder into Lambda layers by distribution.

A distribution (its packages, its .libs folder and its dist-info) always stays in one
layer, so every layer is importable on its own terms; the largest go first, each to the
currently smallest layer, which keeps the layers even and the split deterministic.
"""

from __future__ import annotations

import csv
from pathlib import Path, PurePosixPath

from optimizer.model import size_bytes


def _owner_map(root: Path) -> dict[str, str]:
    """Top-level entry -> distribution name, read from each dist-info RECORD."""
    owners: dict[str, str] = {}
    for info in sorted(root.glob("*.dist-info")):
        dist = info.name.split("-")[0].lower()
        owners[info.name] = dist
        record = info / "RECORD"
        if record.is_file():
            with record.open(newline="") as f:
                for row in csv.reader(f):
                    if row and not row[0].startswith(".."):
                        owners.setdefault(PurePosixPath(row[0]).parts[0], dist)
    return owners


def groups(root: Path) -> dict[str, list[Path]]:
    """distribution -> its top-level entries."""
    owners = _owner_map(root)
    out: dict[str, list[Path]] = {}
    for entry in sorted(root.iterdir()):
        out.setdefault(owners.get(entry.name, entry.name), []).append(entry)
    return out


def assign(sizes: dict[str, int], count: int) -> list[list[str]]:
    """Distributions into `count` layers: the largest first, each to the smallest layer so
    far (ties to the first); layers left empty are dropped."""
    bins: list[list[str]] = [[] for _ in range(count)]
    totals = [0] * count
    for dist in sorted(sizes, key=lambda d: (-sizes[d], d)):
        i = min(range(count), key=lambda k: (totals[k], k))
        bins[i].append(dist)
        totals[i] += sizes[dist]
    return [b for b in bins if b]


def split(root: Path, count: int) -> list[list[Path]]:
    """count lists of top-level entries, balanced by unpacked size."""
    dists = groups(root)
    sizes = {d: sum(size_bytes(p) for p in entries) for d, entries in dists.items()}
    return [sorted(p for d in group for p in dists[d]) for group in assign(sizes, count)]
