"""Dependencies resolved as wheels for the target, never copied from this machine.

pip picks wheels by platform tag, so the tags offered are exactly the manylinux levels the
target's glibc can load; a package with no such wheel fails here, early, instead of as an
import error on Lambda.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

from optimizer import targets
from optimizer.errors import PackageFailed


def requirements(runtime: str) -> tuple[str, ...]:
    """What a model runtime needs on Lambda besides the handler."""
    return targets.ENGINES[runtime].requirements


def platform_tags(arch: str, glibc: str) -> list[str]:
    """manylinux tags from the newest the glibc allows down to manylinux2014 (glibc 2.17)."""
    machine = arch  # targets name architectures as pip and uname do
    major, minor = (int(p) for p in glibc.split(".")[:2])
    tags = [f"manylinux_{major}_{m}_{machine}" for m in range(minor, 16, -1)]
    return [*tags, f"manylinux2014_{machine}"]


def installed_version(requirement: str) -> str | None:
    """The version installed here of a requirement's distribution (either TensorFlow
    distribution stands for tensorflow-cpu), or None."""
    name = re.split(r"[<>=!~]", requirement, maxsplit=1)[0].strip()
    for dist in (name, "tensorflow") if name == "tensorflow-cpu" else (name,):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def pinned(names: tuple[str, ...], arch: str) -> list[str]:
    """Each requirement at the version installed here, which is the version validated;
    one that carries its own version specifier is passed on as written."""
    out = []
    for name in names:
        if any(c in name for c in "<>=!~"):
            out.append(name)
            continue
        # tensorflow-cpu has no aarch64 wheels; either distribution pins the version
        want = "tensorflow" if name == "tensorflow-cpu" and arch != "x86_64" else name
        version = installed_version(name)
        if version is None:
            raise PackageFailed(f"packaging needs {name} installed here to pin its version")
        out.append(f"{want}=={version}")
    return out


def _pip(requirements: list[str], python: str, arch: str, glibc: str, dest: Path,
         *extra: str) -> None:
    """pip install --target for another platform: binary wheels only."""
    cmd = [
        sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
        "--no-warn-script-location", "--no-compile", "--target", str(dest),
        "--only-binary=:all:", "--implementation", "cp", "--python-version", python, *extra,
    ]
    for tag in platform_tags(arch, glibc):
        cmd += ["--platform", tag]
    # a package needs every dependency, whatever the user's pip config says (PIP_NO_DEPS)
    env = {k: v for k, v in os.environ.items() if k.upper() != "PIP_NO_DEPS"}
    proc = subprocess.run([*cmd, *requirements], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-6:])
        raise PackageFailed(
            f"pip could not resolve {' '.join(requirements)} as binary wheels for Python "
            f"{python} on {arch} with glibc {glibc}:\n{tail}"
        )


def resolve(requirements: list[str], python: str, arch: str, glibc: str, dest: Path) -> None:
    _pip(requirements, python, arch, glibc, dest)


def wheel_sizes(requirements: list[str], python: str, arch: str, glibc: str,
                work: Path) -> dict[str, int]:
    """Distribution -> size of its wheel for the target, without downloading a wheel: pip
    resolves from the index's metadata files (--dry-run --report), and the sizes come from
    HEAD requests. A compressed wheel is a lower bound on what it unpacks to, so this rules
    out a runtime that cannot fit a zip (TensorFlow: 2.3 GB for two architectures) for the
    price of its metadata."""
    import json
    import urllib.request

    work.mkdir(parents=True, exist_ok=True)
    report = work / "report.json"
    _pip(requirements, python, arch, glibc, work / "target", "--dry-run", "--ignore-installed",
         "--report", str(report))
    out = {}
    for item in json.loads(report.read_text())["install"]:
        url = item["download_info"]["url"]
        try:
            with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"),
                                        timeout=60) as resp:
                out[item["metadata"]["name"]] = int(resp.headers.get("Content-Length") or 0)
        except (OSError, ValueError) as exc:
            raise PackageFailed(f"could not read the size of {url}: {exc}") from None
    return out
