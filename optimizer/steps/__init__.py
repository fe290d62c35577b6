"""The one registry of steps: kind -> config class, run function, what it eats and makes.

A step is `run(model, config, ctx) -> model`; it only transforms. The build alone knows
about caching and artifacts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import Field

from optimizer.steps import export_onnx, fp16, optimize_graph, quantize, student, tflite
from optimizer.steps.base import StepConfig


@dataclass(frozen=True)
class Step:
    config: type[StepConfig]
    run: Callable
    consumes: Literal["tf", "onnx", "any"]
    produces: Literal["tf", "onnx", "tflite"]
    uses_data: bool
    # pip distributions whose versions enter this step's cache key (its own code always
    # does, with everything it imports: see codekey)
    tools: tuple[str, ...]
    # computes (and caches) what every candidate of the step shares, before they fan out
    prepare: Callable | None = None


TRAINING_TOOLS = ("tensorflow", "tensorflow-cpu", "keras", "numpy", "onnxruntime")
TF_TOOLS = ("tensorflow", "tensorflow-cpu", "keras")
ONNX_TOOLS = ("onnx", "onnxruntime")

STEPS: dict[str, Step] = {
    "swap": Step(student.SwapConfig, student.run, "any", "tf", True, TRAINING_TOOLS),
    "distill": Step(student.DistillConfig, student.run, "any", "tf", True, TRAINING_TOOLS,
                    prepare=student.prepare),
    "export_onnx": Step(export_onnx.ExportOnnxConfig, export_onnx.run, "tf", "onnx", True,
                        (*TF_TOOLS, "tf2onnx", *ONNX_TOOLS)),
    "tflite": Step(tflite.TfliteConfig, tflite.run, "tf", "tflite", True,
                   (*TF_TOOLS, "ai-edge-litert")),
    "optimize_graph": Step(optimize_graph.OptimizeGraphConfig, optimize_graph.run, "onnx",
                           "onnx", False, (*ONNX_TOOLS, "onnxslim")),
    "quantize": Step(quantize.QuantizeConfig, quantize.run, "onnx", "onnx", True, ONNX_TOOLS),
    "fp16": Step(fp16.Fp16Config, fp16.run, "onnx", "onnx", False, ONNX_TOOLS),
}

AnyStep = Annotated[
    student.SwapConfig
    | student.DistillConfig
    | export_onnx.ExportOnnxConfig
    | optimize_graph.OptimizeGraphConfig
    | quantize.QuantizeConfig
    | fp16.Fp16Config
    | tflite.TfliteConfig,
    Field(discriminator="step"),
]
