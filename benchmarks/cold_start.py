"""Cold start (Init Duration) of mobilenet-lambda's shipped zip against keras-image's
TensorFlow image, at the same memory size, each started several times in alternation;
labels, runtimes and cache use are read from the builds' reports.

    python benchmarks/cold_start.py [--memory 1769] [--starts 5]

Needs `optimizer build` of recipes/mobilenet-lambda.yaml and recipes/keras-image.yaml
first (the zip and the TensorFlow image), and a Docker Engine. Writes
benchmarks/results/cold_start.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from optimizer import hostinfo, targets
from optimizer.handler.events import images_from_event
from optimizer.lambda_local.deployable import open_deployable
from optimizer.lambda_local.session import Session
from optimizer.package.proof import sample_event

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--memory", type=int, default=1769)
    ap.add_argument("--starts", type=int, default=5)
    args = ap.parse_args()
    keras = json.loads((ROOT / "artifacts/keras-image/report.json").read_text())
    image = next(p["ref"] for p in keras["packages"] if p["kind"] == "image")
    lam = json.loads((ROOT / "artifacts/mobilenet-lambda/report.json").read_text())
    sample = json.loads((ROOT / "artifacts/mobilenet-lambda/package/sample-event.json")
                        .read_text())
    event = sample_event(images_from_event(sample, 1 << 30, 1 << 20)[:1])  # batch 1
    zip_label = f"{lam['ship_runtime']} zip ({lam['ship']})"
    model = keras["packages"][-1]["model"]
    image_label = f"{keras['ship_runtime'] or 'tensorflow'} image ({model})"
    cpus = targets.vcpus(args.memory)
    with tempfile.TemporaryDirectory() as work:
        subjects = {
            zip_label: open_deployable(str(ROOT / "artifacts/mobilenet-lambda"), Path(work)),
            image_label: open_deployable(f"docker://{image}", Path(work)),
        }
        runs: dict[str, list[dict]] = {name: [] for name in subjects}
        for _ in range(args.starts):
            for name, dep in subjects.items():  # alternate, so drift hits both alike
                s = Session(dep.make(args.memory, cpus, 60), args.memory, 60)
                try:
                    cold, warm = s.invoke(event), s.invoke(event)
                finally:
                    s.close()
                assert cold.status == warm.status == "ok", (cold.error, warm.error)
                runs[name].append({"init_ms": cold.init_ms, "first_ms": cold.duration_ms,
                                   "warm_ms": warm.duration_ms,
                                   "max_memory_mb": warm.max_memory_mb,
                                   "cap": s.instance.cap_method})
    rows = {name: {
        "init_ms_median": round(statistics.median(r["init_ms"] for r in rs), 1),
        "init_ms_all": [round(r["init_ms"], 1) for r in rs],
        "first_invoke_ms_median": round(statistics.median(r["first_ms"] for r in rs), 1),
        "warm_ms_median": round(statistics.median(r["warm_ms"] for r in rs), 2),
        "max_memory_mb": max(r["max_memory_mb"] or 0 for r in rs),
        "cap": rs[0]["cap"],
        "over_lambda_init_limit": sum(r["init_ms"] > targets.LIMITS.init_timeout_s * 1000
                                      for r in rs),
    } for name, rs in runs.items()}
    base = rows[zip_label]["init_ms_median"]
    doc = {"memory_mb": args.memory, "vcpus": cpus, "starts": args.starts,
           "host": hostinfo.cpu(), "results": rows,
           "builds": {"zip": {"recipe": lam["recipe"]["name"], "ship": lam["ship"],
                              "runtime": lam["ship_runtime"], "cache": lam["cache"]},
                      "image": {"recipe": keras["recipe"]["name"], "ref": image,
                                "cache": keras["cache"]}},
           "image_over_zip_init": round(rows[image_label]["init_ms_median"] / base, 2)}
    out = ROOT / "benchmarks/results/cold_start.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"{args.memory} MB ({cpus:.3f} vCPU), {args.starts} cold starts each, "
          f"{doc['host']['model']}")
    print(f"{'package':60} {'init ms':>9} {'1st call ms':>12} {'warm ms':>9} {'max MB':>7} "
          f"{'over 10 s':>9}")
    for name, r in rows.items():
        print(f"{name:60} {r['init_ms_median']:9.1f} {r['first_invoke_ms_median']:12.1f} "
              f"{r['warm_ms_median']:9.2f} {r['max_memory_mb']:7.0f} "
              f"{r['over_lambda_init_limit']:>4}/{args.starts}")
    print(f"{image_label} init / {zip_label} init: {doc['image_over_zip_init']}x")


if __name__ == "__main__":
    main()
