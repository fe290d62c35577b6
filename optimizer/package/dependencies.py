"""An engine's wheels for a target (platform, Python, glibc), slimmed and checked: resolved
once and cached, so an unchanged rebuild downloads nothing."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

from optimizer import targets, wheels
from optimizer.cache import make_key
from optimizer.codekey import code_of
from optimizer.errors import PackageFailed
from optimizer.package import elfcheck, slim

# (key, label, produce, remember_failure=False) -> (cache entry, reused): the build's
# counted, logged cache
CachedDir = Callable[..., tuple[Path, bool]]


class Dependencies:
    def __init__(self, cached: CachedDir) -> None:
        self.cached = cached

    def resolve(self, engine: str, python: str, arch: str, glibc: str,
                extra: tuple[str, ...] = ()) -> Path:
        """Cache entry with deps/ (slimmed, ELF-checked) and slim.json."""
        reqs = wheels.pinned(wheels.requirements(engine) + extra, arch)
        key = make_key({"deps": reqs, "python": python, "arch": arch, "glibc": glibc,
                        "code": code_of(Dependencies)})

        def produce(tmp: Path) -> None:
            deps = tmp / "deps"
            wheels.resolve(reqs, python, arch, glibc, deps)
            report = slim.slim(deps, engine)
            count, problems = elfcheck.check_tree(deps, arch, glibc)
            if problems:
                shown = "\n  ".join(str(p) for p in problems[:10])
                raise PackageFailed(f"{len(problems)} shared object(s) cannot run on {arch} "
                                    f"with glibc {glibc}:\n  {shown}")
            # zipped sizes decide layer fit; past the unzipped limit no zip can fit anyway
            fits_unzipped = report["bytes_after"] <= targets.LIMITS.unzipped_bytes
            report.update(requirements=reqs, elf_files_checked=count, python=python,
                          arch=arch, glibc=glibc, zipped_by_distribution=(
                              slim.zipped_by_distribution(deps) if fits_unzipped else {}))
            (tmp / "slim.json").write_text(json.dumps(report, indent=1))

        return self.cached(key, f"dependencies {' '.join(reqs)} for Python {python} {arch}",
                           produce, remember_failure=True)[0]

    def wheel_sizes(self, engine: str, python: str, arch: str, glibc: str) -> dict[str, int]:
        """The compressed size of each wheel an engine needs on the target (no download)."""
        reqs = wheels.pinned(wheels.requirements(engine), arch)
        key = make_key({"wheel_sizes": reqs, "python": python, "arch": arch, "glibc": glibc,
                        "code": code_of(Dependencies)})

        def produce(tmp: Path) -> None:
            (tmp / "sizes.json").write_text(json.dumps(
                wheels.wheel_sizes(reqs, python, arch, glibc, tmp / "work"), indent=1))
            shutil.rmtree(tmp / "work", ignore_errors=True)

        entry = self.cached(key, f"wheel sizes of {' '.join(reqs)} for Python {python} {arch}",
                            produce, remember_failure=True)[0]
        return json.loads((entry / "sizes.json").read_text())

