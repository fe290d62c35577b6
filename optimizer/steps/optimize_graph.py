"""Offline graph clean-up: onnxslim, then ONNX Runtime's portable optimisation levels.

Each pass runs on a copy and is kept only if the outputs still match, so a pass that breaks
a model is logged and rolled back instead of ending the build (tf2onnx's rule).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from optimizer.inference.onnx import op_counts, run_batch, session
from optimizer.model import FILE_NAMES, ModelRef
from optimizer.steps.base import StepConfig, StepContext


class OptimizeGraphConfig(StepConfig):
    step: Literal["optimize_graph"] = "optimize_graph"
    # "all" adds layout ops tied to the build machine's CPU, so it is not offered here
    level: Literal["basic", "extended"] = Field(
        default="basic",
        description="ONNX Runtime level; extended adds com.microsoft fused ops that "
        "quantization and other runtimes do not understand",
    )
    slim: bool = Field(default=True, description="run onnxslim first")
    atol: float = Field(default=1e-4, gt=0)


def _ort_pass(src: Path, dst: Path, level: str) -> None:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = {
        "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
        "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    }[level]
    opts.optimized_model_filepath = str(dst)
    ort.InferenceSession(str(src), opts, providers=["CPUExecutionProvider"])


def _slim_pass(src: Path, dst: Path) -> None:
    import onnx
    import onnxslim

    onnx.save(onnxslim.slim(onnx.load(str(src))), str(dst))


def run(model: ModelRef, config: OptimizeGraphConfig, ctx: StepContext) -> ModelRef:
    import onnx

    from optimizer.data.dataset import prepared

    x = prepared(ctx.dataset, "test", model.preprocess, limit=16)
    reference = run_batch(session(model.path), x)
    passes = ([("onnxslim", _slim_pass)] if config.slim else []) + [
        (f"onnxruntime-{config.level}", lambda s, d: _ort_pass(s, d, config.level))
    ]
    current = model.path
    log = []
    before = op_counts(onnx.load(str(current)))
    with tempfile.TemporaryDirectory(dir=ctx.out_dir) as tmp:
        for i, (name, fn) in enumerate(passes):
            candidate = Path(tmp) / f"pass{i}.onnx"
            n_before = sum(op_counts(onnx.load(str(current))).values())
            try:
                fn(current, candidate)
                diff = float(np.max(np.abs(run_batch(session(candidate), x) - reference)))
            except Exception as exc:
                log.append({"pass": name, "kept": False, "reason": str(exc).splitlines()[0]})
                ctx.progress.log(f"optimize_graph: {name} failed and was rolled back: {exc}")
                continue
            if diff > config.atol:
                log.append({"pass": name, "kept": False, "reason": f"max diff {diff:.3g}"})
                ctx.progress.log(f"optimize_graph: {name} changed outputs by {diff:.3g}; "
                                 "rolled back")
                continue
            n_after = sum(op_counts(onnx.load(str(candidate))).values())
            log.append({"pass": name, "kept": True, "nodes_before": n_before,
                        "nodes_after": n_after, "max_abs_diff": diff})
            current = candidate
        out = ctx.out_dir / FILE_NAMES["onnx"]
        out.write_bytes(Path(current).read_bytes())
    after = op_counts(onnx.load(str(out)))
    return ModelRef(
        kind="onnx", path=out, preprocess=model.preprocess, classes=model.classes,
        info={"nodes_before": sum(before.values()), "nodes_after": sum(after.values()),
              "ops_before": before, "ops_after": after, "passes": log},
    )
