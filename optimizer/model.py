"""The value steps pass along: a model file on disk plus the contract for feeding it."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from optimizer.preprocess_spec import Preprocess

ModelKind = Literal["keras", "savedmodel", "onnx", "tflite"]
FILE_NAMES: dict[str, str] = {
    "keras": "model.keras", "savedmodel": "saved_model", "onnx": "model.onnx",
    "tflite": "model.tflite",
}
META = "meta.json"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_tree(path: Path) -> str:
    """Digest of a file, or of a folder's relative paths and file contents."""
    if path.is_file():
        return sha256_file(path)
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(path).as_posix().encode() + b"\0")
            h.update(sha256_file(p).encode() + b"\n")
    return h.hexdigest()


def file_digests(paths: list[Path]) -> dict[str, str]:
    """Content digests of files a config points at, for cache keys (paths alone could lie)."""
    return {str(p): sha256_tree(p) for p in paths}


def size_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


@dataclass
class ModelRef:
    kind: ModelKind
    path: Path
    preprocess: Preprocess
    classes: list[str]
    info: dict[str, Any] = field(default_factory=dict)
    digest: str = ""

    def __post_init__(self) -> None:
        if not self.digest:
            contract = json.dumps(
                {"pre": self.preprocess.model_dump(mode="json"), "classes": self.classes},
                sort_keys=True,
            )
            self.digest = hashlib.sha256(
                (sha256_tree(self.path) + contract).encode()
            ).hexdigest()

    @property
    def is_onnx(self) -> bool:
        return self.kind == "onnx"

    def write_meta(self, folder: Path) -> None:
        meta = {
            "kind": self.kind,
            "file": self.path.name,
            "preprocess": self.preprocess.model_dump(mode="json"),
            "classes": self.classes,
            "info": self.info,
            "digest": self.digest,
        }
        (folder / META).write_text(json.dumps(meta, indent=2, sort_keys=True))

    @classmethod
    def read(cls, folder: Path) -> ModelRef:
        meta = json.loads((folder / META).read_text())
        return cls(
            kind=meta["kind"],
            path=folder / meta["file"],
            preprocess=Preprocess.model_validate(meta["preprocess"]),
            classes=list(meta["classes"]),
            info=meta.get("info", {}),
            digest=meta["digest"],
        )
