"""A 4-candidate grid built locally and on a local two-node Ray cluster, in one run.

    python benchmarks/cluster.py [--epochs 4]

Both builds start from empty caches and build the same recipe: the test suite's small
Keras teacher, trained here, distilled into MobileNetV2 and MobileNetV3Small at alpha 0.35
and 0.5, 32 px, each exported to ONNX. Locally the candidates train in worker processes
(2 at once on 2 cores); on the cluster each node has 1 CPU, so 2 tasks run at once there
too and equal wall times are the expectation. What the run adds is the cost of Ray itself:
per task, its run time, the time it waited for a free CPU (the second wave of candidates
waits for the first), and the rest, Ray's own cost (moving inputs and results, starting a
worker process); and an empty task's round trip. Writes benchmarks/results/cluster.json
and prints a table.
"""

from __future__ import annotations

import argparse
import json
import statistics
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
    t0 = time.perf_counter()
    res, doc = ray_cluster.build(prefix, recipe_file, work / "out", work / "cache", *extra,
                                 timeout=3600)
    wall = time.perf_counter() - t0
    if res.returncode != 0 or doc is None:
        sys.exit(f"build failed ({' '.join(extra) or 'local'}):\n{res.stderr[-3000:]}")
    return wall, doc


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

    def queued(task: dict) -> float:
        """Time a task waited for a CPU: until the last task before it on its node ended
        (each node has one CPU; clocks agree, as every node is this machine)."""
        before = [t["ended_at"] for t in tasks if t["node_id"] == task["node_id"]
                  and t["ended_at"] <= task["started_at"]]
        return max(0.0, max(before, default=task["submitted_at"]) - task["submitted_at"])

    for t in tasks:
        t["queued_s"] = round(queued(t), 3)
        t["ray_s"] = round(t["overhead_s"] - t["queued_s"], 3)

    def epochs(doc: dict) -> dict[str, float]:
        """Seconds in the epochs themselves, per candidate: the rest of a task is start-up."""
        return {a["name"]: round(sum(a["info"]["training"]["history"]["seconds"]), 2)
                for a in doc["artifacts"] if a["name"].startswith("student@")}

    result = {
        "host": hostinfo.cpu(), "epochs": args.epochs, "candidates": len(training),
        "cluster": "2 nodes x 1 CPU on this machine (loopback-only network namespace)",
        "local": {"wall_s": round(local_wall, 2), "report_seconds": local["seconds"],
                  "workers": local["executor"]["candidates"],
                  "training_s": phase(local, "student@"), "epochs_s": epochs(local)},
        "ray": {"wall_s": round(ray_wall, 2), "report_seconds": on_ray["seconds"],
                "training_s": phase(on_ray, "student@"), "epochs_s": epochs(on_ray),
                "tasks": tasks},
        "same_artifacts": same,
        "same_ship": local["ship"] == on_ray["ship"],
        "per_task": {
            "training_run_s": [t["run_s"] for t in training],
            "training_in_ray_s": [t["overhead_s"] for t in training],
            "training_queued_s": [t["queued_s"] for t in training],
            "training_ray_cost_s": [t["ray_s"] for t in training],
            "all_in_ray_median_s": round(statistics.median(t["overhead_s"] for t in tasks), 3),
            "all_ray_cost_median_s": round(statistics.median(t["ray_s"] for t in tasks), 3),
            "empty_task_round_trip_ms": round(1000 * statistics.median(empty), 2),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"{'build':<8} {'wall s':>8} {'training s (sum)':>17}")
    print(f"{'local':<8} {local_wall:>8.1f} {result['local']['training_s']:>17.1f}")
    print(f"{'ray':<8} {ray_wall:>8.1f} {result['ray']['training_s']:>17.1f}")
    print(f"\n{'ray task':<44} {'node':<10} {'run s':>7} {'queued s':>9} {'Ray s':>7}")
    for t in tasks:
        print(f"{t['what'][:44]:<44} {t['node_id'][:8]:<10} {t['run_s']:>7.2f} "
              f"{t['queued_s']:>9.2f} {t['ray_s']:>7.2f}")
    print(f"\nempty task round trip: {result['per_task']['empty_task_round_trip_ms']} ms; "
          f"same artifacts: {same}; same ship: {result['same_ship']}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
