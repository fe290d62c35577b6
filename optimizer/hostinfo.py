"""What machine the measurements came from, read at run time and put in every report.

Timings only mean something next to the CPU, its instruction-set extensions and the thread
count; a build host with AVX-512 or AMX is faster than the AVX2 Lambda promises.
"""

from __future__ import annotations

import os
import platform
from functools import cache
from pathlib import Path

from optimizer import targets
from optimizer.cache import dist_version

INTERESTING = (
    "sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni",
    "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16",
    "asimd", "asimddp", "asimdhp", "fphp", "sve", "i8mm", "bf16",
)
LIBRARIES = (
    "numpy", "onnx", "onnxruntime", "onnxslim", "tensorflow", "tensorflow-cpu", "keras",
    "tf2onnx", "ai-edge-litert", "openvino", "scikit-learn", "pydantic", "optimizer",
)


@cache
def cpu() -> dict:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key in ("model name", "CPU part") and model in ("", platform.machine()):
            model = value.strip()
        if key in ("flags", "Features") and not flags:
            flags = set(value.split())
    return {
        "model": model,
        "arch": platform.machine(),
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "flags": sorted(f for f in flags if f in INTERESTING),
        "all_flags_count": len(flags),
    }


def versus_target(target: str, host: dict | None = None) -> dict:
    """Which of the host's extensions the target does not promise (they may inflate speed);
    `host` is another machine's cpu() (a Ray node's), else this one."""
    t = targets.TARGETS[target]
    host = host or cpu()
    same_arch = host["arch"] == t.arch
    extra = sorted(set(host["flags"]) - set(t.flags)) if same_arch else []
    # only INTERESTING flags are read off the host, so only those can be called missing
    missing = (sorted(f for f in set(t.flags) - set(host["flags"]) if f in INTERESTING)
               if same_arch else list(t.flags))
    return {
        "target": t.name,
        "target_isa": t.isa,
        "same_arch": same_arch,
        "host_extra_flags": [f for f in extra if f not in ("sse4_2", "avx", "asimd")],
        "target_flags_missing_on_host": missing,
    }


def library_versions() -> dict[str, str | None]:
    return {name: dist_version(name) for name in LIBRARIES if dist_version(name)}


def fingerprint() -> dict:
    """Enough to tell whether cached timings came from this same kind of machine."""
    c = cpu()
    return {"model": c["model"], "flags": c["flags"], "cores": c["usable_cores"],
            "python": platform.python_version()}


def peak_rss_bytes(pid: int | str = "self") -> int | None:
    """VmHWM, not ru_maxrss: the latter survives exec and would report the parent's peak."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None
