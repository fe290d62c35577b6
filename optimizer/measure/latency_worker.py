"""Child process of latency.measure: load models, time batch-1 calls in rounds, print JSON."""

from __future__ import annotations

import importlib.util
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np


def _prepare_runtimes(runtimes: set[str], threads: int) -> None:
    """Import and initialise each runtime once, so no model's load_ms carries that cost.

    ONNX Runtime builds its environment on the first session; TensorFlow fixes its thread
    pools at first use, so they are set here, before any model loads.
    """
    # under emulation only the runtimes' own wheels are there, without onnx
    if "onnxruntime" in runtimes and importlib.util.find_spec("onnx") is not None:
        from onnx import TensorProto, helper

        graph = helper.make_graph(
            [helper.make_node("Identity", ["x"], ["y"])], "warm",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
        _onnx(helper.make_model(graph).SerializeToString(), threads)
    if runtimes & {"tensorflow", "intel-tensorflow"}:
        from optimizer.quiet import import_tensorflow

        import_tensorflow()
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)


def _onnx(path: str | bytes, threads: int) -> Callable:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return lambda x: sess.run(None, {name: x})


def _tf(kind: str, path: str, signature: str, shape: tuple) -> Callable:
    import tensorflow as tf

    from optimizer.inference.tf import load_tf
    from optimizer.model import ModelRef
    from optimizer.preprocess_spec import Preprocess

    ref = ModelRef(kind=kind, path=Path(path), preprocess=Preprocess(size=(1, 1)), classes=[],
                   info={"signature": signature}, digest="-")
    fn = tf.function(load_tf(ref),
                     input_signature=(tf.TensorSpec((None, *shape[1:]), tf.float32),))
    return lambda x: fn(tf.constant(x)).numpy()


def main() -> None:
    args = json.loads(sys.argv[1])
    inputs = {name: np.load(m["input"]) for name, m in args["models"].items()}
    threads = int(args["threads"])
    rounds = max(1, int(args["rounds"]))
    per_round = max(1, int(args["runs"]) // rounds)
    calls, stats, times = {}, {}, {}
    _prepare_runtimes({m["runtime"] for m in args["models"].values()}, threads)
    for name, m in args["models"].items():
        t0 = time.perf_counter()
        if m["runtime"] == "onnxruntime":
            calls[name] = _onnx(m["path"], threads)
        elif m["runtime"] in ("litert", "openvino"):
            from optimizer.handler.engines import load

            calls[name] = load(m["runtime"], Path(m["path"]), threads)
        else:
            calls[name] = _tf(m["kind"], m["path"], m["signature"], inputs[name].shape)
        load_ms = (time.perf_counter() - t0) * 1000
        t0 = time.perf_counter()
        calls[name](inputs[name])
        stats[name] = {"load_ms": round(load_ms, 3),
                       "first_ms": round((time.perf_counter() - t0) * 1000, 3)}
        times[name] = []
    for name, call in calls.items():
        for _ in range(int(args["warmup"])):
            call(inputs[name])
    for _ in range(rounds):  # short alternating rounds: drift in machine speed hits all alike
        for name, call in calls.items():
            x = inputs[name]
            call(x)  # untimed: refill caches after the other models ran
            for _ in range(per_round):
                t0 = time.perf_counter()
                call(x)
                times[name].append((time.perf_counter() - t0) * 1000)
    try:
        from optimizer.hostinfo import peak_rss_bytes
    except ImportError:  # under emulation: no pydantic, and qemu's RSS would not be ours
        def peak_rss_bytes() -> None:
            return None

    peak = round((peak_rss_bytes() or 0) / 1024 / 1024, 1)
    for name, t in times.items():
        arr = np.asarray(t)
        stats[name].update({
            "threads": threads, "warmup": int(args["warmup"]), "rounds": rounds,
            "runs": len(t), "p50_ms": round(float(np.percentile(arr, 50)), 4),
            "p95_ms": round(float(np.percentile(arr, 95)), 4),
            "mean_ms": round(float(arr.mean()), 4), "min_ms": round(float(arr.min()), 4),
            "process_peak_rss_mb": peak,
        })
    print(json.dumps(stats))


if __name__ == "__main__":
    main()
