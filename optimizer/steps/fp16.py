"""float16 weights and compute, float32 at the edges so callers never see the change.

On CPUs without native fp16 arithmetic ONNX Runtime inserts casts around ops it lacks fp16
kernels for, and those casts can make fp16 slower than fp32; validation measures it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from optimizer.errors import StepFailed
from optimizer.inference.onnx import op_counts
from optimizer.model import FILE_NAMES, ModelRef
from optimizer.steps.base import StepConfig, StepContext


class Fp16Config(StepConfig):
    step: Literal["fp16"] = "fp16"
    keep_io_types: bool = Field(default=True, description="float32 inputs and outputs")
    op_block_list: list[str] = Field(
        default_factory=list, description="op types kept in float32 (added to the defaults)"
    )
    insist: bool = Field(
        default=False, description="let it ship on a target without fp16 arithmetic (x86_64: "
        "F16C only converts, so every op widens to fp32 and back)")


def run(model: ModelRef, config: Fp16Config, ctx: StepContext) -> ModelRef:
    import onnx
    from onnxruntime.transformers import float16

    blocked = sorted(set(float16.DEFAULT_OP_BLOCK_LIST) | set(config.op_block_list))
    try:
        converted = float16.convert_float_to_float16(
            onnx.load(str(model.path)), keep_io_types=config.keep_io_types,
            op_block_list=blocked,
        )
    except Exception as exc:
        raise StepFailed(config.name or config.step, f"float16 conversion failed: {exc}") from exc
    out = ctx.out_dir / FILE_NAMES["onnx"]
    onnx.save(converted, str(out))
    return ModelRef(
        kind="onnx", path=out, preprocess=model.preprocess, classes=model.classes,
        info={"keep_io_types": config.keep_io_types, "op_block_list": config.op_block_list,
              "ops": op_counts(converted)},
    )
