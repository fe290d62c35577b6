"""Which Python runs a target's code on this machine: the runtime's version, natively."""

from __future__ import annotations

import glob
import os
import platform
import shutil
from pathlib import Path


def find_python(version: str) -> Path | None:
    """A CPython of this major.minor: under pyenv, or on PATH (but not a pyenv shim, which
    fails when that version is not the selected one)."""
    root = os.environ.get("PYENV_ROOT", str(Path.home() / ".pyenv"))
    hits = sorted(glob.glob(f"{root}/versions/{version}.*/bin/python{version}"))
    if hits:
        return Path(hits[-1])
    found = shutil.which(f"python{version}")
    return Path(found) if found and "/shims/" not in found else None


def can_run(arch: str) -> bool:
    return platform.machine() == arch
