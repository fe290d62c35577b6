"""How long a model takes to load, from its .onnx and from its .ort file: cold start."""

from __future__ import annotations

import statistics
import time
from pathlib import Path


def load_times(onnx_path: Path, ort_path: Path, rounds: int = 7) -> dict[str, float]:
    """Median session creation time of each file, alternating so drift hits both alike."""
    from optimizer.inference.onnx import session

    def once(path: Path) -> float:
        t = time.perf_counter()
        session(path, threads=1)
        return (time.perf_counter() - t) * 1000

    once(onnx_path), once(ort_path)  # warm the file cache and ORT's one-time setup
    onnx_ms, ort_ms = [], []
    for _ in range(rounds):
        onnx_ms.append(once(onnx_path))
        ort_ms.append(once(ort_path))
    return {"load_ms_onnx": round(statistics.median(onnx_ms), 2),
            "load_ms_ort": round(statistics.median(ort_ms), 2)}
