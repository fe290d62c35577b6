"""Sizes of packages against Lambda's limits: zips, folders, layer sets, images.

Used by the build for its own packages and by `optimizer check-size` for anybody's, so CI
can gate a deployment that optimizer did not make.
"""

from __future__ import annotations

import json
import tarfile
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

from optimizer import targets
from optimizer.archive import ZIP_LEVEL, files_under, zip_members
from optimizer.errors import BadInput

TOP = 20
MIB = 1024 * 1024  # AWS's "50 MB" and "250 MB" limits are binary megabytes


def mib(n: int) -> str:
    return f"{n / MIB:,.1f} MiB"


@dataclass
class Part:
    """One upload (a zip or a folder to be zipped), or one image."""

    kind: str  # zip | folder | image | image-tarball
    ref: str
    unzipped: int
    zipped: int | None = None
    files: int = 0
    largest: list[tuple[str, int]] = field(default_factory=list)
    config_bytes: int | None = None
    architecture: str | None = None
    layers: int | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class Limit:
    what: str
    size: int
    limit: int
    ok: bool


def _largest(items: list[tuple[str, int]]) -> list[tuple[str, int]]:
    return sorted(items, key=lambda kv: (-kv[1], kv[0]))[:TOP]


def inspect_zip(path: Path) -> Part:
    infos = zip_members(path)
    files = [(i.filename, i.file_size) for i in infos if not i.is_dir()]
    return Part("zip", str(path), sum(s for _, s in files), path.stat().st_size, len(files),
                _largest(files))


def deflated(name: str, p: Path) -> int:
    """Bytes a file takes in a zip: deflated as zip writers do, plus both its headers."""
    comp = zlib.compressobj(ZIP_LEVEL, zlib.DEFLATED, -15)
    n = 0
    with p.open("rb") as f:
        while block := f.read(1 << 20):
            n += len(comp.compress(block))
    return n + len(comp.flush()) + 30 + 46 + 2 * len(name.encode())


def inspect_folder(path: Path) -> Part:
    """Unpacked size, and the zipped size measured by deflating every file as a zip would."""
    listed = files_under(path)
    files = [(name, p.stat().st_size) for name, p in listed]
    zipped = 22 + sum(deflated(name, p) for name, p in listed)  # 22: end of central dir
    return Part("folder", str(path), sum(s for _, s in files), zipped, len(files),
                _largest(files))


def _uncompressed_size(tar: tarfile.TarFile, name: str) -> int:
    f = tar.extractfile(tar.getmember(name))
    assert f is not None
    head = f.read(2)
    f.seek(0)
    if head != b"\x1f\x8b":
        return tar.getmember(name).size
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    n = 0
    while block := f.read(1 << 20):
        n += len(d.decompress(block))
    return n


def inspect_image_tarball(path: Path) -> Part:
    """A `docker save` tarball or an OCI layout tarball."""
    from optimizer.package.oci import locate, open_tarball, read_member

    with open_tarball(path) as tar:
        config_name, layer_names, notes = locate(tar, path)
        config = read_member(tar, config_name)
        arch = json.loads(config).get("architecture")
        layers = [(n, _uncompressed_size(tar, n)) for n in layer_names]
    return Part("image-tarball", str(path), sum(s for _, s in layers), path.stat().st_size,
                len(layers), _largest(layers), len(config), arch, len(layers), notes)


def inspect_engine_image(ref: str) -> Part:
    """An image in the local Docker Engine (its config size is re-serialised, so close)."""
    try:
        import docker
        from docker.errors import DockerException, ImageNotFound

        client = docker.from_env()
        image = client.images.get(ref)
    except ImageNotFound:
        raise BadInput(f"{ref}: no such file, folder or image in the local Docker Engine")\
            from None
    except DockerException as exc:
        raise BadInput(f"{ref}: no such file or folder, and no Docker Engine to ask ({exc})")\
            from None
    attrs = image.attrs
    config = {k: attrs.get(k) for k in ("Architecture", "Os", "Config", "RootFS")}
    layers = [(f"{h.get('CreatedBy', '')[:80]} ({h.get('Id', '')[:19]})", int(h.get("Size", 0)))
              for h in image.history()]
    return Part("image", ref, int(attrs.get("Size", 0)), None, len(layers), _largest(layers),
                len(json.dumps(config, separators=(",", ":"))), attrs.get("Architecture"),
                len(attrs.get("RootFS", {}).get("Layers", [])))


def inspect(target: str) -> Part:
    path = Path(target)
    if target.startswith("docker://"):
        return inspect_engine_image(target.removeprefix("docker://"))
    if not path.exists():
        return inspect_engine_image(target)
    if path.is_dir():
        return inspect_folder(path)
    if path.suffix == ".zip":
        return inspect_zip(path)
    if tarfile.is_tarfile(path):
        return inspect_image_tarball(path)
    raise BadInput(f"{path}: not a zip, a folder, or an image tarball")


def expand(paths: list[str]) -> list[str]:
    """A folder is a layer set (the function zip first, then its layers) when it holds a
    function.zip, as optimizer's package/ folders do, or when it holds nothing but zips."""
    out = []
    for p in paths:
        folder = Path(p)
        zips = sorted(folder.glob("*.zip")) if folder.is_dir() else []
        only_zips = zips and all(c.suffix == ".zip" for c in folder.iterdir())
        if (folder / "function.zip").is_file() or only_zips:
            out += [str(z) for z in sorted(zips, key=lambda z: (z.name != "function.zip", z))]
        else:
            out.append(p)
    return out


def limits_for(parts: list[Part]) -> list[Limit]:
    """Zips and folders are one deployment (function plus layers); images stand alone."""
    lim = targets.LIMITS
    rows: list[Limit] = []
    uploads = [p for p in parts if p.kind in ("zip", "folder")]
    for p in uploads:
        rows.append(Limit(f"{Path(p.ref).name} zipped", p.zipped or 0, lim.zip_upload_bytes,
                          (p.zipped or 0) <= lim.zip_upload_bytes))
    if uploads:
        total = sum(p.unzipped for p in uploads)
        rows.append(Limit("unzipped, function plus layers", total, lim.unzipped_bytes,
                          total <= lim.unzipped_bytes))
        n_layers = len(uploads) - 1
        rows.append(Limit("layers", n_layers, lim.max_layers, n_layers <= lim.max_layers))
    for p in parts:
        if p.kind in ("image", "image-tarball"):
            # a tarball by its file name: the build wrote it in a folder that is gone now
            name = Path(p.ref).name if p.kind == "image-tarball" else p.ref
            rows.append(Limit(f"{name} uncompressed", p.unzipped, lim.image_bytes,
                              p.unzipped <= lim.image_bytes))
            rows.append(Limit(f"{name} config", p.config_bytes or 0, lim.image_config_bytes,
                              (p.config_bytes or 0) <= lim.image_config_bytes))
    return rows


def report(parts: list[Part]) -> dict:
    rows = limits_for(parts)
    problems = [n for p in parts for n in p.notes]
    return {
        "ok": all(r.ok for r in rows) and not problems,
        "parts": [asdict(p) for p in parts],
        "limits": [asdict(r) for r in rows],
        "problems": problems,
    }


def elf_problems(part: Part, arch: str, glibc: str) -> tuple[int, list[str]]:
    """Shared objects in a zip or folder that cannot run on the target."""
    import tempfile

    from optimizer.archive import extract_zip
    from optimizer.package.elfcheck import check_tree

    if part.kind == "folder":
        count, problems = check_tree(Path(part.ref), arch, glibc)
    else:
        with tempfile.TemporaryDirectory(prefix="optimizer-check-") as tmp:
            extract_zip(Path(part.ref), Path(tmp))
            count, problems = check_tree(Path(tmp), arch, glibc)
    return count, [f"{Path(part.ref).name}: {p}" for p in problems]


def check(paths: list[str], target: str | None, runtime: str | None) -> dict:
    """What `optimizer check-size` prints: parts, limits, problems, ok."""
    if runtime and not target:
        raise BadInput("--runtime only matters with --target")
    for name, table in ((target, targets.TARGETS), (runtime, targets.RUNTIMES)):
        if name is not None and name not in table:
            raise BadInput(f"unknown '{name}'; choose one of {sorted(table)}")
    parts = [inspect(p) for p in expand(paths)]
    doc = report(parts)
    if target:
        from optimizer.package.oci import GO_ARCH

        arch = targets.TARGETS[target].arch
        glibc = targets.RUNTIMES[runtime or targets.DEFAULT_RUNTIME].glibc
        checked = 0
        for part in parts:
            if part.kind in ("zip", "folder"):
                count, problems = elf_problems(part, arch, glibc)
                checked += count
                doc["problems"] += problems
            elif part.architecture and part.architecture != GO_ARCH[arch]:
                doc["problems"].append(f"{part.ref}: image is {part.architecture}, the target "
                                       f"is {arch}")
        doc["elf"] = {"arch": arch, "glibc": glibc, "files_checked": checked}
        doc["ok"] = doc["ok"] and not doc["problems"]
    doc["limits_version"] = targets.TARGETS_VERSION
    return doc
