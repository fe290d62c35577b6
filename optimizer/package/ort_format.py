"""ONNX Runtime's own format: the `.ort` model and the operators a minimal runtime needs.

A user who builds ONNX Runtime from source with `--minimal_build --include_ops_by_config
required_operators.config` gets a runtime with only these kernels, a fraction of the
wheel's size, that loads `.ort` files without parsing protobuf. We write both for every
ONNX artifact and time session creation from each file, since load time is cold start.

The NCHWc layout pass is left out on purpose: it bakes the build host's vector width into
the graph (8 floats on AVX2, 16 on AVX-512), which would tie the file to the build machine.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

ORT_FILE = "model.ort"
CONFIG_FILE = "required_operators.config"


def convert(onnx_path: Path, folder: Path) -> dict[str, Any]:
    import onnxruntime as ort
    from onnxruntime.tools.ort_format_model import create_config_from_models

    out = folder / ORT_FILE
    fp16 = _mostly_fp16(onnx_path)
    so = ort.SessionOptions()
    # the CPU kernels are fp32: at the extended levels ORT keeps an fp32 copy of every fp16
    # weight it casts, doubling the file; basic level keeps the weights as shipped
    so.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_BASIC if fp16
                                   else ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
    so.optimized_model_filepath = str(out)
    so.add_session_config_entry("session.save_model_format", "ORT")
    so.log_severity_level = 3
    ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"],
                         disabled_optimizers=["NchwcTransformer"])
    logging.getLogger("ort_format_model.utils").setLevel(logging.WARNING)
    create_config_from_models([out], folder / CONFIG_FILE, False)
    ops = [ln for ln in (folder / CONFIG_FILE).read_text().splitlines()
           if ln.strip() and not ln.startswith("#")]
    # its header names our temporary path; keep the file the same from build to build
    (folder / CONFIG_FILE).write_text("# operators of the .ort model beside this file\n"
                                      + "\n".join(ops) + "\n")
    return {"bytes": out.stat().st_size, "operators": _count(ops),
            "optimization": "basic (fp16 weights kept as fp16)" if fp16 else "all but NCHWc"}


def _mostly_fp16(path: Path) -> bool:
    import onnx
    from onnx import TensorProto

    model = onnx.load(str(path), load_external_data=False)
    size = {TensorProto.FLOAT16: 0, TensorProto.FLOAT: 0}
    for t in model.graph.initializer:
        if t.data_type in size:
            size[t.data_type] += len(t.raw_data) or (len(t.int32_data) * 2 if
                                                     t.data_type == TensorProto.FLOAT16
                                                     else len(t.float_data) * 4)
    return size[TensorProto.FLOAT16] > size[TensorProto.FLOAT]


def _count(lines: list[str]) -> int:
    """Lines are `domain;opset;Op1,Op2,...`."""
    return sum(len(line.split(";")[-1].split(",")) for line in lines)
