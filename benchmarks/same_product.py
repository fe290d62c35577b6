"""The same product before and after a change to the code: a recipe built from an empty
cache by an earlier commit and by this checkout, in one run, and compared.

    python benchmarks/same_product.py --before COMMIT [--recipe recipes/mobilenet-lambda.yaml]

Each side runs as its own process (the earlier commit from a `git worktree`), each with a
cache of its own, so nothing one side made is reused by the other; tool environments (the
emulation root, MXNet's) are shared, since they are not the product. Compared:

- every model file in the manifest (`.onnx`, `.tflite`, `.keras`): the same sha256;
- the ship, the engine it ships with, and whether the build passed;
- every artifact's accuracy, agreement and per-engine accuracy, and every gate's verdict
  and value (gates on latency excepted: timings are never the same twice);
- report.json's keys: every key path the earlier build wrote is still there.

Writes benchmarks/results/same_product.json and prints a table; exits 1 on any difference.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MODEL_KINDS = ("model/onnx", "model/tflite", "model/keras")
TIMED_GATES = ("max_latency_ms",)


def build(code: Path, recipe: str, work: Path, label: str) -> dict[str, Any]:
    """The recipe built by the code at `code`, from an empty cache."""
    out, cache = work / f"out-{label}", work / f"cache-{label}"
    envs = os.environ.get("OPTIMIZER_ENVS", str(Path.home() / ".cache" / "optimizer" / "envs"))
    env = {**os.environ, "PYTHONPATH": str(code), "OPTIMIZER_CACHE": str(cache),
           "OPTIMIZER_ENVS": envs}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "optimizer", "build", recipe, "--out",
                           str(out), "--json"], cwd=code, env=env, capture_output=True,
                          text=True)
    seconds = time.perf_counter() - t0
    (work / f"build-{label}.log").write_text(proc.stderr)
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{label}: build failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return {"report": json.loads(proc.stdout), "seconds": round(seconds, 1),
            "manifest": json.loads((out / "manifest.json").read_text()),
            "exit_code": proc.returncode}


def models(side: dict[str, Any]) -> dict[str, str]:
    return {e["path"]: e["sha256"] for e in side["manifest"]["artifacts"]
            if e["kind"] in MODEL_KINDS}


def verdicts(report: dict[str, Any]) -> dict[str, Any]:
    """What measures the models, not the machine: accuracies and untimed gates."""
    out = {}
    for a in report["artifacts"]:
        v = a["validation"]
        out[a["name"]] = {
            "accuracy": v.get("accuracy"), "agreement": v.get("agreement"),
            "mean_kl": v.get("mean_kl"), "max_class_drop": v.get("max_class_drop"),
            "engines": {e: m.get("accuracy") for e, m in v.get("runtimes", {}).items()},
            "gates": [(g["gate"], g["passed"], g["value"]) for g in a["gates"]
                      if g["gate"] not in TIMED_GATES]}
    return out


def key_paths(doc: Any, prefix: str = "") -> set[str]:
    """Every key path of a JSON document; list items share one path (`[]`), and the keys of
    mappings keyed by names (artifacts, engines, targets) are folded to `*`."""
    paths: set[str] = set()
    if isinstance(doc, dict):
        for k, v in doc.items():
            name = "*" if prefix.endswith(("runtimes", "targets", "by_distribution",
                                           "removed_by_rule", "versions", "libraries",
                                           "candidates", "info", "zipped_by_distribution"))\
                else k
            paths.add(f"{prefix}.{name}")
            paths |= key_paths(v, f"{prefix}.{name}")
    elif isinstance(doc, list):
        for v in doc:
            paths |= key_paths(v, f"{prefix}[]")
    return paths


def compare(before: dict[str, Any], after: dict[str, Any]) -> dict[str, Any]:
    rb, ra = before["report"], after["report"]
    mb, ma = models(before), models(after)
    vb, va = verdicts(rb), verdicts(ra)
    lost = sorted(key_paths(rb) - key_paths(ra))
    return {
        "model_files": {p: {"before": mb.get(p), "after": ma.get(p),
                            "same": mb.get(p) == ma.get(p)} for p in sorted(set(mb) | set(ma))},
        "ship": {"before": [rb["ship"], rb.get("ship_runtime"), rb["passed"]],
                 "after": [ra["ship"], ra.get("ship_runtime"), ra["passed"]]},
        "verdicts_differ": {n: {"before": vb.get(n), "after": va.get(n)}
                            for n in sorted(set(vb) | set(va)) if vb.get(n) != va.get(n)},
        "report_keys_lost": lost,
        "report_keys_added": sorted(key_paths(ra) - key_paths(rb)),
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", required=True, help="the earlier commit")
    ap.add_argument("--recipe", default="recipes/mobilenet-lambda.yaml")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/same_product.json")
    args = ap.parse_args()
    commit = subprocess.run(["git", "rev-parse", args.before], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout.strip()
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, check=True,
                          capture_output=True, text=True).stdout.strip()
    dirty = bool(subprocess.run(["git", "status", "--porcelain", "optimizer"], cwd=ROOT,
                                capture_output=True, text=True).stdout.strip())
    with tempfile.TemporaryDirectory(prefix="same-product-") as tmp:
        work = Path(tmp)
        tree = work / "before-tree"
        subprocess.run(["git", "worktree", "add", "--detach", str(tree), commit], cwd=ROOT,
                       check=True, capture_output=True)
        try:
            before = build(tree, args.recipe, work, "before")
            after = build(ROOT, args.recipe, work, "after")
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT,
                           capture_output=True)
    diff = compare(before, after)
    same_files = all(f["same"] for f in diff["model_files"].values())
    ok = (same_files and diff["ship"]["before"] == diff["ship"]["after"]
          and not diff["verdicts_differ"] and not diff["report_keys_lost"])
    result = {"benchmark": "same_product", "recipe": args.recipe, "before": commit,
              "after": head + (" (with uncommitted changes)" if dirty else ""),
              "seconds": {"before": before["seconds"], "after": after["seconds"]},
              "exit_codes": {"before": before["exit_code"], "after": after["exit_code"]},
              "identical": ok, **diff}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"{args.recipe}: {commit[:10]} against {head[:10]}"
          f"{' + changes' if dirty else ''}")
    print(f"{'model file':60} {'before':>12} {'after':>12}  same")
    for path, f in diff["model_files"].items():
        print(f"{path:60} {(f['before'] or '-')[:12]:>12} {(f['after'] or '-')[:12]:>12}  "
              f"{'yes' if f['same'] else 'NO'}")
    print(f"ship: {diff['ship']['before']} -> {diff['ship']['after']}")
    print(f"artifacts whose accuracy or gates differ: {len(diff['verdicts_differ'])}")
    print(f"report.json keys lost: {len(diff['report_keys_lost'])}, added: "
          f"{len(diff['report_keys_added'])}")
    print(f"build seconds: before {before['seconds']}, after {after['seconds']}")
    print("identical" if ok else "DIFFERENT")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
