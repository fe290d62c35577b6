"""MXNet Model Server archives: checked, read manifest first, and only the files MMS would
load are unpacked.

Layouts seen in the wild, all written by AWS's own tools:
- model-archiver 1.x `.mar`: a zip with `MAR-INF/MANIFEST.json` (`specificationVersion` 1.0,
  `model.modelName`, `model.handler`); the files sit at the root and MMS finds
  `<modelName>-symbol.json` and `<modelName>-0000.params` by name. `--archive-format tgz`
  puts the same under `<modelName>/` in a `.tar.gz`, `no-archive` leaves a folder.
- MMS 0.x `mxnet-model-export` `.model`: a zip with a top-level `MANIFEST.json` whose
  `Model` names `Symbol`, `Parameters`, `Signature` and `Service` (MMS 1.x still reads it).
Both may carry `signature.json` (input name and NCHW shape) and `synset.txt` (labels).

An archive comes from elsewhere, so nothing is trusted and nothing is written before the
whole member list passes: no absolute or `..` names, no links or devices, no duplicate
names, declared sizes within the limits and no member that claims to inflate more than a
model file can (a zip bomb is refused from its headers). Then the manifest is read, and
only the members it names are extracted, with their real bytes counted as they are
written, so a header that lies stops at the limit too.
"""

from __future__ import annotations

import json
import shutil
import stat
import tarfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import IO

from optimizer.archive import safe_name
from optimizer.data.label_names import parse
from optimizer.errors import BadInput

MAX_MEMBERS = 10_000
MAX_MEMBER_BYTES = 2 << 30  # larger than any MXNet image model's params file
MAX_TOTAL_BYTES = 3 << 30
# deflate gets about 1.1:1 on float weights and 10-20:1 on symbol JSON; zeros give 1000:1
MAX_RATIO = 100
RATIO_FLOOR = 1 << 20  # small members may compress as well as they like
MAX_SMALL_BYTES = 16 << 20  # manifest, signature, synset
MANIFEST = "MANIFEST.json"
SIGNATURE = "signature.json"
SYNSET = "synset.txt"


@dataclass(frozen=True)
class Limits:
    members: int = MAX_MEMBERS
    member_bytes: int = MAX_MEMBER_BYTES
    total_bytes: int = MAX_TOTAL_BYTES
    ratio: float = MAX_RATIO


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


def _mib(n: float) -> str:
    return f"{n / (1 << 20):,.1f} MiB"


class Archive:
    """A zip, a tar(.gz) or a folder, as a checked list of members that can be read or
    unpacked one by one."""

    def __init__(self, path: Path, limits: Limits = Limits()) -> None:
        self.path, self.limits = path, limits
        self.members: dict[str, int] = {}  # relative posix name -> declared size
        self._lower: set[str] = set()  # names differing only in case collide on some disks
        if path.is_dir():
            self.kind = "folder"
            for p in sorted(path.rglob("*")):
                if p.is_symlink():
                    raise BadInput(f"{path}: '{p.relative_to(path)}' is a link; refused")
                if p.is_file():
                    self._add(p.relative_to(path).as_posix(), p.stat().st_size, None)
            return
        try:
            if zipfile.is_zipfile(path):
                self.kind = "zip"
                with zipfile.ZipFile(path) as z:
                    for info in z.infolist():
                        kind = _zip_kind(info)
                        if kind in ("link", "special file"):
                            raise BadInput(f"{path}: member '{info.filename}' is a {kind}; "
                                           "refused")
                        if kind == "file":
                            self._add(info.filename, info.file_size, info.compress_size)
            elif tarfile.is_tarfile(path):
                self.kind = "tar"
                with tarfile.open(path) as t:
                    for member in t:
                        if member.issym() or member.islnk():
                            raise BadInput(f"{path}: member '{member.name}' is a link; refused")
                        if not (member.isfile() or member.isdir()):
                            raise BadInput(f"{path}: member '{member.name}' is a special "
                                           "file; refused")
                        if member.isfile():
                            self._add(member.name, member.size, None)
            else:
                raise BadInput(f"{path}: neither a zip (.mar, .model) nor a tar.gz archive")
        except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as exc:
            raise BadInput(f"{path}: corrupt archive ({exc})") from None
        total = sum(self.members.values())
        if total > limits.total_bytes:
            raise BadInput(f"{path}: declares {_mib(total)} of files, more than the "
                           f"{_mib(limits.total_bytes)} an archive may unpack to; refused")
        packed = path.stat().st_size
        if self.kind == "tar" and total > RATIO_FLOOR and total > limits.ratio * packed:
            raise BadInput(f"{path}: {_mib(packed)} that unpacks to {_mib(total)} "
                           f"({total / max(packed, 1):,.0f}:1, more than {limits.ratio:g}:1 "
                           "for model files): a likely archive bomb; refused")

    def _add(self, name: str, size: int, packed: int | None) -> None:
        rel = safe_name(name, str(self.path))
        if not rel.parts:
            return
        key = rel.as_posix()
        if key.lower() in self._lower:
            raise BadInput(f"{self.path}: member '{key}' appears twice; refused")
        if len(self.members) >= self.limits.members:
            raise BadInput(f"{self.path}: more than {self.limits.members} members; refused")
        if size > self.limits.member_bytes:
            raise BadInput(f"{self.path}: member '{key}' declares {_mib(size)}, larger than "
                           f"{_mib(self.limits.member_bytes)}; refused")
        if packed is not None and size > RATIO_FLOOR and size > self.limits.ratio * max(packed,
                                                                                         1):
            raise BadInput(f"{self.path}: member '{key}' is {_mib(packed)} that inflates to "
                           f"{_mib(size)} ({size / max(packed, 1):,.0f}:1, more than "
                           f"{self.limits.ratio:g}:1 for model files): a likely archive bomb; "
                           "refused")
        self.members[key] = size
        self._lower.add(key.lower())

    def has(self, name: str) -> bool:
        return name in self.members

    def _open(self, name: str, use: Callable[[IO[bytes]], None]) -> None:
        if self.kind == "folder":
            with (self.path / name).open("rb") as src:
                use(src)
        elif self.kind == "zip":
            with zipfile.ZipFile(self.path) as z, z.open(name) as src:
                use(src)
        else:
            with tarfile.open(self.path) as t:
                for member in t:
                    if member.isfile() and safe_name(member.name, "").as_posix() == name:
                        src = t.extractfile(member)
                        assert src is not None
                        use(src)
                        return

    def read_bytes(self, name: str, limit: int = MAX_SMALL_BYTES) -> bytes:
        """A small member (manifest, signature, synset), read with a hard cap."""
        if self.members[name] > limit:
            raise BadInput(f"{self.path}: '{name}' declares {_mib(self.members[name])}; at most "
                           f"{_mib(limit)} expected for it; refused")
        out = bytearray()

        def take(src: IO[bytes]) -> None:
            while chunk := src.read(1 << 16):
                out.extend(chunk)
                if len(out) > limit:
                    raise BadInput(f"{self.path}: '{name}' is larger than its header says; "
                                   "refused")

        try:
            self._open(name, take)
        except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, RuntimeError) as exc:
            raise BadInput(f"{self.path}: cannot read '{name}' ({exc})") from None
        return bytes(out)

    def extract(self, names: list[str], dest: Path) -> None:
        """Only `names`, streamed with real bytes counted against the limits."""
        if self.kind == "folder":
            return
        dest.mkdir(parents=True, exist_ok=True)
        total = 0
        try:
            for name in names:
                out = dest.joinpath(*PurePosixPath(name).parts)
                if not out.resolve().is_relative_to(dest.resolve()):
                    raise BadInput(f"{self.path}: member '{name}' resolves outside the "
                                   "archive; refused")
                out.parent.mkdir(parents=True, exist_ok=True)
                written = 0

                def copy(src: IO[bytes], out: Path = out, name: str = name) -> None:
                    nonlocal total, written
                    with out.open("wb") as f:
                        while chunk := src.read(1 << 20):
                            written += len(chunk)
                            total += len(chunk)
                            if written > max(self.members[name], 1) or (
                                    total > self.limits.total_bytes):
                                raise BadInput(f"{self.path}: member '{name}' unpacks to more "
                                               "than its header declares; refused")
                            f.write(chunk)

                self._open(name, copy)
        except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError, RuntimeError) as exc:
            shutil.rmtree(dest, ignore_errors=True)
            raise BadInput(f"{self.path}: corrupt archive ({exc})") from None
        except BaseException:
            shutil.rmtree(dest, ignore_errors=True)
            raise

    def file(self, name: str, dest: Path) -> Path:
        """Where member `name` is on disk (after extract, or in place for a folder)."""
        base = self.path if self.kind == "folder" else dest
        return base.joinpath(*PurePosixPath(name).parts)


def _zip_kind(info: zipfile.ZipInfo) -> str:
    mode = info.external_attr >> 16
    if info.create_system == 3 and mode and stat.S_IFMT(mode) not in (0, stat.S_IFREG,
                                                                         stat.S_IFDIR):
        return "link" if stat.S_ISLNK(mode) else "special file"
    return "dir" if info.is_dir() else "file"


def _json(data: bytes, where: str) -> dict:
    try:
        doc = json.loads(data.decode("utf-8-sig"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadInput(f"{where}: not readable JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise BadInput(f"{where}: expected a JSON object")
    return doc


@dataclass
class _Plan:
    """What MMS would load from an archive, as member names (nothing unpacked yet)."""

    root: str  # "" or "<modelName>/" (model-archiver's tgz format)
    layout: str
    model_name: str
    symbol: str
    params: str
    handler: str | None
    signature: str | None
    synset: str | None


def _model_root(arc: Archive) -> tuple[str, str, dict]:
    """The folder holding the model files, the layout's name and its manifest."""
    tops = sorted({n.split("/", 1)[0] + "/" for n in arc.members if "/" in n})
    for root in ["", *tops]:
        for sub, layout in (("MAR-INF/", "mar-1.0"), ("MAR_INF/", "mar-1.0"), ("", "model-0.x")):
            name = f"{root}{sub}{MANIFEST}"
            if arc.has(name):
                return root, layout, _json(arc.read_bytes(name), f"{arc.path}: {name}")
    raise BadInput(f"{arc.path}: no MAR-INF/MANIFEST.json (model-archiver 1.x) or MANIFEST.json "
                   "(MMS 0.x) inside; not an MXNet Model Server archive")


def _named(arc: Archive, root: str, name: object, what: str) -> str:
    rel = safe_name(str(name), str(arc.path)).as_posix() if name else ""
    if not rel or not arc.has(root + rel):
        raise BadInput(f"{arc.path}: {what} '{name}' is not in the archive")
    return root + rel


def _plan(arc: Archive) -> _Plan:
    root, layout, manifest = _model_root(arc)

    def optional(name: str) -> str | None:
        return root + name if arc.has(root + name) else None

    if layout == "model-0.x":
        model = manifest.get("Model")
        if not isinstance(model, dict):
            raise BadInput(f"{arc.path}: MANIFEST.json has no 'Model' section")
        name = str(model.get("Model-Name") or arc.path.stem)
        if model.get("Model-Format") == "Gluon-Imperative" or not model.get("Symbol"):
            raise BadInput(f"{arc.path}: model '{name}' is a Gluon imperative model (Python "
                           "code, no symbol graph); hybridize it and save it with "
                           "HybridBlock.export() to convert it")
        return _Plan(root, layout, name, _named(arc, root, model["Symbol"], "symbol file"),
                     _named(arc, root, model.get("Parameters"), "parameters file"),
                     model.get("Service"),
                     optional(str(model.get("Signature") or SIGNATURE)), optional(SYNSET))
    model = manifest.get("model")
    if not isinstance(model, dict) or not model.get("modelName"):
        raise BadInput(f"{arc.path}: MAR-INF/MANIFEST.json has no model.modelName")
    name = str(model["modelName"])
    if model.get("symbolFile") and model.get("parametersFile"):  # migrated 0.x manifests
        symbol = _named(arc, root, model["symbolFile"], "symbol file")
        params = _named(arc, root, model["parametersFile"], "parameters file")
    else:
        symbol, params = f"{root}{name}-symbol.json", f"{root}{name}-0000.params"
        if not (arc.has(symbol) and arc.has(params)):
            here = [n[len(root):] for n in arc.members if n.startswith(root)
                    and "/" not in n[len(root):]]
            symbols = sorted(n for n in here if n.endswith("-symbol.json"))
            param_files = sorted(n for n in here if n.endswith(".params"))
            if len(symbols) != 1 or len(param_files) != 1:
                onnx = sorted(n for n in here if n.endswith(".onnx"))
                hint = f"; it holds ONNX {onnx}: use source kind onnx on that file" if onnx \
                    else ""
                raise BadInput(
                    f"{arc.path}: expected {name}-symbol.json and {name}-0000.params (MMS's "
                    f"naming), found symbols {symbols} and params {param_files}{hint}")
            symbol, params = root + symbols[0], root + param_files[0]
    return _Plan(root, layout, name, symbol, params, model.get("handler"), optional(SIGNATURE),
                 optional(SYNSET))


def _floats(value, what: str, where: str) -> list[float] | None:
    if value is None:
        return None
    values = value if isinstance(value, list) else [value]
    try:
        return [float(v) for v in values]
    except (TypeError, ValueError):
        raise BadInput(f"{where}: {what} must be numbers, got {value!r}") from None


def _labels(arc: Archive, plan: _Plan) -> list[str] | None:
    if plan.synset is None:
        return None
    text = arc.read_bytes(plan.synset).decode("utf-8", errors="replace")
    return parse(text, f"{arc.path}: {plan.synset}")


def synset(path: Path) -> tuple[list[str], str] | None:
    """The archive's labels and where they were read, without unpacking anything."""
    arc = Archive(path)
    plan = _plan(arc)
    labels = _labels(arc, plan)
    return (labels, f"{plan.synset} in {path}") if labels else None


def _signature(arc: Archive, plan: _Plan, info: ArchiveInfo) -> None:
    if plan.signature is None:
        info.notes.append("no signature.json: input name and shape come from the recipe")
        return
    where = f"{plan.signature} in {arc.path}"
    sig = _json(arc.read_bytes(plan.signature), where)
    inputs = sig.get("inputs") or []
    first = inputs[0] if inputs and isinstance(inputs[0], dict) else {}
    if len(inputs) > 1:
        info.notes.append(f"signature lists {len(inputs)} inputs; the first is used")
    info.input_name = first.get("data_name")
    shape = first.get("data_shape")
    if shape is not None:
        if (not isinstance(shape, list) or len(shape) != 4
                or not all(isinstance(d, int) and d >= 0 for d in shape)):
            raise BadInput(f"{where}: data_shape {shape!r} is not a 4-D NCHW shape")
        info.input_shape = [1, *shape[1:]]  # MMS writes 0 for the batch
    info.input_type = sig.get("input_type")
    for key in ("mean", "std"):
        setattr(info, key, _floats(first.get(key, sig.get(key)), key, where))
    scale = first.get("scale", sig.get("scale"))
    info.scale = _floats(scale, "scale", where)[0] if scale is not None else None


def unpack(path: Path, dest: Path, limits: Limits = Limits()) -> ArchiveInfo:
    """Check the archive, read its manifest, and unpack the symbol and params MMS would
    load into `dest` (a folder is read in place); nothing else is written."""
    arc = Archive(path, limits)
    plan = _plan(arc)
    info = ArchiveInfo(layout=plan.layout, model_name=plan.model_name,
                       symbol=arc.file(plan.symbol, dest), params=arc.file(plan.params, dest),
                       handler=plan.handler)
    _signature(arc, plan, info)
    info.labels = _labels(arc, plan)
    arc.extract([plan.symbol, plan.params], dest)
    return info


@dataclass
class HandlerFolder:
    """The model folder as MMS 1.x unpacks it for the handler: every file, not only the
    graph and weights."""

    model_dir: Path
    manifest: dict
    handler: str | None
    model_name: str
    layout: str


def unpack_for_handler(path: Path, dest: Path, limits: Limits = Limits()) -> HandlerFolder:
    """All members of the model's folder into `dest` (a folder is read in place), with the
    checks `unpack` makes."""
    arc = Archive(path, limits)
    root, layout, manifest = _model_root(arc)
    plan = _plan(arc)
    arc.extract(sorted(n for n in arc.members if n.startswith(root)), dest)
    base = path if arc.kind == "folder" else dest
    return HandlerFolder(base.joinpath(*PurePosixPath(root).parts) if root else base,
                         manifest, plan.handler, plan.model_name, layout)
