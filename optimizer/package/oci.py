"""A daemonless image writer: base image tarball + the project's layers -> image tarball.

The output is both an OCI image layout and a `docker load` archive (the layout Docker 25+
writes): `oci-layout`, `index.json`, `manifest.json` and `blobs/sha256/<hex>`. Layers are
reproducible tars, every timestamp is fixed, so the same inputs give the same config
digest (the image ID) and the same manifest digest on every machine.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from optimizer.archive import files_under, tar_layer, tar_mtime
from optimizer.errors import BadInput
from optimizer.image_tarball import locate, open_tarball, read_member
from optimizer.model import sha256_file
from optimizer.package.template import Template

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
GO_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}


@dataclass
class Blob:
    digest: str  # hex sha256 of the bytes as stored
    size: int
    media_type: str
    path: Path | None = None  # a file holding the bytes, or
    member: str | None = None  # a member of the base tarball


def read_base(path: Path) -> tuple[dict, list[Blob]]:
    """Config and layer blobs of a `docker save` or OCI layout tarball holding one image."""
    with open_tarball(path) as tar:
        config_name, layer_names, problems = locate(tar, path)
        if problems:
            raise BadInput(f"{path}: cannot be a base: {'; '.join(problems)}")
        config = json.loads(read_member(tar, config_name))
        blobs = []
        for name in layer_names:
            f = tar.extractfile(name)
            if f is None:
                raise BadInput(f"{path}: layer {name} is missing")
            h, size, head = hashlib.sha256(), 0, b""
            while block := f.read(1 << 20):
                head = head or block[:2]
                h.update(block)
                size += len(block)
            media = LAYER_GZIP if head == b"\x1f\x8b" else LAYER_TAR
            blobs.append(Blob(h.hexdigest(), size, media, member=name))
    return config, blobs


def _history(created_by: str, created: str) -> dict:
    return {"created": created, "created_by": created_by, "comment": "optimizer"}


def _copies(tpl: Template, context: Path, folder: Path, created: str) -> tuple[list[Blob],
                                                                              list[dict]]:
    """One uncompressed layer per COPY of the template, and its history entry."""
    layers, history = [], []
    for i, (src, target) in enumerate(tpl.copies):
        prefix = target.strip("/")
        entries = [(f"{prefix}/{name}", p) for name, p in files_under(context / src)]
        path = folder / f"layer{i}.tar"
        tar_layer(path, entries)
        layers.append(Blob(sha256_file(path), path.stat().st_size, LAYER_TAR, path=path))
        history.append(_history(f"COPY {src}/ {target}", created))
    return layers, history


def _config(base: dict, tpl: Template, layers: list[Blob], history: list[dict],
            created: str) -> bytes:
    """The image config: the base's, with the template's env, workdir and entry point,
    and the new layers' diff_ids."""
    inner = dict(base.get("config") or {})
    env = {k: v for k, v in (e.split("=", 1) for e in inner.get("Env") or [])}
    env.update(dict(tpl.env))
    inner["Env"] = [f"{k}={v}" for k, v in env.items()]
    if tpl.workdir:
        inner["WorkingDir"] = tpl.workdir
    if tpl.entrypoint is not None:
        inner["Entrypoint"], inner["Cmd"] = tpl.entrypoint, None
    if tpl.cmd is not None:
        inner["Cmd"] = tpl.cmd
    config = {
        "architecture": base["architecture"], "os": base.get("os", "linux"),
        "created": created, "config": inner,
        "rootfs": {"type": "layers", "diff_ids": [
            *base["rootfs"]["diff_ids"], *(f"sha256:{b.digest}" for b in layers)]},
        "history": [*base.get("history", []), *history],
    }
    return json.dumps(config, sort_keys=True, separators=(",", ":")).encode()


def _indexes(config_bytes: bytes, layers: list[Blob], tag: str) -> tuple[dict[str, bytes],
                                                                          str]:
    """The small files of an image tarball that is both an OCI layout and a `docker load`
    archive (the manifest, the index, manifest.json, the config blob), and the manifest's
    digest."""
    manifest = {
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": _d(config_bytes),
                   "size": len(config_bytes)},
        "layers": [{"mediaType": b.media_type, "digest": f"sha256:{b.digest}",
                    "size": b.size} for b in layers],
    }
    manifest_bytes = json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()
    index = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": [{"mediaType": OCI_MANIFEST, "digest": _d(manifest_bytes),
                            "size": len(manifest_bytes),
                            "annotations": {"io.containerd.image.name": tag,
                                            "org.opencontainers.image.ref.name":
                                                tag.rsplit(":", 1)[-1]}}]}
    docker = [{"Config": f"blobs/sha256/{_d(config_bytes)[7:]}", "RepoTags": [tag],
               "Layers": [f"blobs/sha256/{b.digest}" for b in layers]}]
    return {
        "oci-layout": json.dumps({"imageLayoutVersion": "1.0.0"}).encode(),
        "index.json": json.dumps(index, sort_keys=True).encode(),
        "manifest.json": json.dumps(docker, sort_keys=True).encode(),
        f"blobs/sha256/{_d(config_bytes)[7:]}": config_bytes,
        f"blobs/sha256/{_d(manifest_bytes)[7:]}": manifest_bytes,
    }, _d(manifest_bytes)


def write(base_tar: Path, tpl: Template, context: Path, arch: str, tag: str,
          dest: Path) -> dict:
    """Writes dest (atomically); returns digests and sizes."""
    config, base_layers = read_base(base_tar)
    if config.get("architecture") != GO_ARCH[arch]:
        raise BadInput(f"{base_tar}: base image is {config.get('architecture')}, the target "
                       f"is {arch} ({GO_ARCH[arch]})")
    created = datetime.fromtimestamp(tar_mtime(), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    with tempfile.TemporaryDirectory(prefix="optimizer-oci-", dir=dest.parent) as tmp:
        layers, history = _copies(tpl, context, Path(tmp), created)
        config_bytes = _config(config, tpl, layers, history, created)
        all_layers = base_layers + layers
        small, manifest_digest = _indexes(config_bytes, all_layers, tag)
        part = Path(tmp) / "image.tar"
        _write_tar(part, small, all_layers, base_tar)
        os.replace(part, dest)
    return {
        "config_digest": _d(config_bytes), "manifest_digest": manifest_digest,
        "config_bytes": len(config_bytes),
        "uncompressed_bytes": sum(b.size for b in all_layers if b.media_type == LAYER_TAR),
        "layers": [{"digest": f"sha256:{b.digest}", "size": b.size,
                    "from": "base" if b.member else "optimizer"} for b in all_layers],
    }


def _d(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _info(name: str, size: int, kind: bytes = tarfile.REGTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size, info.type, info.mtime = size, kind, tar_mtime()
    info.mode = 0o755 if kind == tarfile.DIRTYPE else 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _write_tar(dest: Path, small: dict[str, bytes], layers: list[Blob], base_tar: Path) -> None:
    members: dict[str, tuple[int, bytes | Blob]] = {n: (len(b), b) for n, b in small.items()}
    for b in layers:
        members[f"blobs/sha256/{b.digest}"] = (b.size, b)
    with tarfile.open(base_tar) as base, tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) \
            as out:
        for d in ("blobs", "blobs/sha256"):
            out.addfile(_info(d, 0, tarfile.DIRTYPE))
        for name in sorted(members):
            size, src = members[name]
            if isinstance(src, bytes):
                out.addfile(_info(name, size), io.BytesIO(src))
            elif src.path is not None:
                with src.path.open("rb") as f:
                    out.addfile(_info(name, size), f)
            else:
                out.addfile(_info(name, size), base.extractfile(src.member))
