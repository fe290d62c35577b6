"""Training several students at once, in worker processes, only where memory allows.

Tracing a Keras training step is single-threaded Python and takes about as long as a small
student's whole training here, and small convolutions use a second core poorly; so two
one-thread trainings side by side finish sooner than two two-thread ones in a row. Each
worker needs about as much memory as this process holds (TensorFlow, the prepared images,
the network), so the number of workers is capped by available memory as well as by cores.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from optimizer import hostinfo

MIN_JOB_BYTES = 1_500_000_000
HEADROOM = 0.75  # share of available memory the workers may take


@dataclass(frozen=True)
class Plan:
    jobs: int
    threads: int
    reason: str


def available_bytes() -> int:
    """MemAvailable, or the cgroup limit minus usage when that is tighter."""
    avail = 0
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                avail = int(line.split()[1]) * 1024
    except OSError:
        pass
    for limit_file, usage_file in (
            ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
            ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
             "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit = Path(limit_file).read_text().strip()
            usage = int(Path(usage_file).read_text())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 1 << 60:
            avail = min(avail or 1 << 62, int(limit) - usage)
    return max(avail, 0)


def plan(n: int, cores: int | None = None, avail: int | None = None,
         per_job: int | None = None) -> Plan:
    cores = cores or len(os.sched_getaffinity(0))
    avail = available_bytes() if avail is None else avail
    per_job = max(MIN_JOB_BYTES, per_job or hostinfo.peak_rss_bytes() or 0)
    by_memory = int(avail * HEADROOM // per_job)
    jobs = max(1, min(n, cores, by_memory))
    reason = (f"{jobs} of {n} at once: {cores} cores, {avail / 1e9:.1f} GB available, "
              f"about {per_job / 1e9:.1f} GB per training")
    return Plan(jobs, max(1, cores // jobs), reason)


def pool(jobs: int) -> ProcessPoolExecutor:
    """Fresh spawned processes (never forked from a process that runs TensorFlow)."""
    return ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn"),
                               max_tasks_per_child=1)


def stop(workers: ProcessPoolExecutor) -> None:
    """Kill what still runs; waiting callers then get BrokenProcessPool, not a hang."""
    for proc in list((getattr(workers, "_processes", None) or {}).values()):
        if proc.is_alive():
            proc.kill()
    workers.shutdown(wait=False, cancel_futures=True)


def run_step(payload: dict[str, Any]):
    """In a worker: one student step for one candidate; returns its ModelRef."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from rich.console import Console

    from optimizer.quiet import import_tensorflow

    import_tensorflow()
    import tensorflow as tf

    from optimizer.cache import Cache
    from optimizer.progress import Progress
    from optimizer.steps import STEPS
    from optimizer.steps.base import StepContext

    tf.config.threading.set_intra_op_parallelism_threads(payload["threads"])
    tf.config.threading.set_inter_op_parallelism_threads(1)
    cache = Cache(Path(payload["cache_root"]))
    progress = Progress()
    progress.console = Console(stderr=True, force_terminal=False, force_interactive=False)

    cfg = payload["config"]
    # the driver's dataset (in the model's class order), not a fresh load of the recipe's
    ctx = StepContext(out_dir=Path(payload["out_dir"]), target=payload["target"],
                      dataset=payload["dataset"], progress=progress,
                      checkpoints=Path(payload["checkpoints"]), cached=cache.ensure_parts)
    return STEPS[cfg.step].run(payload["model"], cfg, ctx)
