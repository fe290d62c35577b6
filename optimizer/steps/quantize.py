"""int8 quantization with ONNX Runtime, with formats chosen for the target's instruction set.

ONNX Runtime's docs: on x86-64 without VNNI the u8 x s8 kernels use VPMADDUBSW, whose 16-bit
intermediate sums can saturate; 7-bit weights (reduce_range) avoid that at a small accuracy
cost. VNNI (VPDPBUSD) and arm64 dotprod accumulate in 32 bits, so full-range weights are
safe there. Dynamic quantization of convolutions (ConvInteger) is often far slower than
fp32 on CPUs, which is why static QDQ is the default and why every result gets measured.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field

from optimizer import targets
from optimizer.errors import BadInput, StepFailed
from optimizer.inference.onnx import op_counts, opset, session
from optimizer.model import FILE_NAMES, ModelRef
from optimizer.steps.base import StepConfig, StepContext

Auto = Literal["auto"]


class QuantizeConfig(StepConfig):
    step: Literal["quantize"] = "quantize"
    mode: Literal["static", "dynamic"] = "static"
    format: Literal["qdq", "qoperator"] = "qdq"
    per_channel: bool = True
    calibration: Literal["minmax", "entropy", "percentile"] = "minmax"
    calibration_samples: int = Field(default=200, ge=1, le=100_000)
    activation_type: Auto | Literal["uint8", "int8"] = "auto"
    weight_type: Auto | Literal["int8", "uint8"] = "auto"
    reduce_range: Auto | bool = "auto"
    op_types: list[str] | None = Field(default=None, description="only these op types")
    nodes_to_exclude: list[str] = Field(default_factory=list)
    shape_preprocess: bool = Field(
        default=True, description="ONNX Runtime's quant_pre_process (shape inference) first"
    )


def isa_choice(config: QuantizeConfig, target: str) -> dict:
    """Resolve the 'auto' settings for a target and say why."""
    t = targets.TARGETS[target]
    no_vnni = t.arch == "x86_64" and "avx512_vnni" not in t.flags
    why = []
    act = config.activation_type
    if act == "auto":
        act = "uint8"
        why.append("uint8 activations x int8 weights is ONNX Runtime's fast CPU path")
    wt = config.weight_type
    if wt == "auto":
        wt = "int8"
    rr = config.reduce_range
    if rr == "auto":
        rr = no_vnni and wt == "int8" and act == "uint8"
        why.append(
            f"reduce_range={rr}: target {t.name} ({t.isa}) "
            + ("has no VNNI, so 7-bit weights avoid VPMADDUBSW saturation"
               if rr else "accumulates int8 products in 32 bits, full range is safe")
        )
    return {"activation_type": act, "weight_type": wt, "reduce_range": bool(rr), "why": why}


def _at_least_opset_13(path: Path, dest: Path, step: str, why: list[str]) -> Path:
    """Per-channel QDQ needs DequantizeLinear's `axis` (opset 13); models exported by older
    converters (PaddlePaddle, early tf2onnx) are on 10 or 11, and ORT's quantizer writes
    the attribute anyway, giving a model nothing can load."""
    import onnx
    from onnx import version_converter

    model = onnx.load(str(path))
    have = opset(model)
    if have >= 13:
        return path
    try:
        onnx.save(version_converter.convert_version(model, 13), str(dest))
    except Exception as exc:
        raise StepFailed(step, f"the model is on opset {have}; quantizing needs 13, and the "
                         f"ONNX version converter failed: {str(exc).splitlines()[0][:300]}; "
                         "re-export it with opset 13 or newer") from None
    why.append(f"opset upgraded from {have} to 13 for per-channel QDQ")
    return dest


class _Reader:
    """Feeds calibration batches; ONNX Runtime's CalibrationDataReader protocol."""

    def __init__(self, input_name: str, x: np.ndarray, batch: int = 16) -> None:
        self._data = [{input_name: x[i : i + batch]} for i in range(0, len(x), batch)]
        self._batches = iter(self._data)

    def get_next(self):
        return next(self._batches, None)

    def rewind(self) -> None:
        self._batches = iter(self._data)


def run(model: ModelRef, config: QuantizeConfig, ctx: StepContext) -> ModelRef:
    import onnx
    from onnxruntime import quantization as q

    from optimizer.data.dataset import prepared

    choice = isa_choice(config, ctx.target)
    qtype = {"uint8": q.QuantType.QUInt8, "int8": q.QuantType.QInt8}
    name = config.name or config.step
    src = _at_least_opset_13(model.path, ctx.out_dir / "upgraded.onnx", name, choice["why"])
    if config.shape_preprocess:
        pre = ctx.out_dir / "pre.onnx"
        try:
            q.quant_pre_process(str(src), str(pre), skip_symbolic_shape=False)
            src = pre
        except Exception as exc:
            ctx.progress.log(f"quantize: shape pre-processing skipped ({exc})")
    out = ctx.out_dir / FILE_NAMES["onnx"]
    try:
        if config.mode == "dynamic":
            q.quantize_dynamic(
                str(src), str(out), per_channel=config.per_channel,
                reduce_range=choice["reduce_range"], weight_type=qtype[choice["weight_type"]],
                op_types_to_quantize=config.op_types, nodes_to_exclude=config.nodes_to_exclude,
            )
        else:
            x = prepared(ctx.dataset, "train", model.preprocess, limit=config.calibration_samples)
            input_name = onnx.load(str(src), load_external_data=False).graph.input[0].name
            method = {
                "minmax": q.CalibrationMethod.MinMax,
                "entropy": q.CalibrationMethod.Entropy,
                "percentile": q.CalibrationMethod.Percentile,
            }[config.calibration]
            q.quantize_static(
                str(src), str(out), _Reader(input_name, x),
                quant_format=q.QuantFormat.QDQ if config.format == "qdq"
                else q.QuantFormat.QOperator,
                per_channel=config.per_channel, reduce_range=choice["reduce_range"],
                activation_type=qtype[choice["activation_type"]],
                weight_type=qtype[choice["weight_type"]],
                calibrate_method=method, op_types_to_quantize=config.op_types,
                nodes_to_exclude=config.nodes_to_exclude,
            )
    except Exception as exc:
        raise StepFailed(name, f"ONNX Runtime quantization failed: {exc}") from exc
    finally:
        for tmp in ("pre.onnx", "upgraded.onnx"):
            (ctx.out_dir / tmp).unlink(missing_ok=True)
    try:
        session(out)
    except BadInput as exc:  # a quantizer bug must not surface as a model that cannot load
        raise StepFailed(name, f"the quantized model does not load: {exc}") from None
    ops = op_counts(onnx.load(str(out)))
    return ModelRef(
        kind="onnx", path=out, preprocess=model.preprocess, classes=model.classes,
        info={"mode": config.mode, "format": config.format, "per_channel": config.per_channel,
              "calibration": config.calibration if config.mode == "static" else None,
              **choice, "ops": ops},
    )
