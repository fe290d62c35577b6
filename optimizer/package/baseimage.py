"""Local base images, for machines that cannot pull one (no registry reachable here).

A minimal Debian with python3, made by debootstrap from Debian's packages and imported into
the Docker Engine. Tests and the sibling image recipe build on it; users keep the AWS base
image as the default.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from optimizer import docker_client
from optimizer.docker_client import has_image
from optimizer.emulation.debian import DEFAULT_MIRROR, DEFAULT_SUITE, SUITE_PYTHON
from optimizer.errors import BadInput, PackageFailed


def default_tag(suite: str) -> str:
    return f"local/debian-python:{SUITE_PYTHON[suite][0]}"


def ensure(tag: str | None = None, suite: str = DEFAULT_SUITE,
           mirror: str = DEFAULT_MIRROR, log=lambda message: None) -> str:
    """Build the base image unless the engine already has the tag; returns the tag."""
    if suite not in SUITE_PYTHON:
        raise BadInput(f"unknown suite '{suite}'; choose one of {sorted(SUITE_PYTHON)}")
    tag = tag or default_tag(suite)
    client = docker_client.client()
    if has_image(client, tag):
        log(f"{tag} is already in the Docker Engine")
        return tag
    if shutil.which("debootstrap") is None:
        raise PackageFailed("debootstrap is not installed (apt-get install debootstrap)")
    if os.geteuid() != 0:
        raise PackageFailed("debootstrap needs root to build a base image")
    with tempfile.TemporaryDirectory(prefix="optimizer-rootfs-") as tmp:
        root = Path(tmp) / "root"
        log(f"debootstrap {suite} (minbase + python3) from {mirror}: about a minute")
        proc = subprocess.run(
            ["debootstrap", "--variant=minbase", "--include=python3", suite, str(root), mirror],
            capture_output=True, text=True)
        if proc.returncode != 0:
            raise PackageFailed(f"debootstrap {suite} failed: {proc.stderr.strip()[-400:]}")
        for cache in ("var/cache/apt/archives", "var/lib/apt/lists"):
            shutil.rmtree(root / cache, ignore_errors=True)
        tar = Path(tmp) / "rootfs.tar"
        subprocess.run(["tar", "-C", str(root), "--numeric-owner", "-cf", str(tar), "."],
                       check=True)
        repo, _, version = tag.rpartition(":")
        log(f"docker import as {tag} ({tar.stat().st_size / 2**20:,.0f} MiB)")
        with tar.open("rb") as f:
            client.api.import_image(src=f, repository=repo, tag=version,
                                    changes=['CMD ["python3"]'])
    if not has_image(client, tag):
        raise PackageFailed(f"docker import did not produce {tag}")
    return tag


def save(ref: str, dest: Path) -> Path:
    """`docker save` of one image, written atomically."""
    client = docker_client.client()
    part = dest.with_name(dest.name + ".part")
    with part.open("wb") as f:
        for chunk in client.images.get(ref).save(named=True):
            f.write(chunk)
    os.replace(part, dest)
    return dest


ENTRYPOINT_SH = """#!/bin/sh
# Stand-in for the AWS base image's entry point: the runtime client runs the handler named
# by CMD against $AWS_LAMBDA_RUNTIME_API.
exec python3 -m awslambdaric "$@"
"""
LAMBDA_LIKE = """FROM {base}
COPY runtime/ /var/runtime/
COPY lambda-entrypoint.sh /lambda-entrypoint.sh
ENV LAMBDA_TASK_ROOT=/var/task LAMBDA_RUNTIME_DIR=/var/runtime PYTHONPATH=/var/runtime
WORKDIR /var/task
ENTRYPOINT ["/lambda-entrypoint.sh"]
"""


def ensure_lambda_like(tag: str | None = None, suite: str = DEFAULT_SUITE,
                       log=lambda message: None) -> str:
    """A local stand-in with the AWS Lambda base image's contract (entry point, task root,
    runtime client), so the default lambda template can be built and run here."""
    from optimizer.wheels import pinned, resolve

    python, glibc = SUITE_PYTHON[suite]
    tag = tag or f"local/lambda-python:{python}"
    base = ensure(None, suite, log=log)
    client = docker_client.client()
    if has_image(client, tag):
        log(f"{tag} is already in the Docker Engine")
        return tag
    log(f"building {tag} on {base} with awslambdaric as the entry point")
    with tempfile.TemporaryDirectory(prefix="optimizer-lambda-base-") as tmp:
        ctx = Path(tmp)
        arch = os.uname().machine
        resolve(pinned(("awslambdaric",), arch), python, arch, glibc, ctx / "runtime")
        (ctx / "lambda-entrypoint.sh").write_text(ENTRYPOINT_SH)
        (ctx / "lambda-entrypoint.sh").chmod(0o755)
        (ctx / "Dockerfile").write_text(LAMBDA_LIKE.format(base=base))
        client.images.build(path=str(ctx), tag=tag, rm=True, forcerm=True, pull=False)
    return tag
