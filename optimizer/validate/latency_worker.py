"""Child process of latency.measure: load one model, time batch-1 calls, print JSON."""

from __future__ import annotations

import json
import resource
import sys
import time

import numpy as np


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def _onnx(path: str, threads: int):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return lambda x: sess.run(None, {name: x})


def _tf(kind: str, path: str, signature: str, threads: int, shape: tuple):
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    from pathlib import Path

    from optimizer.model import ModelRef
    from optimizer.preprocess import Preprocess
    from optimizer.sources.tf_models import load_tf

    ref = ModelRef(kind=kind, path=Path(path), preprocess=Preprocess(size=(1, 1)), classes=[],
                   info={"signature": signature}, digest="-")
    fn = tf.function(load_tf(ref),
                     input_signature=(tf.TensorSpec((None, *shape[1:]), tf.float32),))
    return lambda x: fn(tf.constant(x)).numpy()


def main() -> None:
    args = json.loads(sys.argv[1])
    x = np.load(args["input"])
    threads = int(args["threads"])
    t0 = time.perf_counter()
    if args["kind"] == "onnx":
        call = _onnx(args["path"], threads)
    else:
        call = _tf(args["kind"], args["path"], args["signature"], threads, x.shape)
    load_ms = (time.perf_counter() - t0) * 1000
    t0 = time.perf_counter()
    call(x)
    first_ms = (time.perf_counter() - t0) * 1000
    for _ in range(int(args["warmup"])):
        call(x)
    times = []
    for _ in range(int(args["runs"])):
        t0 = time.perf_counter()
        call(x)
        times.append((time.perf_counter() - t0) * 1000)
    print(json.dumps({
        "threads": threads,
        "warmup": int(args["warmup"]),
        "runs": len(times),
        "load_ms": round(load_ms, 3),
        "first_ms": round(first_ms, 3),
        "p50_ms": round(_percentile(times, 50), 4),
        "p95_ms": round(_percentile(times, 95), 4),
        "mean_ms": round(float(np.mean(times)), 4),
        "min_ms": round(min(times), 4),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }))


if __name__ == "__main__":
    main()
