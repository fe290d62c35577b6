"""What runs on a Ray worker. Everything arrives as values (models packed, the dataset from
the object store) and everything made goes back as values; the only other channel is the
driver's store actor, for cache entries the driver already has and for checkpoints.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from optimizer.build.ray.portable import ShippedModel, land, land_files, pack, result_of, unpack


def _landed(value: Any, work: Path) -> Any:
    """Arguments with every shipped model unpacked into a folder of this worker's."""
    if isinstance(value, ShippedModel):
        return land(value, Path(tempfile.mkdtemp(prefix="model-", dir=work)))
    if isinstance(value, list | tuple):
        return type(value)(_landed(v, work) for v in value)
    if isinstance(value, dict):
        return {k: _landed(v, work) for k, v in value.items()}
    return value


def node() -> dict[str, Any]:
    import ray

    from optimizer import hostinfo

    return {"node_id": ray.get_runtime_context().get_node_id(),
            "ip": ray.util.get_node_ip_address(), "pid": os.getpid(), "cpu": hostinfo.cpu()}


def timed(fn: Callable[..., Any], *args: Any) -> dict[str, Any]:
    """fn's value with the wall times the driver subtracts to get Ray's overhead."""
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="optimizer-task-") as work:
        value = fn(*_landed(list(args), Path(work)))
    return {"value": value, "started": t0, "ended": time.time(), "node": node()}


def _answer(ref: Any) -> Any:
    """The store actor's reply. Not ray.get: a task blocked in ray.get hands its CPU back to
    the node, which starts the next queued task beside it, so two trainings would share
    one CPU. The store needs no CPU, so waiting while holding ours cannot deadlock."""
    return ref.future().result()


def _threads(n: int) -> None:
    """TensorFlow's pools follow the task's CPUs (the process is fresh: max_calls=1)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from optimizer.quiet import import_tensorflow

    import_tensorflow()
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(n)
    tf.config.threading.set_inter_op_parallelism_threads(1)


def run_step(payload: dict[str, Any], model, store, dataset) -> dict[str, Any]:
    """One step on one model (unpacked by `timed`) in this worker's own folders.
    Checkpoints come from and go to the store, so a retry elsewhere resumes; shared entries
    (teacher outputs) are asked of the store first, and made here only if the driver lacks
    them, to be sent back."""

    from optimizer.cache import make_key
    from optimizer.progress import Progress
    from optimizer.steps import STEPS
    from optimizer.steps.base import StepContext

    if payload["threads"]:
        _threads(payload["threads"])
    key = payload["checkpoint_key"]
    with tempfile.TemporaryDirectory(prefix="optimizer-step-") as tmp:
        work = Path(tmp)
        cfg = land_files(payload["config"], payload["files"], work / "files")
        out, ckpt = work / "out", work / "checkpoints"
        out.mkdir()
        if (blob := _answer(store.checkpoint.remote(key))) is not None:
            unpack(blob, ckpt)
        made: list[tuple[str, str, bytes]] = []

        def cached(parts: dict[str, Any], label: str, produce: Callable[[Path], None]) -> Path:
            entry = make_key(parts)
            folder = work / "cached" / entry
            if folder.is_dir():
                return folder
            if (blob := _answer(store.entry.remote(entry))) is not None:
                unpack(blob, folder)
                return folder
            folder.mkdir(parents=True)
            produce(folder)
            made.append((entry, label, pack(folder)))
            return folder

        def saved(root: Path) -> None:
            _answer(store.save_checkpoint.remote(key, pack(root, set())))

        progress = Progress(quiet=True)
        ctx = StepContext(out_dir=out, target=payload["target"], dataset=dataset,
                          progress=progress, checkpoints=ckpt, cached=cached,
                          on_checkpoint=saved)
        ref = STEPS[cfg.step].run(model, cfg, ctx)
        return {**result_of(ref, out), "entries": made,
                "log": [e["message"] for e in progress.events]}
