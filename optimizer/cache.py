"""Content-addressed store for step outputs and validation results.

Keys hash the input's digest, the step's config, the versions of the libraries it calls and
the source of the code that runs it, so an edit to any of those rebuilds and nothing else
does. Entries are written to a private temporary folder and renamed into place: a killed
build leaves at most an orphan temporary folder, never a half entry, and two builds racing
for the same key both end with one complete entry.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any

ENTRY = "entry.json"
FORMAT = 1


def default_root() -> Path:
    env = os.environ.get("OPTIMIZER_CACHE")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "optimizer"


def envs_root() -> Path:
    """Where tool environments live (MXNet's venv, emulation roots): OPTIMIZER_ENVS, else
    `envs` in the default cache, so they outlive any one build's cache."""
    if env := os.environ.get("OPTIMIZER_ENVS"):
        return Path(env)
    return default_root() / "envs"


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive lock on `path` across processes, for making something once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@cache
def dist_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def versions(names: tuple[str, ...]) -> dict[str, str | None]:
    return {n: dist_version(n) for n in names}


@cache
def code_digest(*files: str) -> str:
    h = hashlib.sha256()
    for f in sorted(files):
        h.update(Path(f).read_bytes())
    return h.hexdigest()


def make_key(parts: dict[str, Any]) -> str:
    blob = json.dumps({"format": FORMAT, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def _file_digests(folder: Path) -> dict[str, str]:
    out = {}
    for p in sorted(folder.rglob("*")):
        if p.is_file() and p.name != ENTRY:
            out[p.relative_to(folder).as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


class Cache:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.objects = root / "objects"

    def _path(self, key: str) -> Path:
        return self.objects / key[:2] / key

    def get_dir(self, key: str) -> Path | None:
        """The entry's folder if it is complete and its files still match their digests."""
        path = self._path(key)
        entry = path / ENTRY
        if not entry.is_file():
            return None
        try:
            recorded = json.loads(entry.read_text())["files"]
        except (OSError, ValueError, KeyError):
            return None
        if _file_digests(path) != recorded:
            return None  # tampered or bit-rotted: treat as a miss and rebuild
        return path

    @contextmanager
    def put_dir(self, key: str, meta: dict[str, Any] | None = None) -> Iterator[Path]:
        """Yields an empty folder to fill; publishes it atomically if the block succeeds."""
        final = self._path(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        prefix = f".tmp-{key[:12]}-{os.getpid()}-"  # the pid lets sweep_orphans tell live from dead
        tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=final.parent))
        try:
            yield tmp
            entry = {"key": key, "meta": meta or {}, "files": _file_digests(tmp)}
            (tmp / ENTRY).write_text(json.dumps(entry, indent=1, sort_keys=True))
            _fsync_tree(tmp)
            if final.exists() and self.get_dir(key) is None:
                shutil.rmtree(final, ignore_errors=True)  # a corrupt entry we may replace
            try:
                os.rename(tmp, final)
            except OSError:
                if self.get_dir(key) is None:  # not a lost race: a real failure
                    raise
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def ensure_parts(self, parts: dict[str, Any], label: str,
                     produce: Callable[[Path], None]) -> Path:
        """ensure_dir keyed by `make_key(parts)`: the StepContext.cached contract."""
        return self.ensure_dir(make_key(parts), produce, {"label": label})[0]

    def ensure_dir(self, key: str, produce: Callable[[Path], Any],
                   meta: dict[str, Any] | None = None, force: bool = False) -> tuple[Path, bool]:
        """(entry folder, whether it was already there): reuse the entry, or fill a new one
        with `produce(tmp)` and return it as read back from the store."""
        if not force and (hit := self.get_dir(key)):
            return hit, True
        with self.put_dir(key, meta) as tmp:
            produce(tmp)
        hit = self.get_dir(key)
        assert hit is not None, "an entry just written must be readable"
        return hit, False

    def sweep_orphans(self) -> int:
        """Remove temporary folders whose build is gone (SIGKILL, power loss).

        Liveness, not age: a step may run for hours, and its folder must survive a second
        build starting meanwhile. The cache is per machine, so the owner's pid is checkable.
        """
        if not self.objects.is_dir():
            return 0
        removed = 0
        for tmp in self.objects.glob("*/.tmp-*"):
            if _owner_alive(tmp.name):
                continue
            shutil.rmtree(tmp, ignore_errors=True)  # tolerate another build removing it first
            removed += 1
        return removed

    def get_json(self, key: str) -> Any | None:
        path = self._path(key) / "result.json"
        return json.loads(path.read_text()) if self.get_dir(key) else None

    def put_json(self, key: str, data: Any) -> None:
        with self.put_dir(key) as tmp:
            (tmp / "result.json").write_text(json.dumps(data, indent=1, sort_keys=True))


def _owner_alive(name: str) -> bool:
    """Whether the process named in `.tmp-<key>-<pid>-<random>` still runs."""
    parts = name.split("-")
    if len(parts) < 4 or not parts[2].isdigit():
        return False  # not a name this module writes
    return pid_alive(int(parts[2]))


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def _fsync_tree(folder: Path) -> None:
    for p in folder.rglob("*"):
        if p.is_file():
            with p.open("rb") as f:
                os.fsync(f.fileno())
