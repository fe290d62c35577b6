"""Byte-reproducible zips and tars, and zip reading that refuses hostile entries.

Reproducible means the same files give the same bytes on every build: entries sorted by
path, a fixed timestamp, owner 0, and permissions reduced to 0644 or 0755. Users of other
tools complain about packages that differ on every build (aws-sam-cli #4645); content
hashes in the report are only useful if they are stable.
"""

from __future__ import annotations

import os
import stat
import tarfile
import zipfile
from collections.abc import Iterable
from pathlib import Path, PurePosixPath

from optimizer.errors import BadInput

# 1980-01-01, the earliest time a zip can hold; tars use SOURCE_DATE_EPOCH or 1 s (as jib).
ZIP_TIME = (1980, 1, 1, 0, 0, 0)


def tar_mtime() -> int:
    return int(os.environ.get("SOURCE_DATE_EPOCH", "1"))


def _mode(path: Path) -> int:
    return 0o755 if path.stat().st_mode & stat.S_IXUSR else 0o644


def files_under(root: Path) -> list[tuple[str, Path]]:
    """(archive name, file) for every regular file, sorted; symlinks are refused."""
    out = []
    for p in root.rglob("*"):
        if p.is_symlink():
            raise BadInput(f"{p}: symlinks are not packaged (Lambda zips cannot hold them)")
        if p.is_file():
            out.append((p.relative_to(root).as_posix(), p))
    return sorted(out)


ZIP_LEVEL = 9


def write_zip(dest: Path, entries: Iterable[tuple[str, Path]]) -> None:
    """A deterministic zip of (archive name, file) pairs, written to a temp name first."""
    tmp = dest.with_name(dest.name + ".part")
    with zipfile.ZipFile(tmp, "w") as zf:
        for name, path in sorted(entries):
            info = zipfile.ZipInfo(name, date_time=ZIP_TIME)
            info.create_system = 3  # unix, so external_attr carries the mode
            info.external_attr = (stat.S_IFREG | _mode(path)) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            # the best deflate: a layer is zipped once and unzipped on every cold start
            level = "compress_level" if hasattr(info, "compress_level") else "_compresslevel"
            setattr(info, level, ZIP_LEVEL)  # the name before Python 3.13 is private
            with path.open("rb") as src, zf.open(info, "w") as out:
                while block := src.read(1 << 20):
                    out.write(block)
    os.replace(tmp, dest)


def zip_tree(dest: Path, root: Path, prefix: str = "") -> None:
    write_zip(dest, [(prefix + name, p) for name, p in files_under(root)])


def safe_name(name: str, where: str) -> PurePosixPath:
    """An archive member name that stays inside the folder it is extracted to."""
    p = PurePosixPath(name)
    if "\0" in name:
        raise BadInput(f"{where}: an entry's name holds a NUL byte; refusing this archive")
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise BadInput(f"{where}: entry '{name}' has an absolute path (path traversal); "
                       "refusing this archive")
    if ".." in p.parts or "\\" in name:
        raise BadInput(f"{where}: entry '{name}' would be written outside the target folder "
                       "(path traversal); refusing this archive")
    return p


def zip_members(path: Path) -> list[zipfile.ZipInfo]:
    """The members of a zip, each checked for traversal and symlinks."""
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
    except (zipfile.BadZipFile, OSError) as exc:
        raise BadInput(f"{path}: not a readable zip ({exc})") from None
    for info in infos:
        safe_name(info.filename, str(path))
        if stat.S_ISLNK(info.external_attr >> 16):
            raise BadInput(f"{path}: entry '{info.filename}' is a symlink; refusing this archive")
    return infos


def extract_zip(path: Path, dest: Path) -> None:
    zip_members(path)  # refuses hostile entries before anything is written
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            target = dest / safe_name(info.filename, str(path))
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, target.open("wb") as out:
                while block := src.read(1 << 20):
                    out.write(block)
            mode = (info.external_attr >> 16) & 0o777
            target.chmod(mode if mode else 0o644)


def tar_layer(dest: Path, entries: Iterable[tuple[str, Path]]) -> None:
    """An uncompressed, reproducible layer tar with every parent directory listed."""
    entries = sorted(entries)
    dirs: set[str] = set()
    for name, _ in entries:
        parts = PurePosixPath(name).parts[:-1]
        dirs.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    mtime = tar_mtime()
    with tarfile.open(dest, mode="w", format=tarfile.PAX_FORMAT) as tar:
        members: list[tuple[str, Path | None]] = [(d, None) for d in dirs]
        members += list(entries)
        for name, path in sorted(members, key=lambda m: m[0]):
            info = tarfile.TarInfo(name)
            info.mtime, info.uid, info.gid, info.uname, info.gname = mtime, 0, 0, "", ""
            if path is None:
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
            else:
                info.size, info.mode = path.stat().st_size, _mode(path)
                with path.open("rb") as f:
                    tar.addfile(info, f)
