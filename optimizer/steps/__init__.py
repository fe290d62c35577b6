"""The one registry of steps: kind -> config class, run function, what it eats and makes.

A step is `run(model, config, ctx) -> model`; it only transforms. The pipeline alone knows
about caching and artifacts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
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
    # source files whose contents enter this step's cache key
    modules: tuple[str, ...]
    # pip distributions whose versions enter this step's cache key
    tools: tuple[str, ...]
    # computes (and caches) what every candidate of the step shares, before they fan out
    prepare: Callable | None = None


# what decides a trained network's weights (not how many train at once)
TRAIN_CODE = tuple(str(Path(__file__).parent.parent / "train" / f) for f in (
    "augment.py", "config.py", "loop.py", "nets.py", "teacher.py"))
TRAINING_TOOLS = ("tensorflow", "tensorflow-cpu", "keras", "numpy", "onnxruntime")

STEPS: dict[str, Step] = {
    "swap": Step(
        student.SwapConfig, student.run, "any", "tf", True, (student.__file__, *TRAIN_CODE),
        TRAINING_TOOLS,
    ),
    "distill": Step(
        student.DistillConfig, student.run, "any", "tf", True, (student.__file__, *TRAIN_CODE),
        TRAINING_TOOLS, prepare=student.prepare,
    ),
    "export_onnx": Step(
        export_onnx.ExportOnnxConfig, export_onnx.run, "tf", "onnx", True,
        (export_onnx.__file__,),
        ("tensorflow", "tensorflow-cpu", "keras", "tf2onnx", "onnx", "onnxruntime"),
    ),
    "tflite": Step(
        tflite.TfliteConfig, tflite.run, "tf", "tflite", True, (tflite.__file__,),
        ("tensorflow", "tensorflow-cpu", "keras", "ai-edge-litert"),
    ),
    "optimize_graph": Step(
        optimize_graph.OptimizeGraphConfig, optimize_graph.run, "onnx", "onnx", False,
        (optimize_graph.__file__,), ("onnx", "onnxruntime", "onnxslim"),
    ),
    "quantize": Step(
        quantize.QuantizeConfig, quantize.run, "onnx", "onnx", True, (quantize.__file__,),
        ("onnx", "onnxruntime"),
    ),
    "fp16": Step(
        fp16.Fp16Config, fp16.run, "onnx", "onnx", False, (fp16.__file__,), ("onnx", "onnxruntime"),
    ),
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
