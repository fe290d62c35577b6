"""The artifact manifest a build publishes, and `optimizer verify` that re-checks it.

A release pipeline deploys what a build made, often in a later job on another machine. The
manifest says what every published file is, its digest and size, which recipe, tool and
library versions made it, for which target, and how it validated, so that a later step can
prove the files it holds are those files, byte for byte.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from optimizer.errors import BadInput
from optimizer.model import sha256_file

MANIFEST = "manifest.json"
FORMAT = 1

# (suffix or name, kind), first match wins; the kinds are part of the manifest's contract
KINDS: tuple[tuple[str, str], ...] = (
    ("required_operators.config", "ort-operators"),
    (".onnx", "model/onnx"), (".tflite", "model/tflite"), (".keras", "model/keras"),
    (".ort", "model/ort"), ("function.zip", "package/function-zip"),
    (".zip", "package/layer-zip"), ("image.tar", "package/image-tarball"),
    ("sample-event.json", "package/sample-event"), ("template.yaml", "package/sam-template"),
    ("report.json", "report/json"),
    ("report.md", "report/markdown"), ("preprocess.json", "contract/preprocess"),
    ("labels.json", "contract/labels"), (".svg", "plot"), (".html", "plot"),
)


def kind_of(rel: str) -> str:
    if "/saved_model.pb" in rel or "/variables/" in rel or rel.endswith("/fingerprint.pb"):
        return "model/savedmodel-file"
    return next((k for end, k in KINDS if rel.endswith(end)), "other")


def _validation(rel: str, report: dict[str, Any]) -> dict[str, Any] | None:
    """What the build measured about this file, from its report."""
    for a in report.get("artifacts", []):
        if a.get("file") and (rel == a["file"] or rel.startswith(a["file"] + "/")):
            v = a["validation"]
            return {"artifact": a["name"], "accuracy": v.get("accuracy"),
                    "agreement": v.get("agreement"),
                    "p50_ms": v.get("latency", {}).get("p50_ms"), "passed": a["passed"],
                    "failed_gates": [g["gate"] for g in a["gates"] if not g["passed"]],
                    "shipped": a["name"] == report.get("ship")}
    for p in report.get("packages", []):
        if rel == f"package/{p.get('file')}":
            proof = p.get("proof") or {}
            return {"limits_ok": all(lim.get("ok", True) for lim in p.get("limits", [])),
                    "proved": "label" in proof and proof.get("label") == proof.get("expected"),
                    "proved_as": (proof.get("isa") or {}).get("emulator")}
    return None


def files_of(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if p.is_file() and p.name != MANIFEST)


def make(folder: Path, report: dict[str, Any]) -> dict[str, Any]:
    """The manifest of a staged output folder, written last, over everything else in it."""
    entries = []
    for rel in files_of(folder):
        path = folder / rel
        entry = {"path": rel, "kind": kind_of(rel), "sha256": sha256_file(path),
                 "bytes": path.stat().st_size}
        if (v := _validation(rel, report)) is not None:
            entry["validation"] = v
        entries.append(entry)
    r = report
    return {
        "format": FORMAT,
        "tool": r["tool"],
        "recipe": {k: r["recipe"][k] for k in ("name", "file", "digest")},
        "built": r["started"],
        "target": r["target"],
        "host": {k: r["host"].get(k) for k in ("model", "arch", "flags")},
        "libraries": r["libraries"],
        "passed": r["passed"],
        "ship": r.get("ship_file"),
        "ship_runtime": r.get("ship_runtime"),
        "artifacts": entries,
    }


def write(folder: Path, report: dict[str, Any]) -> None:
    doc = make(folder, report)
    (folder / MANIFEST).write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")


def load(path: Path) -> dict[str, Any]:
    if path.is_dir():
        path = path / MANIFEST
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise BadInput(f"{path}: no such manifest") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInput(f"{path}: not a readable JSON manifest ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or not isinstance(
            doc.get("artifacts"), list):
        raise BadInput(f"{path}: not an optimizer manifest (format {FORMAT} with an "
                       "'artifacts' list)")
    for i, e in enumerate(doc["artifacts"]):
        rel = e.get("path") if isinstance(e, dict) else None
        if (not isinstance(rel, str) or not rel or rel.startswith("/") or ".." in
                Path(rel).parts or not isinstance(e.get("sha256"), str)
                or not isinstance(e.get("bytes"), int)):
            raise BadInput(f"{path}: artifacts[{i}] needs a relative 'path' inside the folder, "
                           "a 'sha256' and 'bytes'")
    return doc


def verify(path: Path) -> dict[str, Any]:
    """Every listed file present with its size and digest; files the manifest does not
    list are reported too, since a deploy step might pick them up."""
    doc = load(path)
    folder = path if path.is_dir() else path.parent
    problems = []
    for e in doc["artifacts"]:
        f = folder / e["path"]
        if not f.is_file():
            problems.append({"path": e["path"], "problem": "missing"})
        elif f.stat().st_size != e["bytes"]:
            problems.append({"path": e["path"], "problem": f"size {f.stat().st_size:,} B, "
                             f"manifest says {e['bytes']:,} B"})
        elif (digest := sha256_file(f)) != e["sha256"]:
            problems.append({"path": e["path"], "problem": f"sha256 {digest[:16]}..., manifest "
                             f"says {e['sha256'][:16]}..."})
    listed = {e["path"] for e in doc["artifacts"]}
    unlisted = [rel for rel in files_of(folder) if rel not in listed]
    return {"manifest": str(path), "recipe": doc.get("recipe", {}).get("name"),
            "checked": len(doc["artifacts"]), "problems": problems, "unlisted": unlisted,
            "ok": not problems and not unlisted}
