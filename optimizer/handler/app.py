"""The Lambda entry point: `handler.app.lambda_handler`.

The model loads and runs once at import, in the init phase, so the first request costs what
a warm one does. The thread count follows the function's memory size, because that is what
sets its vCPUs. Init is timed part by part and logged as one `OPTIMIZER_INIT {json}` line
(CloudWatch keeps it; the local Lambda reads it) so a slow cold start says where it went.
"""

from __future__ import annotations

import time

_T0 = time.perf_counter()

import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import traceback  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402


def _since_process_start_ms() -> float | None:
    """Interpreter and runtime client start: from exec to here (10 ms resolution)."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return max(0.0, (uptime - start_ticks / os.sysconf("SC_CLK_TCK")) * 1000)
    except (OSError, ValueError, IndexError):
        return None


class _Marks:
    def __init__(self) -> None:
        self.parts: dict[str, float | None] = {"runtime_start_ms": _since_process_start_ms()}
        self.t = _T0

    def __call__(self, part: str) -> None:
        now = time.perf_counter()
        self.parts[f"{part}_ms"] = round((now - self.t) * 1000, 2)
        self.t = now


_mark = _Marks()
import numpy  # noqa: E402, F401

_mark("numpy")
from PIL import Image  # noqa: E402

from . import bulk  # noqa: E402
from .events import BadRequest, error, images_from_event, response, shaped  # noqa: E402
from .pixels import NotAnImage, decode, to_batch  # noqa: E402

_mark("image_library")
from .engines import import_engine, load, memory_mb, threads_for_memory, top_k  # noqa: E402

MANIFEST = "package.json"


def model_dir() -> Path:
    env = os.environ.get("OPTIMIZER_MODEL_DIR")
    return Path(env) if env else Path(__file__).resolve().parent.parent / "model"


def _warm_images(pre: dict[str, Any]) -> list[bytes]:
    """A PNG and a JPEG of the model's size: the first request would otherwise pay for the
    decoders' lazy imports and the runtime's first-run allocations."""
    import io

    h, w = pre["size"]
    out = []
    for fmt in ("PNG", "JPEG"):
        buf = io.BytesIO()
        Image.new("RGB", (int(w), int(h)), (128, 128, 128)).save(buf, format=fmt)
        out.append(buf.getvalue())
    return out


def _threads(m: dict[str, Any]) -> int:
    return threads_for_memory(memory_mb(m["memory_mb"]), m["vcpu_steps"], m["mb_per_vcpu"])


def _init() -> tuple[dict[str, Any], Any, int]:
    folder = model_dir()
    manifest = json.loads((folder / MANIFEST).read_text())
    threads = _threads(manifest)
    import_engine(manifest["engine"])
    _mark("runtime_import")
    run = load(manifest["engine"], folder / manifest["model"], threads)
    _mark("model_load")
    return manifest, run, threads


MANIFEST_DATA, RUN, THREADS = _init()


def classify(images: list[bytes]) -> list[list[dict]]:
    arrays = []
    for i, data in enumerate(images):
        try:
            arrays.append(decode(data))
        except NotAnImage as exc:
            raise BadRequest(415 if len(images) == 1 else 400, "not_an_image",
                             f"image {i}: {exc}") from None
    return _infer(arrays)


def _warm_up() -> None:
    arrays = [decode(data) for data in _warm_images(MANIFEST_DATA["preprocess"])]
    RUN(to_batch(arrays[:1], MANIFEST_DATA["preprocess"]))


_warm_up()
_mark("warmup")
INIT_MS = (time.perf_counter() - _T0) * 1000
INIT_BREAKDOWN = {**_mark.parts, "handler_ms": round(INIT_MS, 2)}
print("OPTIMIZER_INIT " + json.dumps(INIT_BREAKDOWN), flush=True)


def before_snapshot() -> None:
    """SnapStart: the snapshot is taken after this, so the model is in it loaded and run."""
    t0 = time.perf_counter()
    _warm_up()
    print("OPTIMIZER_SNAPSHOT " + json.dumps({
        "warmup_ms": round((time.perf_counter() - t0) * 1000, 2), "threads": THREADS}),
        flush=True)


def after_restore() -> None:
    """SnapStart: every restored copy of the snapshot starts from the same memory, so
    random state is reseeded; the thread count is re-read and the model reloaded if the
    environment it was loaded for differs."""
    global RUN, THREADS
    t0 = time.perf_counter()
    import random

    random.seed()
    if "numpy.random" in sys.modules:  # slimmed packages leave it out; reseed it if loaded
        sys.modules["numpy.random"].seed(int.from_bytes(os.urandom(4), "little"))
    reloaded = False
    if (threads := _threads(MANIFEST_DATA)) != THREADS:
        RUN = load(MANIFEST_DATA["engine"], model_dir() / MANIFEST_DATA["model"], threads)
        THREADS, reloaded = threads, True
    print("OPTIMIZER_RESTORE " + json.dumps({
        "after_restore_ms": round((time.perf_counter() - t0) * 1000, 2), "threads": THREADS,
        "reloaded": reloaded}), flush=True)


try:  # in Lambda's Python 3.12+ runtimes (and awslambdaric); hooks run only with SnapStart
    from snapshot_restore_py import register_after_restore, register_before_snapshot
except ImportError:
    pass
else:
    register_before_snapshot(before_snapshot)
    register_after_restore(after_restore)


def _infer(arrays: list) -> list[list[dict]]:
    m = MANIFEST_DATA
    return top_k(RUN(to_batch(arrays, m["preprocess"])), m["labels"], m["top_k"],
                 m["output"] == "logits")


def lambda_handler(event: Any, context: Any) -> dict:
    request_id = getattr(context, "aws_request_id", None)
    m = MANIFEST_DATA
    if bulk.kind(event):  # SQS batches and S3 notifications: each item fails alone
        return bulk.handle(event, _infer, {"name": m["name"], "digest": m["digest"][:12]})
    try:
        images = images_from_event(event, m["max_request_bytes"], m["max_images"])
        t0 = time.perf_counter()
        predictions = classify(images)
        if answer := m.get("answer"):  # shaped like the MMS handler's it replaces
            return response(200, shaped(predictions, answer), {
                "x-model-digest": m["digest"][:12], "x-threads": str(THREADS),
                "x-inference-ms": f"{(time.perf_counter() - t0) * 1000:.3f}"})
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
