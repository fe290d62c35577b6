"""Function zip plus dependency layer zips, checked against the limits and proved to run."""

from __future__ import annotations

import base64
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from optimizer.archive import extract_zip, files_under, write_zip
from optimizer.emulation.qemu import Emulator
from optimizer.model import sha256_file
from optimizer.package import layers as layer_split
from optimizer.package import sizes, smoke

FUNCTION_ZIP = "function.zip"


@dataclass
class ZipPlan:
    python: str
    arch: str
    memory_mb: int
    layers: int


def _entries(root: Path, prefix: str = "") -> list[tuple[str, Path]]:
    return [(prefix + name, p) for name, p in files_under(root)]


def write(function_dir: Path, deps_dir: Path, plan: ZipPlan, out: Path) -> list[Path]:
    """function.zip (handler and model, plus the dependencies when layers is 0) and
    layer-N.zip files with the dependencies under python/, as Lambda layers expect."""
    fn = _entries(function_dir)
    zips = []
    if plan.layers == 0:
        fn += _entries(deps_dir)
    else:
        for i, group in enumerate(layer_split.split(deps_dir, plan.layers), start=1):
            entries = []
            for top in group:
                if top.is_file():
                    entries.append((f"python/{top.name}", top))
                else:
                    entries += _entries(top, f"python/{top.name}/")
            path = out / f"layer-{i}.zip"
            write_zip(path, entries)
            zips.append(path)
    write_zip(out / FUNCTION_ZIP, fn)
    return [out / FUNCTION_ZIP, *zips]


def describe(zips: list[Path]) -> tuple[list[dict], list[sizes.Limit]]:
    parts = [sizes.inspect_zip(z) for z in zips]
    records = [{
        "kind": "zip" if z.name == FUNCTION_ZIP else "layer",
        "file": z.name,
        "zipped_bytes": p.zipped,
        "unzipped_bytes": p.unzipped,
        "files": p.files,
        "sha256": sha256_file(z),
        "largest": p.largest[:5],
    } for z, p in zip(zips, parts, strict=True)]
    return records, sizes.limits_for(parts)


def prove(zips: list[Path], plan: ZipPlan, events: list, emulate: Emulator | None = None,
          target: str | None = None) -> dict:
    """Unpack as Lambda does (/var/task and /opt) and invoke the handler."""
    with tempfile.TemporaryDirectory(prefix="optimizer-unzip-") as tmp:
        task = Path(tmp) / "task"
        extract_zip(zips[0], task)
        opts = []
        for i, layer in enumerate(zips[1:]):
            opt = Path(tmp) / f"opt{i}"
            extract_zip(layer, opt)
            opts.append(opt)
        return smoke.run(plan.python, task, opts, events, plan.memory_mb,
                         timeout_s=900 if emulate else 300, emulate=emulate, target=target)


def sample_event(pngs: list[bytes]) -> dict:
    """A Function URL request: one image as a binary body, several as a JSON body."""
    event = {"version": "2.0", "rawPath": "/",
             "requestContext": {"http": {"method": "POST", "path": "/"}}}
    if len(pngs) == 1:
        return {**event, "isBase64Encoded": True, "headers": {"content-type": "image/png"},
                "body": base64.b64encode(pngs[0]).decode()}
    body = json.dumps({"images": [base64.b64encode(p).decode() for p in pngs]})
    return {**event, "isBase64Encoded": False,
            "headers": {"content-type": "application/json"}, "body": body}
