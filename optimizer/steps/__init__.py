"""The one registry of steps: kind -> config class, run function, what it eats and makes.

A step is `run(model, config, ctx) -> model`; it only transforms. The pipeline alone knows
about caching and artifacts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import Field

from optimizer.steps import export_onnx, fp16, optimize_graph, quantize
from optimizer.steps.base import StepConfig


@dataclass(frozen=True)
class Step:
    config: type[StepConfig]
    run: Callable
    consumes: Literal["tf", "onnx"]
    produces: Literal["onnx"]
    uses_data: bool
    module: str
    # pip distributions whose versions enter this step's cache key
    tools: tuple[str, ...]


STEPS: dict[str, Step] = {
    "export_onnx": Step(
        export_onnx.ExportOnnxConfig, export_onnx.run, "tf", "onnx", True, export_onnx.__file__,
        ("tensorflow", "tensorflow-cpu", "keras", "tf2onnx", "onnx", "onnxruntime"),
    ),
    "optimize_graph": Step(
        optimize_graph.OptimizeGraphConfig, optimize_graph.run, "onnx", "onnx", False,
        optimize_graph.__file__, ("onnx", "onnxruntime", "onnxslim"),
    ),
    "quantize": Step(
        quantize.QuantizeConfig, quantize.run, "onnx", "onnx", True, quantize.__file__,
        ("onnx", "onnxruntime"),
    ),
    "fp16": Step(
        fp16.Fp16Config, fp16.run, "onnx", "onnx", False, fp16.__file__, ("onnx", "onnxruntime"),
    ),
}

AnyStep = Annotated[
    export_onnx.ExportOnnxConfig
    | optimize_graph.OptimizeGraphConfig
    | quantize.QuantizeConfig
    | fp16.Fp16Config,
    Field(discriminator="step"),
]
