"""Reading image tarballs (`docker save` archives and OCI layouts): one image, safely.

Shared by the image writer (a base image given as a tarball), the size check and the local
Lambda (which loads a tarball into the Docker Engine to run it).
"""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

from optimizer.archive import safe_name
from optimizer.errors import BadInput


def read_member(tar: tarfile.TarFile, name: str) -> bytes:
    try:
        f = tar.extractfile(name)
    except KeyError:
        raise BadInput(f"{tar.name}: missing {name}") from None
    if f is None:
        raise BadInput(f"{tar.name}: {name} is not a file")
    return f.read()


def open_tarball(path: Path) -> tarfile.TarFile:
    try:
        tar = tarfile.open(path)
    except (tarfile.TarError, OSError) as exc:
        raise BadInput(f"{path}: not a readable image tarball ({exc})") from None
    for n in tar.getnames():
        safe_name(n, str(path))
    return tar


def locate(tar: tarfile.TarFile, path: Path) -> tuple[str, list[str], list[str]]:
    """(config member, layer members, problems) of a docker-archive or OCI layout tarball;
    problems are what Lambda would refuse (several images, a multi-platform index)."""
    names = set(tar.getnames())
    problems = []
    desc: dict = {}
    if "index.json" in names:
        manifests = json.loads(read_member(tar, "index.json")).get("manifests", [])
        if len(manifests) != 1:
            problems.append(f"OCI index lists {len(manifests)} manifests; Lambda needs exactly "
                            "one single-architecture image (no attestations)")
        desc = manifests[0] if manifests else {}
        if "index" in desc.get("mediaType", ""):
            problems.append("the image is a multi-platform index; Lambda rejects those")
    if "manifest.json" in names:
        entries = json.loads(read_member(tar, "manifest.json"))
        if len(entries) != 1:
            problems.append(f"tarball holds {len(entries)} images; expected one")
        return entries[0]["Config"], list(entries[0]["Layers"]), problems
    if desc:
        manifest = json.loads(read_member(tar, "blobs/sha256/" + desc["digest"].split(":", 1)[1]))
        return ("blobs/sha256/" + manifest["config"]["digest"].split(":", 1)[1],
                ["blobs/sha256/" + d["digest"].split(":", 1)[1] for d in manifest["layers"]],
                problems)
    raise BadInput(f"{path}: neither a docker-archive (manifest.json) nor an OCI layout "
                   "(index.json) tarball")
