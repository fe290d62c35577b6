"""The Lambda entry point: `handler.app.lambda_handler`.

The model loads at import, in the init phase, so warm requests only run inference. The
thread count follows the function's memory size, because that is what sets its vCPUs.
"""

from __future__ import annotations

import json
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from .events import BadRequest, error, images_from_event, response
from .preprocess import NotAnImage, decode, to_batch
from .runtime import load, memory_mb, threads_for_memory, top_k

MANIFEST = "package.json"


def model_dir() -> Path:
    env = os.environ.get("OPTIMIZER_MODEL_DIR")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "model"


def _init() -> tuple[dict[str, Any], Any, int, float]:
    t0 = time.perf_counter()
    folder = model_dir()
    manifest = json.loads((folder / MANIFEST).read_text())
    threads = threads_for_memory(memory_mb(manifest["memory_mb"]), manifest["vcpu_steps"],
                                 manifest["mb_per_vcpu"])
    run = load(manifest["runtime"], folder / manifest["model"], threads)
    return manifest, run, threads, (time.perf_counter() - t0) * 1000


MANIFEST_DATA, RUN, THREADS, INIT_MS = _init()


def classify(images: list[bytes]) -> list[list[dict]]:
    m = MANIFEST_DATA
    pre = m["preprocess"]
    arrays = []
    for i, data in enumerate(images):
        try:
            arrays.append(decode(data))
        except NotAnImage as exc:
            raise BadRequest(415 if len(images) == 1 else 400, "not_an_image",
                             f"image {i}: {exc}") from None
    scores = RUN(to_batch(arrays, pre))
    return top_k(scores, m["labels"], m["top_k"], m["output"] == "logits")


def lambda_handler(event: Any, context: Any) -> dict:
    request_id = getattr(context, "aws_request_id", None)
    m = MANIFEST_DATA
    try:
        images = images_from_event(event, m["max_request_bytes"], m["max_images"])
        t0 = time.perf_counter()
        predictions = classify(images)
        return response(200, {
            "predictions": [{"top": top} for top in predictions],
            "model": {"name": m["name"], "digest": m["digest"][:12]},
            "inference_ms": round((time.perf_counter() - t0) * 1000, 3),
            "threads": THREADS,
        })
    except BadRequest as exc:
        return error(exc.status, exc.code, exc.message, request_id)
    except Exception:  # the caller gets JSON; the log gets the trace
        traceback.print_exc(file=sys.stderr)
        return error(500, "internal_error", "inference failed; see the function's log",
                     request_id)
