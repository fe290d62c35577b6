"""CPU and memory caps for a function process, as Lambda derives them from the memory size.

A cgroup where one can be made (v1 or v2, as root), so memory over the size is killed by
the kernel and the CPU share is a CFS quota; otherwise RLIMIT_AS for memory and no CPU cap.
The method is reported, because a number measured under a weaker cap means less.
"""

from __future__ import annotations

import os
import resource
import shutil
import uuid
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
PERIOD_US = 100_000


def cgroup_peak(group: Path) -> int | None:
    """Peak memory charged to a cgroup (v1 or v2), if the group has a memory controller."""
    for name in ("memory.max_usage_in_bytes", "memory.peak"):
        if (group / name).is_file():
            return int((group / name).read_text())
    return None


class ProcessCaps:
    def __init__(self, memory_mb: int, cpus: float) -> None:
        self.memory_bytes = memory_mb * 1024 * 1024
        self.cpus = min(cpus, float(os.cpu_count() or 1))
        self.name = f"optimizer-{uuid.uuid4().hex[:12]}"
        self.dirs: list[Path] = []
        self.method = "none"
        try:
            if (ROOT / "cgroup.controllers").is_file():
                self._v2()
            elif (ROOT / "memory").is_dir() and (ROOT / "cpu").is_dir():
                self._v1()
        except OSError:
            self.close()
        if not self.dirs:
            self.method = "rlimit (RLIMIT_AS for memory; CPU not capped)"

    def _v1(self) -> None:
        mem, cpu = ROOT / "memory" / self.name, ROOT / "cpu" / self.name
        mem.mkdir()
        self.dirs.append(mem)
        (mem / "memory.limit_in_bytes").write_text(str(self.memory_bytes))
        if (mem / "memory.memsw.limit_in_bytes").exists():
            (mem / "memory.memsw.limit_in_bytes").write_text(str(self.memory_bytes))
        cpu.mkdir()
        self.dirs.append(cpu)
        (cpu / "cpu.cfs_period_us").write_text(str(PERIOD_US))
        (cpu / "cpu.cfs_quota_us").write_text(str(int(self.cpus * PERIOD_US)))
        self.method = f"cgroup v1 (memory {self.memory_bytes:,} B, CFS quota {self.cpus:.3f} CPU)"

    def _v2(self) -> None:
        group = ROOT / self.name
        group.mkdir()
        self.dirs.append(group)
        (group / "memory.max").write_text(str(self.memory_bytes))
        if (group / "memory.swap.max").exists():
            (group / "memory.swap.max").write_text("0")
        (group / "cpu.max").write_text(f"{int(self.cpus * PERIOD_US)} {PERIOD_US}")
        self.method = f"cgroup v2 (memory {self.memory_bytes:,} B, CFS quota {self.cpus:.3f} CPU)"

    def enter(self) -> None:
        """Runs in the child before exec: join the cgroup, or cap the address space."""
        if self.dirs:
            for d in self.dirs:
                (d / "cgroup.procs").write_text(str(os.getpid()))
        else:
            resource.setrlimit(resource.RLIMIT_AS, (self.memory_bytes, self.memory_bytes))

    def peak_bytes(self) -> int | None:
        return next((p for d in self.dirs if (p := cgroup_peak(d)) is not None), None)

    def oom_killed(self) -> bool:
        for d in self.dirs:
            for name in ("memory.oom_control", "memory.events"):
                if (d / name).is_file():
                    for line in (d / name).read_text().splitlines():
                        key, _, value = line.partition(" ")
                        if key == "oom_kill" and int(value) > 0:
                            return True
        return False

    def close(self) -> None:
        for d in reversed(self.dirs):
            try:
                d.rmdir()
            except OSError:
                shutil.rmtree(d, ignore_errors=True)
        self.dirs = []
