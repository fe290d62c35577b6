"""Batch-1 latency in a fresh subprocess per model.

A subprocess per measurement because TensorFlow fixes its thread pools at first use, because
oneDNN's ISA cap is an environment variable read at load, and so one model's warm caches
and allocator state never flatter the next.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from optimizer import hostinfo
from optimizer.errors import OptimizerError
from optimizer.model import ModelRef

ONEDNN_CAP = {"avx2": "AVX2", "avx512_vnni": "AVX512_CORE_VNNI"}


def isa_env(target_isa: str) -> dict[str, str]:
    cap = ONEDNN_CAP.get(target_isa)
    return {"ONEDNN_MAX_CPU_ISA": cap} if cap else {}


def cap_note(kind: str, target: str) -> str:
    vs = hostinfo.versus_target(target)
    if not vs["host_extra_flags"]:
        return "none needed: host has no extensions beyond the target"
    if kind == "onnx":
        return ("not capped: ONNX Runtime picks kernels by CPUID; host extras "
                f"{vs['host_extra_flags']} may make this faster than on the target")
    return f"oneDNN max ISA {ONEDNN_CAP.get(vs['target_isa'], 'unset')}"


def measure(model: ModelRef, sample: np.ndarray, threads: int, warmup: int, runs: int,
            target_isa: str, timeout: float = 900.0) -> dict:
    with tempfile.TemporaryDirectory(prefix="optimizer-lat-") as tmp:
        inp = Path(tmp) / "x.npy"
        np.save(inp, sample.astype(np.float32))
        args = {"kind": model.kind, "path": str(model.path), "input": str(inp),
                "threads": threads, "warmup": warmup, "runs": runs,
                "signature": model.info.get("signature", "serving_default")}
        env = {**os.environ, **isa_env(target_isa), "OMP_NUM_THREADS": str(threads),
               "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONHASHSEED": "0"}
        proc = subprocess.run(
            [sys.executable, "-m", "optimizer.validate.latency_worker", json.dumps(args)],
            capture_output=True, text=True, env=env, timeout=timeout, check=False,
        )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise OptimizerError(f"latency measurement of {model.path} failed: {tail}")
    return json.loads(lines[-1])
