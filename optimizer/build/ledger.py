"""The build's use of the cache: every look-up counted, logged, and failures remembered.

Counts are what the report's cache line says: hits (made by an earlier build), misses (ran
now) and shared (made earlier in this build and used again, like one dependency entry for
the engine comparison and the package).
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from optimizer.cache import Cache, make_key
from optimizer.errors import BadInput, OptimizerError
from optimizer.model import ModelRef
from optimizer.progress import Progress


class Ledger:
    def __init__(self, cache: Cache, progress: Progress, force: bool = False,
                 retry: bool = False) -> None:
        self.cache, self.progress = cache, progress
        self.force = force  # make everything again
        self.retry = retry  # ask again what failed before (a wheel the index lacked)
        self._lock = threading.Lock()  # candidates may finish on several threads
        self.hits = self.misses = self.shared = 0
        self._made: set[str] = set()

    def _tally(self, key: str, hit: bool) -> bool:
        """Count one use of `key`; True when it was made earlier in this build."""
        with self._lock:
            if not hit:
                self.misses += 1
                self._made.add(key)
                return False
            if key in self._made:
                self.shared += 1
                return True
            self.hits += 1
            return False

    def ran(self, label: str) -> None:
        """Work that has no cache entry of its own (a Docker build): it ran, so it counts."""
        self._tally(f"ran:{label}:{time.monotonic_ns()}", False)
        self.progress.log(f"[cyan]run[/]    {label}")

    def cached_dir(self, key: str, label: str, produce: Callable[[Path], Any],
                   remember_failure: bool = False) -> tuple[Path, bool]:
        """(entry, reused): made by `produce(tmp)` unless it exists; counted and logged.
        `remember_failure`: a look-up that failed (no wheel for the target) is stored and
        raised again on the next build instead of asking the index again (--retry asks)."""
        failed = f"{key}-failed"
        if remember_failure and not (self.force or self.retry):
            if (known := self.cache.get_json(failed)) is not None:
                self._tally(failed, True)
                self.progress.log(f"[green]cached[/] {label}: failed before (--retry asks "
                                  "again)")
                raise BadInput(known["error"])

        def run(tmp: Path) -> None:
            self.progress.log(f"[cyan]run[/]    {label}")
            produce(tmp)

        try:
            path, hit = self.cache.ensure_dir(key, run, {"label": label}, self.force)
        except OptimizerError as exc:
            self._tally(key, False)  # it ran, and failed
            if remember_failure:
                self.cache.put_json(failed, {"error": str(exc), "label": label})
            raise
        if self._tally(key, hit):
            self.progress.log(f"[green]reused[/] {label} (made earlier in this build)")
        elif hit:
            self.progress.log(f"[green]cached[/] {label}")
        return path, hit

    def cached_parts(self, parts: dict[str, Any], label: str,
                     produce: Callable[[Path], None]) -> Path:
        """StepContext.cached: an entry keyed by its parts."""
        return self.cached_dir(make_key(parts), label, produce)[0]

    def cached_model(self, key: str, label: str,
                     produce: Callable[[Path, Path], ModelRef]) -> tuple[ModelRef, bool, float]:
        """(model, reused, seconds): made by `produce(tmp, checkpoints)`; checkpoints outlive
        a crash, not success."""
        t0 = time.perf_counter()
        checkpoints = self.checkpoints(key)
        path, hit = self.cached_dir(
            key, label, lambda tmp: produce(tmp, checkpoints).write_meta(tmp))
        shutil.rmtree(checkpoints, ignore_errors=True)
        return ModelRef.read(path), hit, 0.0 if hit else time.perf_counter() - t0

    def checkpoints(self, key: str) -> Path:
        return self.cache.root / "checkpoints" / key

    def measured(self, key: str, what: str, compute: Callable[[], Any]) -> Any:
        """A cached measurement: reused unless --force, else taken, logged and stored."""
        hit = None if self.force else self.cache.get_json(key)
        self._tally(key, hit is not None)
        if hit is None:
            self.progress.log(f"[cyan]measure[/] {what}")
            hit = compute()
            self.cache.put_json(key, hit)
        return hit

    def summary(self) -> dict[str, Any]:
        """report.json's `cache`."""
        return {"root": str(self.cache.root), "hits": self.hits, "misses": self.misses,
                "shared": self.shared, "all_cached": self.misses == 0}
