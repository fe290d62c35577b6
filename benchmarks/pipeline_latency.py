"""Batch-1 latency of a recipe's source Keras model (TensorFlow) against its built artifacts.

All models are timed in one process, at the same intra-op thread count, in short alternating
rounds (optimizer.measure.latency), so the ratios hold even on a machine whose speed drifts.
Targets from issue 3: the shipped artifact at most 0.5x TensorFlow; each int8 model against the
fp32 model it was quantized from (on an AVX-512 host int8 looks faster than on AVX2 Lambda).

`--sweep` adds untrained MobileNetV2 variants at several widths and input sizes, exported,
optimized and int8-quantized by the same steps, to show where int8 starts to pay on this CPU.

    python benchmarks/pipeline_latency.py [--recipe R] [--threads 1,2] [--runs 500] [--sweep]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from rich.console import Console
from rich.table import Table

from optimizer import hostinfo, targets
from optimizer.build.run import build
from optimizer.cache import Cache, default_root
from optimizer.data.dataset import prepared
from optimizer.data.load import load_dataset
from optimizer.measure.latency import measure
from optimizer.model import ModelRef
from optimizer.preprocess_spec import Preprocess
from optimizer.progress import Progress
from optimizer.recipe.load import load_recipe
from optimizer.recipe.schema import ArchitectureSource
from optimizer.steps import STEPS
from optimizer.steps.base import StepContext

SWEEP = "0.35x64,0.35x96,0.5x96,0.75x96,1.0x96,1.0x128"
console = Console()


def recipe_models(recipe_path: Path, progress: Progress):
    recipe = load_recipe(recipe_path)
    result = build(recipe, recipe_path, None, Cache(default_root()), progress)
    report = result.report
    pre = Preprocess.model_validate_json((result.out_dir / "preprocess.json").read_text())
    by_name = {a["name"]: a for a in report["artifacts"]}

    def input_size(a: dict) -> int | None:
        """From the nearest ancestor that trained a network (students have their own)."""
        while a is not None and "input_size" not in a["info"]:
            a = by_name.get(a["parent"])
        return a["info"]["input_size"] if a is not None else None

    models = {}
    for a in report["artifacts"]:
        path = result.out_dir / a["file"] if a["file"] else Path(a["path"])
        label = "tensorflow" if a["name"] == "source" else a["name"]
        size = input_size(a)
        models[label] = ModelRef(kind=a["kind"], path=path, classes=[], digest="-",
                                 info=a["info"], preprocess=pre if size is None else
                                 pre.model_copy(update={"size": (size, size)}))
    return recipe, report, models


def sweep(recipe, dataset, sizes: str, threads: int, runs: int, progress: Progress) -> list[dict]:
    from optimizer.sources.architecture import build as build_net

    rows = []
    quantize_cfg = next((s for s in recipe.steps if s.step == "quantize"), None)
    for item in sizes.split(","):
        alpha, size = float(item.split("x")[0]), int(item.split("x")[1])
        with tempfile.TemporaryDirectory() as tmp:
            src_cfg = ArchitectureSource(kind="architecture", architecture="MobileNetV2",
                                         alpha=alpha, input_size=size)
            net = build_net(src_cfg, len(dataset.classes))
            keras_path = Path(tmp) / "model.keras"
            net.save(keras_path)
            model = ModelRef(kind="keras", path=keras_path,
                             preprocess=Preprocess(size=(size, size)), classes=dataset.classes)
            made = {}
            for kind, cfg in (("export_onnx", {"atol": 1e-3}), ("optimize_graph", {}),
                              ("quantize", quantize_cfg.model_dump(exclude={"name", "input"})
                               if quantize_cfg else {})):
                out = Path(tmp) / kind
                out.mkdir()
                ctx = StepContext(out_dir=out, target=recipe.target.name, dataset=dataset,
                                  progress=progress)
                cfg = {k: v for k, v in cfg.items() if k != "step"}
                model = STEPS[kind].run(model, STEPS[kind].config(step=kind, **cfg), ctx)
                made[kind] = model
            x = prepared(dataset, "test", model.preprocess, limit=1)
            stats = measure({"fp32": made["optimize_graph"], "int8": made["quantize"]}, x,
                            threads, 10, runs, targets.TARGETS[recipe.target.name].isa)
            ratio = stats["int8"]["p50_ms"] / stats["fp32"]["p50_ms"]
            rows.append({"alpha": alpha, "input_size": size, "threads": threads,
                         "fp32_p50_ms": stats["fp32"]["p50_ms"],
                         "int8_p50_ms": stats["int8"]["p50_ms"], "int8_over_fp32": round(ratio, 3)})
            console.print(f"sweep MobileNetV2 a{alpha} {size}px: fp32 "
                          f"{stats['fp32']['p50_ms']:.3f} ms, int8 {stats['int8']['p50_ms']:.3f} ms"
                          f" ({ratio:.2f}x)")
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", type=Path, default=Path("recipes/mobilenet-lambda.yaml"))
    ap.add_argument("--threads", default="1")
    ap.add_argument("--runs", type=int, default=500)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--sweep", nargs="?", const=SWEEP, default=None,
                    help=f"int8 vs fp32 over MobileNetV2 ALPHAxSIZE list [default: {SWEEP}]")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/pipeline_latency.json"))
    args = ap.parse_args()

    progress = Progress()
    recipe, report, models = recipe_models(args.recipe, progress)
    dataset = load_dataset(recipe.dataset)
    shapes: dict[tuple, object] = {}
    for m in models.values():  # one test image at each model's own input size
        key = tuple(m.preprocess.size)
        if key not in shapes:
            shapes[key] = prepared(dataset, "test", m.preprocess, limit=1)
    x = {name: shapes[tuple(m.preprocess.size)] for name, m in models.items()}
    ship = report["ship"]
    results = []
    for threads in [int(t) for t in args.threads.split(",")]:
        t0 = time.perf_counter()
        stats = measure(models, x, threads, args.warmup, args.runs,
                        targets.TARGETS[recipe.target.name].isa)
        tf_p50 = stats["tensorflow"]["p50_ms"]
        rows = [{"model": name, "kind": models[name].kind, "shipped": name == ship,
                 **{k: v for k, v in s.items() if k.endswith("_ms") or k in ("runs", "rounds")},
                 "over_tensorflow": round(s["p50_ms"] / tf_p50, 4)}
                for name, s in stats.items()]
        checks = {}
        if ship:
            checks["shipped_at_most_0.5x_tensorflow"] = stats[ship]["p50_ms"] <= 0.5 * tf_p50
        for a in report["artifacts"]:
            if a["step"] == "quantize" and a["name"] in stats:
                # against the fp32 model it was quantized from, not an unoptimized export
                parent = "tensorflow" if a["parent"] == "source" else a["parent"]
                ratio = stats[a["name"]]["p50_ms"] / stats[parent]["p50_ms"]
                checks[f"{a['name']}_over_{parent}"] = round(ratio, 3)
        results.append({"threads": threads, "seconds": round(time.perf_counter() - t0, 1),
                        "rows": rows, "targets": checks})
        table = Table(title=f"{recipe.name}: batch 1, {threads} thread(s), "
                      f"{hostinfo.cpu()['model']}")
        for col in ("model", "p50 ms", "p95 ms", "load ms", "vs TensorFlow"):
            table.add_column(col, justify="left" if col == "model" else "right")
        for r in rows:
            table.add_row(r["model"] + (" (shipped)" if r["shipped"] else ""),
                          f"{r['p50_ms']:.3f}", f"{r['p95_ms']:.3f}", f"{r['load_ms']:.1f}",
                          f"{r['over_tensorflow']:.3f}x")
        console.print(table)
        console.print(f"targets: {checks}")
    doc = {
        "benchmark": "pipeline_latency", "recipe": str(args.recipe),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": hostinfo.cpu(), "libraries": hostinfo.library_versions(),
        "target": report["target"], "ship": ship, "results": results,
        "cache": {k: report["cache"][k] for k in ("hits", "misses", "all_cached")},
    }
    if args.sweep:
        doc["int8_sweep"] = sweep(recipe, dataset, args.sweep, int(args.threads.split(",")[0]),
                                  min(args.runs, 300), progress)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    console.print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
