"""A 4-candidate grid built locally and on a local two-node Ray cluster, in one run.

    python benchmarks/cluster.py [--epochs 4]

Both builds start from empty caches and build the same recipe: the test suite's small
Keras teacher, trained here, distilled into MobileNetV2 and MobileNetV3Small at alpha 0.35
and 0.5, 32 px, each exported to ONNX. Locally the candidates train in worker processes
(2 at once on 2 cores); on the cluster each node has 1 CPU, so 2 tasks run at once there
too and equal wall times are the expectation. What the run adds is the cost of Ray itself:
per task, its time in Ray (queueing for a free slot, moving inputs and results, starting a
worker process) beside its run time, and an empty task's round trip. Writes
benchmarks/results/cluster.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import ray_cluster  # noqa: E402 - the same cluster the tests start
from tests.conftest import train_tiny_keras  # noqa: E402 - the suite's teacher

PROBE = """
import json, time, ray
ray.init(address="{address}", logging_level="ERROR", log_to_driver=False)
@ray.remote(num_cpus=1)
def nothing():
    return None
ray.get(nothing.remote())  # a warm worker
times = []
for _ in range(20):
    t0 = time.perf_counter(); ray.get(nothing.remote()); times.append(time.perf_counter() - t0)
print(json.dumps(times))
"""


def recipe(folder: Path, model: Path, epochs: int) -> Path:
    path = folder / "grid.yaml"
    path.write_text(textwrap.dedent(f"""
        name: cluster-grid
        source: {{kind: keras, path: {model}, preprocess: {{scale: 0.00392156862745098}}}}
        dataset: {{kind: sklearn-digits}}
        steps:
          - step: distill
            name: student
            input: source
            candidates: {{architecture: [MobileNetV2, MobileNetV3Small], alpha: [0.35, 0.5],
                          input_size: [32]}}
            temperature: 3
            train: {{epochs: {epochs}, batch_size: 32, learning_rate: 0.005, augment: 0}}
          - step: export_onnx
            name: fp32
        validate: {{max_accuracy_drop: 100, prefer: size, latency: {{warmup: 2, runs: 10}}}}
        """).lstrip())
    return path


def build(prefix: list[str], recipe_file: Path, work: Path, *extra: str) -> tuple[float, dict]:
    env = {**os.environ, "OPTIMIZER_CACHE": str(work / "cache")}
    env.pop("OPTIMIZER_RAY", None)
    t0 = time.perf_counter()
    res = subprocess.run([*prefix, sys.executable, "-m", "optimizer", "build", str(recipe_file),
                          "--out", str(work / "out"), "--json", *extra],
                         capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if res.returncode != 0:
        sys.exit(f"build failed ({' '.join(extra) or 'local'}):\n{res.stderr[-3000:]}")
    return wall, json.loads(res.stdout)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "cluster.json")
    args = ap.parse_args()
    if why := ray_cluster.available():
        sys.exit(why)
    from optimizer import hostinfo

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        recipe_file = recipe(tmp, train_tiny_keras(tmp / 'teacher.keras'), args.epochs)
        cluster = ray_cluster.start()
        try:
            local_wall, local = build([], recipe_file, tmp / "local")
            ray_wall, on_ray = build(cluster.cmd(), recipe_file, tmp / "ray", "--ray",
                                     cluster.address)
            probe = cluster.run(sys.executable, "-c", PROBE.format(address=cluster.address))
            empty = json.loads(probe.stdout.strip().splitlines()[-1])
        finally:
            cluster.stop()
    tasks = on_ray["executor"]["tasks"]
    training = [t for t in tasks if t["what"].startswith("student@")]
    same = all(a["digest"] == b["digest"] for a, b in zip(local["artifacts"],
                                                           on_ray["artifacts"], strict=True))

    def phase(doc: dict, prefix: str) -> float:
        return round(sum(a["build_seconds"] for a in doc["artifacts"]
                         if a["name"].startswith(prefix)), 2)

    result = {
        "host": hostinfo.cpu(), "epochs": args.epochs, "candidates": len(training),
        "cluster": "2 nodes x 1 CPU on this machine (loopback-only network namespace)",
        "local": {"wall_s": round(local_wall, 2), "report_seconds": local["seconds"],
                  "workers": local["executor"]["candidates"],
                  "training_s": phase(local, "student@")},
        "ray": {"wall_s": round(ray_wall, 2), "report_seconds": on_ray["seconds"],
                "training_s": phase(on_ray, "student@"), "tasks": tasks},
        "same_artifacts": same,
        "same_ship": local["ship"] == on_ray["ship"],
        "per_task": {
            "training_run_s": [t["run_s"] for t in training],
            "training_in_ray_s": [t["overhead_s"] for t in training],
            "all_in_ray_median_s": round(statistics.median(t["overhead_s"] for t in tasks), 3),
            "empty_task_round_trip_ms": round(1000 * statistics.median(empty), 2),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"{'build':<8} {'wall s':>8} {'training s (sum)':>17}")
    print(f"{'local':<8} {local_wall:>8.1f} {result['local']['training_s']:>17.1f}")
    print(f"{'ray':<8} {ray_wall:>8.1f} {result['ray']['training_s']:>17.1f}")
    print(f"\n{'ray task':<44} {'node':<10} {'run s':>7} {'in Ray s':>9}")
    for t in tasks:
        print(f"{t['what'][:44]:<44} {t['node_id'][:8]:<10} {t['run_s']:>7.2f} "
              f"{t['overhead_s']:>9.2f}")
    print(f"\nempty task round trip: {result['per_task']['empty_task_round_trip_ms']} ms; "
          f"same artifacts: {same}; same ship: {result['same_ship']}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
