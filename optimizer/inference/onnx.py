"""Small ONNX helpers shared by the ONNX-to-ONNX steps."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from optimizer.errors import BadInput


def op_counts(model) -> dict[str, int]:
    return dict(sorted(Counter(n.op_type for n in model.graph.node).items()))


def session(path: Path | bytes, threads: int = 0):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.log_severity_level = 3
    src = path if isinstance(path, bytes) else str(path)
    try:
        return ort.InferenceSession(src, opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # ORT raises its own types; the user needs one line
        text = str(exc).strip()
        where = "the model" if isinstance(path, bytes) else str(path)
        raise BadInput(f"{where}: ONNX Runtime cannot load it: "
                       f"{text.splitlines()[0][:400] if text else type(exc).__name__}") from None


def opset(model) -> int:
    return max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")),
               default=0)


def run_batch(sess, x: np.ndarray, batch: int = 64) -> np.ndarray:
    name = sess.get_inputs()[0].name
    outs = [sess.run(None, {name: x[i : i + batch]})[0] for i in range(0, len(x), batch)]
    return np.concatenate(outs).astype(np.float32)
