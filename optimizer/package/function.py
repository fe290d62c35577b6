"""The function folder: handler code, the model, and the manifest the handler reads."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from optimizer import targets
from optimizer.model import ModelRef

HANDLER_SRC = Path(__file__).resolve().parent.parent / "handler"
HANDLER_NAME = "handler.app.lambda_handler"
MODEL_FILES = {"onnx": "model.onnx", "keras": "model.keras", "tflite": "model.tflite"}


def handler_bytes() -> int:
    """What the handler adds to every package."""
    return sum(f.stat().st_size for f in HANDLER_SRC.glob("*.py"))


def assemble(dest: Path, model: ModelRef, name: str, memory_mb: int, top_k: int,
             max_images: int, output: str, runtime: str = targets.DEFAULT_RUNTIME,
             arch: str = "x86_64", engine: str | None = None,
             answer: dict | None = None) -> dict:
    """Writes dest/handler and dest/model; returns the manifest. `engine` is the inference
    runtime (default: the one for the model's kind); `answer`, an MMS handler's answer
    shape to respond with."""
    if model.kind not in MODEL_FILES:
        raise ValueError(f"a {model.kind} model cannot be packaged; export it first")
    engine = engine or targets.default_engine(model.kind)
    if model.kind not in targets.ENGINES[engine].formats:
        raise ValueError(f"{engine} cannot run a {model.kind} model")
    (dest / "handler").mkdir(parents=True)
    for src in sorted(HANDLER_SRC.glob("*.py")):
        shutil.copyfile(src, dest / "handler" / src.name)
    (dest / "model").mkdir()
    shutil.copyfile(model.path, dest / "model" / MODEL_FILES[model.kind])
    manifest = {
        "name": name,
        "digest": model.digest,
        "model": MODEL_FILES[model.kind],
        "engine": engine,
        "preprocess": model.preprocess.model_dump(mode="json"),
        "labels": model.classes,
        "output": output,
        "top_k": top_k,
        "max_images": max_images,
        "max_request_bytes": targets.LIMITS.payload_bytes,
        "memory_mb": memory_mb,
        "lambda_runtime": runtime,
        "architecture": arch,
        "handler": HANDLER_NAME,
        "vcpu_steps": [list(s) for s in targets.VCPU_STEPS],
        "mb_per_vcpu": targets.MB_PER_VCPU,
    }
    if answer is not None:
        manifest["answer"] = answer
        manifest["top_k"] = max(top_k, answer["k"])
    (dest / "model" / "package.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
    return manifest
