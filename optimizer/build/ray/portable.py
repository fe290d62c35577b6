"""Folders and models as bytes, so a worker needs no disk shared with the driver.

A model travels as its folder packed into one tar (no compression: weights do not shrink
and packing stays fast), with the contract that goes with it; the worker unpacks it into a
folder of its own and gets a ModelRef whose digest is the driver's.
"""

from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from optimizer.model import META, ModelKind, ModelRef
from optimizer.preprocess_spec import Preprocess

SKIP = {"entry.json", META}  # the cache's bookkeeping and the meta the driver writes itself


def pack(folder: Path, skip: set[str] = SKIP) -> bytes:
    """Every file under `folder` (relative names, sorted, no owners or times)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for p in sorted(folder.rglob("*")):
            rel = p.relative_to(folder).as_posix()
            if p.is_file() and rel not in skip:
                info = tarfile.TarInfo(rel)
                info.size = p.stat().st_size
                info.mode = 0o644
                with p.open("rb") as f:
                    tar.addfile(info, f)
    return buf.getvalue()


def unpack(blob: bytes, folder: Path) -> None:
    """Into `folder`; names that would leave it are refused (the blob crossed a network)."""
    folder.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r") as tar:
        tar.extractall(folder, filter="data")


@dataclass
class ShippedModel:
    kind: ModelKind
    file: str  # path of the model file or folder inside the packed folder
    preprocess: dict[str, Any]
    classes: list[str]
    info: dict[str, Any]
    digest: str
    blob: bytes = field(repr=False)


def ship(ref: ModelRef) -> ShippedModel:
    """The folder holding the model file (a step's output folder, or a cache entry)."""
    folder = ref.path.parent
    return ShippedModel(ref.kind, ref.path.relative_to(folder).as_posix(),
                        ref.preprocess.model_dump(mode="json"), list(ref.classes),
                        dict(ref.info), ref.digest, pack(folder))


def land(shipped: ShippedModel, folder: Path) -> ModelRef:
    unpack(shipped.blob, folder)
    return ModelRef(kind=shipped.kind, path=folder / shipped.file,
                    preprocess=Preprocess.model_validate(shipped.preprocess),
                    classes=list(shipped.classes), info=dict(shipped.info),
                    digest=shipped.digest)


def result_of(ref: ModelRef, out_dir: Path) -> dict[str, Any]:
    """A step's output, from the worker's folder, for `adopt` on the driver."""
    return {"kind": ref.kind, "file": ref.path.relative_to(out_dir).as_posix(),
            "preprocess": ref.preprocess.model_dump(mode="json"), "classes": ref.classes,
            "info": ref.info, "blob": pack(out_dir)}


def adopt(result: dict[str, Any], out_dir: Path) -> ModelRef:
    """The worker's output written into the driver's folder; the digest is recomputed here
    from the files, so the driver vouches for what it stores."""
    unpack(result["blob"], out_dir)
    return ModelRef(kind=result["kind"], path=out_dir / result["file"],
                    preprocess=Preprocess.model_validate(result["preprocess"]),
                    classes=list(result["classes"]), info=result["info"])


def _pack_path(path: Path) -> bytes:
    if path.is_dir():
        return pack(path, set())
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        tar.add(path, arcname=path.name, recursive=False)
    return buf.getvalue()


def files_of(cfg) -> dict[str, bytes]:
    """The files and folders a step config names (student weights, unlabeled images)."""
    return {str(p): _pack_path(Path(p)) for p in cfg.input_files()}


def _repointed(value: Any, moved: dict[str, Path]) -> Any:
    if isinstance(value, Path) and str(value) in moved:
        return moved[str(value)]
    if isinstance(value, BaseModel):
        update = {k: _repointed(getattr(value, k), moved) for k in type(value).model_fields}
        return value.model_copy(update=update)
    if isinstance(value, list):
        return [_repointed(v, moved) for v in value]
    return value


def land_files(cfg, files: dict[str, bytes], work: Path):
    """The config with each path it names pointing at the worker's unpacked copy."""
    moved = {}
    for i, (original, blob) in enumerate(sorted(files.items())):
        dest = work / f"file-{i}"
        unpack(blob, dest)
        src = Path(original)
        moved[original] = dest / src.name if (dest / src.name).is_file() else dest
    return _repointed(cfg, moved) if moved else cfg


def without_memo(dataset):
    """The dataset without its prepared-array memo: the worker prepares what it needs."""
    return replace(dataset, _prepared={})
