"""Bytecode for the modules a cold start imports, compiled by the runtime's Python.

Lambda unpacks a zip into a read-only /var/task and /opt, so Python can neither find nor
write `__pycache__` there and compiles numpy, Pillow and the runtime from source on every
cold start (about a quarter of a second at one vCPU). Shipping `.pyc` files fixes that.
They are "unchecked-hash" pycs: valid whatever the files' times after unzipping (the
zips carry fixed times), and byte-reproducible. Only what the handler imports during init
is compiled where the package can run here; for another architecture, every module.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from optimizer.errors import PackageFailed

# imports the handler as Lambda would (model load and warm-up included) and lists the
# source files of every module it loaded from the package
_LISTER = r'''
import json, os, sys
roots = sys.argv[1:]
sys.path[:0] = roots
os.environ.setdefault("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1769")
from handler import app
files = sorted({m.__file__ for m in list(sys.modules.values())
                if getattr(m, "__file__", None) and m.__file__.endswith(".py")
                and any(m.__file__.startswith(r + os.sep) for r in roots)})
print(json.dumps(files))
'''


def stage(src: Path, dest: Path) -> None:
    """A copy of `src` to add bytecode to (hard links where it can: a cache entry must not
    change, and the pycs are new files beside the linked ones)."""
    def link(a: str, b: str) -> None:
        try:
            os.link(a, b)
        except OSError:
            shutil.copy2(a, b)

    shutil.copytree(src, dest, copy_function=link, symlinks=True)


def imported(python: Path, roots: list[Path], version: str) -> list[str]:
    with tempfile.TemporaryDirectory(prefix="optimizer-pyc-") as tmp:
        lister = Path(tmp) / "lister.py"
        lister.write_text(_LISTER)
        proc = subprocess.run([str(python), "-I", "-S", "-B", str(lister),
                               *(str(r) for r in roots)], capture_output=True, text=True,
                              timeout=300, cwd=tmp, env={"PATH": os.environ.get("PATH", ""),
                                                         "HOME": tmp})
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-6:])
        raise PackageFailed(f"the packaged handler failed under Python {version} (exit "
                            f"{proc.returncode}) while its imports were listed for bytecode:"
                            f"\n{tail}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def compile_tree(python: Path, version: str, roots: dict[Path, str], native: bool) -> dict:
    """Writes `__pycache__/*.cpython-3XY.pyc` under each root; `roots` maps a root to
    where Lambda unpacks it (/var/task, /opt/python), the path tracebacks will show."""
    files = imported(python, list(roots), version) if native else [
        str(p) for r in roots for p in sorted(r.rglob("*.py"))]
    failed = False
    for root, deployed in roots.items():
        mine = [f for f in files if f.startswith(str(root) + os.sep)]
        if not mine:
            continue
        with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as listing:
            listing.write("\n".join(mine) + "\n")
        try:
            proc = subprocess.run([str(python), "-I", "-m", "compileall", "-q",
                                   "--invalidation-mode", "unchecked-hash", "-s", str(root),
                                   "-p", deployed, "-i", listing.name],
                                  capture_output=True, text=True, timeout=600)
        finally:
            os.unlink(listing.name)
        # a module that does not compile under this Python is never imported by it either
        failed |= proc.returncode != 0
    pycs = [p for r in roots for p in r.rglob("__pycache__/*.pyc")]
    return {"modules": len(files), "pyc_files": len(pycs),
            "pyc_bytes": sum(p.stat().st_size for p in pycs),
            "selected": "imported during init" if native else "every module (the package "
            "cannot run on this machine to list its imports)",
            "compile_errors": failed}
