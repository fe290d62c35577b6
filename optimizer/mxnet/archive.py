"""MXNet Model Server archives: unpacked safely, then read in either manifest layout.

Layouts seen in the wild, all written by AWS's own tools:
- model-archiver 1.x `.mar`: a zip with `MAR-INF/MANIFEST.json` (`specificationVersion` 1.0,
  `model.modelName`, `model.handler`); the files sit at the root and MMS finds
  `<modelName>-symbol.json` and `<modelName>-0000.params` by name. `--archive-format tgz`
  puts the same under `<modelName>/` in a `.tar.gz`, `no-archive` leaves a folder.
- MMS 0.x `mxnet-model-export` `.model`: a zip with a top-level `MANIFEST.json` whose
  `Model` names `Symbol`, `Parameters`, `Signature` and `Service` (MMS 1.x still reads it).
Both may carry `signature.json` (input name and NCHW shape) and `synset.txt` (labels).

An archive comes from elsewhere, so extraction trusts nothing: no absolute or `..` names,
no links or devices, no duplicate names, and sizes are counted while bytes are written,
not read from headers, so a zip bomb stops at the limit.
"""

from __future__ import annotations

import json
import shutil
import stat
import tarfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO

from optimizer.errors import BadInput
from optimizer.package.archive import safe_name

MAX_MEMBERS = 10_000
MAX_MEMBER_BYTES = 4 << 30
MAX_TOTAL_BYTES = 8 << 30
MANIFEST = "MANIFEST.json"


@dataclass(frozen=True)
class Limits:
    members: int = MAX_MEMBERS
    member_bytes: int = MAX_MEMBER_BYTES
    total_bytes: int = MAX_TOTAL_BYTES


@dataclass
class ArchiveInfo:
    """What the converter and the handler need, with where each fact came from."""

    layout: str
    model_name: str
    symbol: Path
    params: Path
    handler: str | None = None
    input_name: str | None = None
    input_shape: list[int] | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    scale: float | None = None
    labels: list[str] | None = None
    input_type: str | None = None
    notes: list[str] = field(default_factory=list)


def _member(name: str, archive: Path) -> PurePosixPath | None:
    """The member's relative path (the package zips' rules), None for a folder entry."""
    rel = safe_name(name, str(archive))
    return rel if rel.parts else None


class _Writer:
    """Streams members to disk, counting real bytes against the limits."""

    def __init__(self, archive: Path, dest: Path, limits: Limits) -> None:
        self.archive, self.dest, self.limits = archive, dest, limits
        self.total = 0
        self.seen: set[str] = set()

    def add(self, rel: PurePosixPath, src: IO[bytes]) -> None:
        key = rel.as_posix().lower()
        if key in self.seen:
            raise BadInput(f"{self.archive}: member '{rel}' appears twice; refused")
        self.seen.add(key)
        if len(self.seen) > self.limits.members:
            raise BadInput(f"{self.archive}: more than {self.limits.members} members; refused")
        out = self.dest.joinpath(*rel.parts)
        if not out.resolve().is_relative_to(self.dest.resolve()):
            raise BadInput(f"{self.archive}: member '{rel}' resolves outside the archive; refused")
        out.parent.mkdir(parents=True, exist_ok=True)
        written = 0
        with out.open("wb") as f:
            while chunk := src.read(1 << 20):
                written += len(chunk)
                self.total += len(chunk)
                if written > self.limits.member_bytes:
                    raise BadInput(f"{self.archive}: member '{rel}' is larger than "
                                   f"{self.limits.member_bytes:,} bytes; refused")
                if self.total > self.limits.total_bytes:
                    raise BadInput(f"{self.archive}: unpacks to more than "
                                   f"{self.limits.total_bytes:,} bytes; refused")
                f.write(chunk)


def _zip_kind(info: zipfile.ZipInfo) -> str:
    mode = info.external_attr >> 16
    if info.create_system == 3 and mode and stat.S_IFMT(mode) not in (0, stat.S_IFREG,
                                                                         stat.S_IFDIR):
        return "link" if stat.S_ISLNK(mode) else "special file"
    return "dir" if info.is_dir() else "file"


def extract(archive: Path, dest: Path, limits: Limits = Limits()) -> None:
    """Unpack a zip (.mar/.model) or tar (.tar.gz) into `dest`, which must be empty."""
    dest.mkdir(parents=True, exist_ok=True)
    writer = _Writer(archive, dest, limits)
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z:
                for info in z.infolist():
                    rel = _member(info.filename, archive)
                    kind = _zip_kind(info)
                    if kind in ("link", "special file"):
                        raise BadInput(f"{archive}: member '{info.filename}' is a {kind}; refused")
                    if rel is None or kind == "dir":
                        continue
                    with z.open(info) as src:
                        writer.add(rel, src)
        elif tarfile.is_tarfile(archive):
            with tarfile.open(archive) as t:
                for member in t:
                    rel = _member(member.name, archive)
                    if member.issym() or member.islnk():
                        raise BadInput(f"{archive}: member '{member.name}' is a link; refused")
                    if not (member.isfile() or member.isdir()):
                        raise BadInput(f"{archive}: member '{member.name}' is a special file; "
                                       "refused")
                    if rel is None or member.isdir():
                        continue
                    src = t.extractfile(member)
                    assert src is not None
                    writer.add(rel, src)
        else:
            raise BadInput(f"{archive}: neither a zip (.mar, .model) nor a tar.gz archive")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as exc:
        shutil.rmtree(dest, ignore_errors=True)
        raise BadInput(f"{archive}: corrupt archive ({exc})") from None
    except BaseException:
        shutil.rmtree(dest, ignore_errors=True)
        raise


def _json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise BadInput(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(data, dict):
        raise BadInput(f"{path}: expected a JSON object")
    return data


def _inside(root: Path, name: str, what: str, where: Path) -> Path:
    rel = _member(name, where)
    path = root.joinpath(*rel.parts) if rel else root
    if not path.is_file():
        raise BadInput(f"{where}: {what} '{name}' is not in the archive")
    return path


def _model_root(folder: Path, archive: Path) -> tuple[Path, str, dict]:
    """The folder holding the model files, the layout's name and its manifest."""
    for root in [folder, *sorted(p for p in folder.iterdir() if p.is_dir())]:
        for sub, layout in (("MAR-INF", "mar-1.0"), ("MAR_INF", "mar-1.0")):
            if (root / sub / MANIFEST).is_file():
                return root, layout, _json(root / sub / MANIFEST)
        if (root / MANIFEST).is_file():
            return root, "model-0.x", _json(root / MANIFEST)
    raise BadInput(f"{archive}: no MAR-INF/MANIFEST.json (model-archiver 1.x) or MANIFEST.json "
                   "(MMS 0.x) inside; not an MXNet Model Server archive")


def _files(root: Path, manifest: dict, layout: str, archive: Path) -> tuple[str, Path, Path,
                                                                         str | None, str]:
    if layout == "model-0.x":
        model = manifest.get("Model")
        if not isinstance(model, dict):
            raise BadInput(f"{archive}: MANIFEST.json has no 'Model' section")
        name = str(model.get("Model-Name") or archive.stem)
        if model.get("Model-Format") == "Gluon-Imperative" or not model.get("Symbol"):
            raise BadInput(f"{archive}: model '{name}' is a Gluon imperative model (Python code, "
                           "no symbol graph); hybridize it and save it with "
                           "HybridBlock.export() to convert it")
        return (name, _inside(root, model["Symbol"], "symbol file", archive),
                _inside(root, str(model.get("Parameters")), "parameters file", archive),
                model.get("Service"), str(model.get("Signature") or "signature.json"))
    model = manifest.get("model")
    if not isinstance(model, dict) or not model.get("modelName"):
        raise BadInput(f"{archive}: MAR-INF/MANIFEST.json has no model.modelName")
    name = str(model["modelName"])
    if model.get("symbolFile") and model.get("parametersFile"):  # migrated 0.x manifests
        return (name, _inside(root, model["symbolFile"], "symbol file", archive),
                _inside(root, model["parametersFile"], "parameters file", archive),
                model.get("handler"), "signature.json")
    symbol, params = root / f"{name}-symbol.json", root / f"{name}-0000.params"
    if not (symbol.is_file() and params.is_file()):
        symbols = sorted(root.glob("*-symbol.json"))
        param_files = sorted(root.glob("*.params"))
        if len(symbols) != 1 or len(param_files) != 1:
            onnx = sorted(p.name for p in root.glob("*.onnx"))
            hint = f"; it holds ONNX {onnx}: use source kind onnx on that file" if onnx else ""
            raise BadInput(
                f"{archive}: expected {name}-symbol.json and {name}-0000.params (MMS's naming), "
                f"found symbols {[p.name for p in symbols]} and params "
                f"{[p.name for p in param_files]}{hint}")
        symbol, params = symbols[0], param_files[0]
    return name, symbol, params, model.get("handler"), "signature.json"


def _floats(value, what: str, where: Path) -> list[float] | None:
    if value is None:
        return None
    values = value if isinstance(value, list) else [value]
    try:
        return [float(v) for v in values]
    except (TypeError, ValueError):
        raise BadInput(f"{where}: {what} must be numbers, got {value!r}") from None


def read(folder: Path, archive: Path) -> ArchiveInfo:
    """Interpret an unpacked archive (or a no-archive folder) as MMS would."""
    root, layout, manifest = _model_root(folder, archive)
    name, symbol, params, handler, sig_name = _files(root, manifest, layout, archive)
    info = ArchiveInfo(layout=layout, model_name=name, symbol=symbol, params=params,
                       handler=handler)
    sig_path = root / sig_name
    if sig_path.is_file():
        sig = _json(sig_path)
        inputs = sig.get("inputs") or []
        first = inputs[0] if inputs and isinstance(inputs[0], dict) else {}
        if len(inputs) > 1:
            info.notes.append(f"signature lists {len(inputs)} inputs; the first is used")
        info.input_name = first.get("data_name")
        shape = first.get("data_shape")
        if shape is not None:
            if (not isinstance(shape, list) or len(shape) != 4
                    or not all(isinstance(d, int) and d >= 0 for d in shape)):
                raise BadInput(f"{sig_path.relative_to(folder)} in {archive}: data_shape "
                               f"{shape!r} is not a 4-D NCHW shape")
            info.input_shape = [1, *shape[1:]]  # MMS writes 0 for the batch
        info.input_type = sig.get("input_type")
        for key in ("mean", "std"):
            setattr(info, key, _floats(first.get(key, sig.get(key)), key, sig_path))
        scale = first.get("scale", sig.get("scale"))
        info.scale = _floats(scale, "scale", sig_path)[0] if scale is not None else None
    else:
        info.notes.append("no signature.json: input name and shape come from the recipe")
    synset = root / "synset.txt"
    if synset.is_file():
        labels = [ln.strip() for ln in synset.read_text(errors="replace").splitlines()]
        info.labels = [ln for ln in labels if ln]
    return info
