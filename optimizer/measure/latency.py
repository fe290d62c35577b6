"""Batch-1 latency of several models, measured together in one fresh subprocess.

Speeds are only compared as ratios from one run: all models share one process and are timed
in short alternating rounds, so a slow patch of a shared machine hits all of them alike.
A fresh process because TensorFlow fixes its thread pools at first use and oneDNN reads its
ISA cap from the environment at load; both are set here for the target.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from optimizer import hostinfo, targets
from optimizer.emulation.qemu import Emulator, check_signal
from optimizer.errors import OptimizerError
from optimizer.measure import latency_worker
from optimizer.model import ModelRef

RUNS_PER_ROUND = 10
WORKER = latency_worker.__name__  # run as its own process: imported here for cache keys
PACKAGE_ROOT = Path(__file__).resolve().parent.parent.parent  # holds the optimizer package


def isa_env(target_isa: str) -> dict[str, str]:
    cap = targets.ONEDNN_CAP.get(target_isa)
    return {"ONEDNN_MAX_CPU_ISA": cap} if cap else {}


def cap_note(runtime: str, target: str, host: dict | None = None) -> dict[str, str | bool]:
    """Whether this runtime's timing was held to the target's ISA, and how, on `host` (the
    cpu() of the machine that timed it; this one by default)."""
    r = targets.ENGINES[runtime]
    vs = hostinfo.versus_target(target, host)
    extras = vs["host_extra_flags"]
    if r.isa_cap == "ONEDNN_MAX_CPU_ISA":
        cap = targets.ONEDNN_CAP.get(vs["target_isa"])
        how = f"ONEDNN_MAX_CPU_ISA={cap}" if cap else "no oneDNN level for this ISA"
        return {"applied": bool(cap), "how": how, "needed": bool(extras), "note": how}
    if not extras:
        return {"applied": False, "how": r.isa_cap, "needed": False,
                "note": "none needed: host has no extensions beyond the target"}
    partial = r.isa_cap.startswith("partial")
    return {"applied": partial, "how": r.isa_cap, "needed": True,
            "note": f"{r.isa_cap}; the host's extensions beyond the target may make this "
                    "faster than on it"}


def measure(models: dict[str, ModelRef], sample: np.ndarray | dict[str, np.ndarray],
            threads: int, warmup: int, runs: int, target_isa: str,
            timeout: float = 1800.0, runtimes: dict[str, str] | None = None,
            emulate: Emulator | None = None, deps: tuple[Path, ...] = (),
            target: str | None = None, per_round: int = RUNS_PER_ROUND) -> dict[str, dict]:
    """{name: stats}, all timed in one process at `threads` intra-op threads.

    `sample` is one input for all, or one per model (students have their own input size);
    `runtimes` names a model's runtime where it is not its kind's default. With `emulate`
    the worker runs as the `target`'s CPU under qemu, by that architecture's Python, with
    the target's wheels in `deps` and nothing from this machine's site-packages.
    """
    runtimes = runtimes or {}
    per_model = sample if isinstance(sample, dict) else {n: sample for n in models}
    with tempfile.TemporaryDirectory(prefix="optimizer-lat-") as tmp:
        inputs, saved = {}, {}
        for name in models:
            arr = per_model[name]
            if id(arr) not in saved:
                saved[id(arr)] = Path(tmp) / f"x{len(saved)}.npy"
                np.save(saved[id(arr)], arr.astype(np.float32))
            inputs[name] = str(saved[id(arr)])
        args = json.dumps({
            "models": {n: {"kind": m.kind, "path": str(m.path),
                           "runtime": runtimes.get(n) or targets.default_engine(m.kind),
                           "signature": m.info.get("signature", "serving_default"),
                           "input": inputs[n]}
                       for n, m in models.items()},
            "threads": threads, "warmup": warmup, "runs": runs,
            "rounds": max(1, runs // per_round),
        })
        if emulate is None:
            cmd = [sys.executable, "-m", WORKER, args]
            env = {**os.environ, **isa_env(target_isa), "OMP_NUM_THREADS": str(threads),
                   "TF_CPP_MIN_LOG_LEVEL": "3"}
        else:
            paths = [*(str(d) for d in deps), str(PACKAGE_ROOT)]
            boot = (f"import sys, runpy; sys.path[:0] = {paths!r}; "
                    f"runpy.run_module({WORKER!r}, run_name='__main__')")
            cmd = [*emulate.prefix(), str(emulate.python), "-S", "-B", "-c", boot, args]
            env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": tmp,
                   "LANG": "C.UTF-8", "OMP_NUM_THREADS": str(threads)}
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env,
                              cwd=tmp if emulate else None,
                              timeout=timeout, check=False)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        if emulate is not None and target:
            check_signal(proc.returncode, target, f"timing {sorted(models)}")
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        where = f" under {emulate.describe()}" if emulate else ""
        raise OptimizerError(f"latency measurement of {sorted(models)}{where} failed: {tail}")
    return json.loads(lines[-1])


def measured_here(models: dict[str, ModelRef], sample: dict[str, np.ndarray], threads: int,
                  warmup: int, runs: int, target_isa: str,
                  runtimes: dict[str, str]) -> dict[str, dict]:
    """measure() plus the CPU that did it: the unit a Ray node with the target's CPU runs."""
    return {"models": measure(models, sample, threads, warmup, runs, target_isa,
                              runtimes=runtimes),
            "cpu": hostinfo.cpu()}


def latency_timed_on(target: str, where: str, cpu: dict[str, Any]) -> dict[str, Any]:
    """Where the target's latency was measured and how that CPU differs from the target's."""
    vs = hostinfo.versus_target(target, cpu)
    extra, missing = vs["host_extra_flags"], vs["target_flags_missing_on_host"]
    if not vs["same_arch"]:
        summary = f"{cpu['arch']}, not the target's architecture"
    elif extra:
        summary = ("has " + ", ".join(extra) + f" beyond {target}'s {vs['target_isa']}: int8 "
                   "and fp16 timings may be faster than on the target")
    else:
        summary = f"no extensions beyond {target}'s {vs['target_isa']}: native timing"
    return {"target": target, "where": where, "cpu": cpu["model"], "arch": cpu["arch"],
            "flags": cpu["flags"], "extra_flags": extra, "missing_flags": missing,
            "native": vs["same_arch"] and not extra, "summary": summary}
