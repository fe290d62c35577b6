"""Every runtime candidate on the mobilenet student, batch 1, one thread, in one run.

    python benchmarks/runtimes.py [--rounds 30] [--per-round 20]

Candidates: ONNX Runtime on the build's fp32, fp32-opt and int8 ONNX files; LiteRT
(ai-edge-litert, XNNPACK) on the build's fp32 and full-integer int8 `.tflite` files;
OpenVINO on the fp32 and int8 ONNX files (f32 precision forced, so a host with bf16 cannot
quietly change the arithmetic); TensorFlow on the Keras file, with oneDNN capped to AVX2.
Every runtime but TensorFlow is loaded by the packaged handler's own loader. All run in
this process in alternating rounds, so their ratios hold on a machine whose speed drifts.
Each is also scored on the test split, so a fast wrong conversion shows. The compute bound
is the fp32 model's FLOPs over this core's peak fp32 FLOP/s (2 FMA pipes x 8 lanes x 2 at
the clock /proc/cpuinfo reports for AVX2 hosts).

Builds recipes/mobilenet-lambda.yaml if its artifacts are missing. Writes
benchmarks/results/runtimes.json and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX2")  # before TensorFlow loads: Lambda's ISA
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np

from optimizer import hostinfo
from optimizer.data.dataset import prepared
from optimizer.data.load import load_dataset
from optimizer.preprocess_spec import Preprocess
from optimizer.recipe.load import load_recipe

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes/mobilenet-lambda.yaml"
ART = ROOT / "artifacts/mobilenet-lambda"
OUT = ROOT / "benchmarks/results/runtimes.json"
STUDENT = "MobileNetV2-a0.35-r32"


def flops(onnx_path: Path) -> int:
    """Multiply-adds x 2 of Conv and Gemm/MatMul nodes, from inferred shapes at batch 1."""
    import onnx
    from onnx import shape_inference

    model = onnx.load(str(onnx_path))
    inp = model.graph.input[0].type.tensor_type.shape.dim
    if inp[0].dim_param or not inp[0].dim_value:
        inp[0].dim_value = 1
    model = shape_inference.infer_shapes(model)
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in [*model.graph.value_info, *model.graph.output, *model.graph.input]}
    inits = {i.name: list(i.dims) for i in model.graph.initializer}
    total = 0
    for node in model.graph.node:
        if node.op_type == "Conv":
            w = inits[node.input[1]]  # Cout, Cin/group, kh, kw
            out = shapes[node.output[0]]
            total += 2 * int(np.prod(out)) * int(np.prod(w[1:]))
        elif node.op_type in ("Gemm", "MatMul"):
            w = inits.get(node.input[1]) or shapes[node.input[1]]
            total += 2 * int(np.prod(shapes[node.output[0]])) * w[0 if node.op_type == "MatMul"
                                                                 else -1]
    return total


def peak_gflops() -> dict:
    mhz = max(float(m) for m in re.findall(r"cpu MHz\s*:\s*([\d.]+)",
                                          Path("/proc/cpuinfo").read_text()))
    flags = set(hostinfo.cpu()["flags"])
    lanes = 8 if {"avx2", "fma"} <= flags else 4
    per_cycle = 2 * lanes * 2  # two FMA pipes, each lane a multiply and an add
    return {"mhz": mhz, "flop_per_cycle": per_cycle, "gflops": round(mhz * per_cycle / 1e3, 1),
            "assumes": "2 FMA pipes of 256 bits (8 fp32 lanes) at the reported clock; "
                       "AVX-512 is not counted because Lambda does not promise it"}


def runner(runtime: str, path: Path) -> Callable:
    """The shipped handler's own loader, so the benchmark times what a package runs."""
    from optimizer.handler.engines import load

    return load(runtime, path, threads=1)


def tf_runner(keras_path: Path) -> Callable:
    import tensorflow as tf

    model = tf.keras.models.load_model(str(keras_path), compile=False)
    fn = tf.function(lambda x: model(x, training=False))
    return lambda x: fn(x).numpy()


def time_all(runners: dict[str, Callable], x: np.ndarray, rounds: int, per: int) -> dict:
    times: dict[str, list[float]] = {k: [] for k in runners}
    for run in runners.values():
        for _ in range(10):
            run(x)
    for _ in range(rounds):
        for k, run in runners.items():
            for _ in range(per):
                t = time.perf_counter()
                run(x)
                times[k].append((time.perf_counter() - t) * 1000)
    return {k: {"p50_ms": round(statistics.median(v), 4),
                "p95_ms": round(float(np.percentile(v, 95)), 4), "runs": len(v)}
            for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=30)
    ap.add_argument("--per-round", type=int, default=20)
    args = ap.parse_args()
    import tensorflow as tf

    # one thread for TensorFlow too, before anything initialises its runtime
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    if not (ART / f"tflite-int8@{STUDENT}.tflite").is_file():
        subprocess.run([sys.executable, "-m", "optimizer", "build", str(RECIPE)], check=True)
    recipe = load_recipe(RECIPE)
    ds = load_dataset(recipe.dataset)
    pre = Preprocess.model_validate(json.loads((ART / "preprocess.json").read_text()))
    x_test = prepared(ds, "test", pre)
    y_test = ds.labels_of("test")
    keras_path = ART / f"student@{STUDENT}.keras"
    runners = {
        "onnxruntime fp32": runner("onnxruntime", ART / f"fp32@{STUDENT}.onnx"),
        "onnxruntime fp32-opt": runner("onnxruntime", ART / f"fp32-opt@{STUDENT}.onnx"),
        "onnxruntime int8 (QDQ)": runner("onnxruntime", ART / f"int8@{STUDENT}.onnx"),
        "litert fp32 (XNNPACK)": runner("litert", ART / f"tflite@{STUDENT}.tflite"),
        "litert int8 (XNNPACK)": runner("litert", ART / f"tflite-int8@{STUDENT}.tflite"),
        "openvino fp32": runner("openvino", ART / f"fp32@{STUDENT}.onnx"),
        "openvino int8 (QDQ)": runner("openvino", ART / f"int8@{STUDENT}.onnx"),
        "tensorflow (Keras, oneDNN <= AVX2)": tf_runner(keras_path),
    }
    accuracy = {k: round(100 * float(np.mean(
        [int(np.argmax(run(x_test[i:i + 1]))) == y for i, y in enumerate(y_test)])), 2)
        for k, run in runners.items()}
    timing = time_all(runners, x_test[:1], args.rounds, args.per_round)
    work = flops(ART / f"fp32@{STUDENT}.onnx")
    peak = peak_gflops()
    bound_ms = work / (peak["gflops"] * 1e9) * 1000
    import ai_edge_litert
    import onnxruntime
    import openvino
    import tensorflow as tf
    rows = {k: {**timing[k], "accuracy": accuracy[k],
                "x_compute_bound": round(timing[k]["p50_ms"] / bound_ms, 1)} for k in runners}
    doc = {"host": hostinfo.cpu(), "student": STUDENT, "batch": 1, "threads": 1,
           "flops": work, "peak": peak, "compute_bound_ms": round(bound_ms, 4),
           "versions": {"onnxruntime": onnxruntime.__version__,
                        "ai-edge-litert": getattr(ai_edge_litert, "__version__", "?"),
                        "openvino": openvino.__version__.split("-")[0],
                        "tensorflow": tf.__version__},
           "tflite_bytes": {k: (ART / f"{k}@{STUDENT}.tflite").stat().st_size
                            for k in ("tflite", "tflite-int8")},
           "rows": rows, "test_images": len(y_test)}
    OUT.write_text(json.dumps(doc, indent=1))
    print(f"{STUDENT}: {work / 1e6:.1f} MFLOP; peak {peak['gflops']} GFLOP/s fp32 -> "
          f"compute bound {bound_ms:.4f} ms")
    print(f"{'runtime':<36} {'p50 ms':>8} {'p95 ms':>8} {'x bound':>8} {'acc %':>7}")
    for k, r in sorted(rows.items(), key=lambda kv: kv[1]["p50_ms"]):
        print(f"{k:<36} {r['p50_ms']:>8} {r['p95_ms']:>8} {r['x_compute_bound']:>8} "
              f"{r['accuracy']:>7}")
    print(f"wrote {OUT.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
