"""Function instances: a zip's handler in a capped process, or an image in a container.

Both run the real runtime interface client against the local Runtime API, so init, the
request loop and error reporting are Lambda's own code, not a re-implementation.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from optimizer import docker_client
from optimizer.hostinfo import peak_rss_bytes
from optimizer.lambda_local import import_check
from optimizer.lambda_local.caps import ProcessCaps, cgroup_peak


def lambda_env(api: str, memory_mb: int, timeout_s: float,
               init_type: str = "on-demand") -> dict[str, str]:
    """`init_type` snap-start makes awslambdaric run the SnapStart hooks around
    /restore/next, as in a version being published with SnapStart on."""
    return {
        "AWS_LAMBDA_INITIALIZATION_TYPE": init_type,
        "AWS_LAMBDA_RUNTIME_API": api,
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(memory_mb),
        "AWS_LAMBDA_FUNCTION_TIMEOUT": str(int(timeout_s)),
        "AWS_LAMBDA_FUNCTION_NAME": "optimizer-local",
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "LANG": "en_US.UTF-8",
        "TZ": ":UTC",
    }


class ProcessInstance:
    """`python -S -m awslambdaric HANDLER` with /var/task, /opt/python and the runtime
    client on the path and nothing from this machine's site-packages.

    `prefix` runs the interpreter under an emulator (qemu-user as the target's CPU), which
    is no model of Lambda's resources, so nothing is capped then. `check_imports` fails
    every invocation after which a module is loaded from anywhere but the package, the
    runtime client and the standard library: a proof must not lean on this machine."""

    def __init__(self, python: Path, task: Path, opt: Path, runtime_dir: Path, handler: str,
                 memory_mb: int, cpus: float, timeout_s: float, prefix: tuple[str, ...] = (),
                 check_imports: bool = False, environment: dict[str, str] | None = None) -> None:
        self.python, self.task, self.opt, self.runtime_dir = python, task, opt, runtime_dir
        self.environment = environment or {}  # the function's configured variables
        self.handler, self.memory_mb, self.cpus = handler, memory_mb, cpus
        self.timeout_s, self.prefix, self.check_imports = timeout_s, prefix, check_imports
        self.caps = None if prefix else ProcessCaps(memory_mb, cpus)  # removed at stop
        self.cap_method = self.caps.method if self.caps else f"none: run under {prefix[0]}"
        self.proc: subprocess.Popen | None = None
        self.log = tempfile.TemporaryFile()
        self.started = 0.0
        self.init_type = "on-demand"
        self._checker = tempfile.TemporaryDirectory(prefix="optimizer-proof-") \
            if check_imports else None

    def _paths_and_handler(self) -> tuple[list[Path], str, dict[str, str]]:
        roots = [self.task, self.opt / "python", self.runtime_dir]
        if self._checker is None:
            return roots, self.handler, {}
        folder = Path(self._checker.name)
        shutil.copyfile(import_check.__file__, folder / f"{import_check.MODULE}.py")
        env = {"OPTIMIZER_PROOF_HANDLER": self.handler,
               "OPTIMIZER_PROOF_ROOTS": json.dumps([str(r) for r in roots])}
        return [*roots, folder], f"{import_check.MODULE}.handle", env

    def start(self, api: str) -> None:
        if self.caps is not None and not self.caps.dirs and \
                self.caps.method.startswith("cgroup"):
            self.caps = ProcessCaps(self.memory_mb, self.cpus)  # the last stop removed it
        paths, handler, extra = self._paths_and_handler()
        env = {
            **self.environment,  # Lambda's own variables below cannot be overridden
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": os.pathsep.join(str(p) for p in paths),
            "LAMBDA_TASK_ROOT": str(self.task), "LAMBDA_RUNTIME_DIR": str(self.runtime_dir),
            "HOME": str(self.task.parent),
            **lambda_env(api, self.memory_mb, self.timeout_s, self.init_type), **extra,
        }
        self.started = time.perf_counter()
        self.proc = subprocess.Popen(
            [*self.prefix, str(self.python), "-S", "-B", "-m", "awslambdaric", handler],
            cwd=self.task, env=env, stdout=self.log, stderr=subprocess.STDOUT,
            preexec_fn=self.caps.enter if self.caps else None)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def peak_mb(self) -> float | None:
        """The larger of the cgroup's peak and the process's peak RSS (VmHWM): pages of
        libraries already in the page cache are not charged to a new cgroup."""
        rss = peak_rss_bytes(self.proc.pid) if self.alive() else None
        peak = max((self.caps.peak_bytes() if self.caps else None) or 0, rss or 0)
        return round(peak / 1024 / 1024, 1) if peak else None

    def oom_killed(self) -> bool:
        return self.caps is not None and self.caps.oom_killed()

    def logs(self, lines: int = 15) -> str:
        self.log.seek(0)
        return "\n".join(self.log.read().decode(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if self.caps is not None:
            self.caps.close()


class ContainerInstance:
    """`docker run` of an image with --memory and --cpus from the memory size."""

    def __init__(self, ref: str, memory_mb: int, cpus: float, timeout_s: float) -> None:
        self.client = docker_client.client()
        self.ref, self.memory_mb, self.cpus, self.timeout_s = ref, memory_mb, cpus, timeout_s
        self.container = None
        self.started = 0.0
        self.init_type = "on-demand"
        self.cap_method = (f"docker --memory {memory_mb}m --memory-swap {memory_mb}m "
                           f"--cpus {cpus:.3f}")

    def start(self, api: str) -> None:
        self.started = time.perf_counter()
        self.container = self.client.containers.run(
            self.ref, detach=True, network_mode="host", mem_limit=f"{self.memory_mb}m",
            memswap_limit=f"{self.memory_mb}m", nano_cpus=int(self.cpus * 1e9),
            environment=lambda_env(api, self.memory_mb, self.timeout_s, self.init_type))

    def alive(self) -> bool:
        if self.container is None:
            return False
        self.container.reload()
        return self.container.status in ("created", "running")

    def _cgroup(self) -> Path | None:
        if self.container is None:
            return None
        for path in (Path("/sys/fs/cgroup/memory/docker") / self.container.id,
                     Path("/sys/fs/cgroup/system.slice") / f"docker-{self.container.id}.scope"):
            if path.is_dir():
                return path
        return None

    def peak_mb(self) -> float | None:
        group = self._cgroup()
        peak = cgroup_peak(group) if group is not None else None
        return None if peak is None else round(peak / 1024 / 1024, 1)

    def oom_killed(self) -> bool:
        if self.container is None:
            return False
        self.container.reload()
        return bool(self.container.attrs.get("State", {}).get("OOMKilled"))

    def logs(self, lines: int = 15) -> str:
        return "" if self.container is None else \
            self.container.logs(tail=lines).decode(errors="replace")

    def stop(self) -> None:
        if self.container is not None:
            self.container.remove(force=True)
            self.container = None
