"""Init Duration, where it goes, and package size: the shipped LiteRT and ONNX Runtime zips of
recipes/mobilenet-lambda.yaml, as built now and as built by an earlier commit, in one run.

    python benchmarks/init_size.py --before COMMIT [--memory 512,1769,3008] [--starts 5]

Builds four packages: the recipe (it ships LiteRT) and the recipe made to ship its ONNX
Runtime int8 student (no runtime comparison, `package.model: int8`), each with this
checkout's code and with COMMIT's (a `git worktree`, run as its own process; the cache is
shared, so training is reused wherever the code it depends on did not change). Then every
package is started `--starts` times at each memory size under the local Lambda with the
size's CPU cap, in alternation so drift hits all alike: Init Duration (median), the
handler's OPTIMIZER_INIT breakdown (packages from before have none), the first request
after init, and the warm p50 of 10 requests. Sizes are the zips' and their unpacked total
(function plus layers). Writes benchmarks/results/init_size.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from optimizer import hostinfo, targets
from optimizer.handler.events import images_from_event
from optimizer.lambda_local.deployable import open_deployable
from optimizer.lambda_local.session import INIT_PARTS, Session
from optimizer.package.proof import sample_event

ROOT = Path(__file__).resolve().parent.parent
RECIPE = "recipes/mobilenet-lambda.yaml"
WARM = 10


def recipes(code_root: Path, work: Path) -> dict[str, Path]:
    """The recipe as it is at `code_root`, and its ONNX Runtime twin."""
    doc = yaml.safe_load((code_root / RECIPE).read_text())
    doc.pop("runtimes", None)
    doc["name"] = "mobilenet-lambda-ort"
    doc["package"] = {**doc.get("package", {}), "model": "int8"}
    ort = work / f"ort-{code_root.name}.yaml"
    ort.write_text(yaml.safe_dump(doc, sort_keys=False))
    return {"litert": code_root / RECIPE, "onnxruntime": ort}


def build(code_root: Path, recipe: Path, out: Path) -> dict:
    env = {**os.environ, "PYTHONPATH": str(code_root)}
    proc = subprocess.run([sys.executable, "-m", "optimizer", "build", str(recipe), "--out",
                           str(out), "--json"], cwd=code_root, env=env, capture_output=True,
                          text=True)
    if proc.returncode != 0:
        raise SystemExit(f"build of {recipe} with {code_root} failed ({proc.returncode}):\n"
                         + proc.stderr[-3000:])
    return json.loads(proc.stdout)


def sizes(report: dict) -> dict:
    zips = [p for p in report["packages"] if p["kind"] in ("zip", "layer") and "file" in p]
    return {"zipped_mib": round(sum(p["zipped_bytes"] for p in zips) / 2**20, 2),
            "unpacked_mib": round(sum(p["unzipped_bytes"] for p in zips) / 2**20, 2),
            "files": {p["file"]: {"zipped": p["zipped_bytes"], "unpacked": p["unzipped_bytes"]}
                      for p in zips},
            "slim": next((p.get("slim") for p in zips if p["kind"] == "zip"), None)}


def start(dep, memory: int, event: dict) -> dict:
    s = Session(dep.make(memory, targets.vcpus(memory), 60), memory, 60)
    try:
        cold = s.invoke(event)
        warm = [s.invoke(event) for _ in range(WARM)]
    finally:
        s.close()
    assert cold.status == "ok" and all(w.status == "ok" for w in warm), (cold.error,)
    return {"init_ms": cold.init_ms, "breakdown": cold.init_breakdown,
            "first_ms": cold.duration_ms,
            "warm_p50_ms": statistics.median(w.duration_ms for w in warm),
            "label": json.loads(cold.response["body"])["predictions"][0]["top"][0]["label"]}


def summary(runs: list[dict]) -> dict:
    out = {"init_ms_median": round(statistics.median(r["init_ms"] for r in runs), 1),
           "init_ms_all": [round(r["init_ms"], 1) for r in runs],
           "first_request_ms_median": round(statistics.median(r["first_ms"] for r in runs), 2),
           "warm_p50_ms_median": round(statistics.median(r["warm_p50_ms"] for r in runs), 2)}
    out["first_over_warm"] = round(out["first_request_ms_median"]
                                   / max(out["warm_p50_ms_median"], 1e-9), 2)
    if all(r["breakdown"] for r in runs):
        out["breakdown_ms_median"] = {
            k: round(statistics.median(r["breakdown"][k] or 0 for r in runs), 1)
            for k, _ in INIT_PARTS}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--before", required=True, help="git commit to compare with")
    ap.add_argument("--memory", default="512,1769,3008")
    ap.add_argument("--starts", type=int, default=5)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/init_size.json")
    args = ap.parse_args()
    memories = [int(m) for m in args.memory.split(",")]
    with tempfile.TemporaryDirectory(prefix="optimizer-bench-") as tmp:
        work = Path(tmp)
        before_root = work / "before"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach",
                        str(before_root), args.before], check=True, capture_output=True)
        try:
            reports, deps = {}, {}
            for when, code_root in (("after", ROOT), ("before", before_root)):
                for runtime, recipe in recipes(code_root, work).items():
                    name = f"{runtime} {when}"
                    print(f"build  {name}", flush=True)
                    out = work / "out" / name.replace(" ", "-")
                    reports[name] = build(code_root, recipe, out)
                    deps[name] = open_deployable(str(out), work / "run" / name.replace(" ", "-"))
            sample = json.loads((work / "out/litert-after/package/sample-event.json")
                                .read_text())
            event = sample_event(images_from_event(sample, 1 << 30, 1 << 20)[:1])  # batch 1
            runs: dict[tuple[str, int], list[dict]] = {}
            for i in range(args.starts):
                for memory in memories:
                    for name, dep in deps.items():
                        print(f"start  {name} at {memory} MB ({i + 1}/{args.starts})",
                              flush=True)
                        runs.setdefault((name, memory), []).append(start(dep, memory, event))
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force",
                            str(before_root)], capture_output=True)
    labels = {r["label"] for rs in runs.values() for r in rs}
    assert len(labels) == 1, f"the packages disagree on the sample image: {labels}"
    packages = {name: {**{k: next(p[k] for p in r["packages"] if p["kind"] == "zip")
                          for k in ("model", "model_runtime")},
                       "cache": {k: r["cache"][k] for k in ("hits", "misses")}, **sizes(r)}
                for name, r in reports.items()}
    doc = {"recipe": RECIPE, "before": args.before, "host": hostinfo.cpu(),
           "starts": args.starts, "warm_requests": WARM, "label": labels.pop(),
           "cap_method": "local Lambda: cgroup memory limit and CFS quota of the size's vCPUs",
           "packages": packages,
           "results": {f"{name} @ {memory}": summary(rs) for (name, memory), rs in runs.items()}}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"\n{doc['host']['model']}; {args.starts} cold starts per row; before = {args.before}")
    print(f"{'package':22}{'zip MiB':>9}{'unpacked':>10}")
    for name, p in packages.items():
        print(f"{name:22}{p['zipped_mib']:>9.2f}{p['unpacked_mib']:>10.2f}  {p['model']} "
              f"({p['model_runtime']})")
    print(f"\n{'package @ MB':30}{'init ms':>9}{'1st ms':>8}{'warm p50':>9}{'1st/warm':>9}  "
          "breakdown (runtime start, numpy, image lib, runtime import, load, warm-up, other)")
    for key, r in doc["results"].items():
        parts = r.get("breakdown_ms_median")
        shown = " ".join(f"{v:.0f}" for v in parts.values()) if parts else "-"
        print(f"{key:30}{r['init_ms_median']:>9.1f}{r['first_request_ms_median']:>8.1f}"
              f"{r['warm_p50_ms_median']:>9.2f}{r['first_over_warm']:>9.2f}  {shown}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
