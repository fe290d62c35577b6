"""A real two-node Ray cluster on this machine, inside a network namespace with only
loopback, so Ray registers 127.0.0.1 and nothing of it is reachable from elsewhere.

The second node declares a target's resource, as an AVX2-only or Graviton worker would.
Stopping kills exactly the processes inside the namespace (`ray stop` would kill every Ray
process on the machine, a user's too).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

PORT = 6379
OBJECT_STORE = str(200 * 1024 * 1024)


@dataclass
class Cluster:
    netns: str
    address: str
    temp_dir: Path

    def cmd(self, *args: str) -> list[str]:
        """A command run inside the cluster's namespace (where the driver must run too).
        Token auth is off explicitly: Ray turns it on for `ray start --head` whenever
        ~/.ray/auth_token exists (any local ray.init() writes one), and then the second
        node cannot join. Nothing outside the namespace can reach this cluster anyway."""
        return ["ip", "netns", "exec", self.netns, "env", "RAY_AUTH_MODE=disabled", *args]

    def run(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return subprocess.run(self.cmd(*args), capture_output=True, text=True, **kw)

    def pids(self) -> list[int]:
        """Every process inside the namespace: the cluster's, and builds started in it."""
        mine = os.stat(f"/run/netns/{self.netns}").st_ino
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    if os.stat(entry / "ns" / "net").st_ino == mine:
                        found.append(int(entry.name))
                except OSError:
                    continue
        return found

    def cmdline(self, pid: int) -> str:
        try:
            return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            return ""

    def stop(self) -> None:
        for _ in range(3):
            pids = self.pids()
            if not pids:
                break
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.5)
        subprocess.run(["ip", "netns", "del", self.netns], capture_output=True)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def build_command(recipe: Path, out: Path, cache: Path, *extra: str
                  ) -> tuple[list[str], dict[str, str]]:
    """`optimizer build --json` with a cache of its own; OPTIMIZER_RAY is dropped so each
    build says for itself where it runs."""
    env = {**os.environ, "OPTIMIZER_CACHE": str(cache)}
    env.pop("OPTIMIZER_RAY", None)
    return [sys.executable, "-m", "optimizer", "build", str(recipe), "--out", str(out),
            "--json", *extra], env


def build(prefix: list[str], recipe: Path, out: Path, cache: Path, *extra: str,
          timeout: float = 900) -> tuple[subprocess.CompletedProcess, dict | None]:
    """Run a build (inside the namespace when `prefix` is `Cluster.cmd()`); its report
    document, or None when stdout is not one."""
    argv, env = build_command(recipe, out, cache, *extra)
    res = subprocess.run([*prefix, *argv], capture_output=True, text=True, timeout=timeout,
                         env=env)
    try:
        doc = json.loads(res.stdout)
    except ValueError:
        doc = None
    return res, doc


def available() -> str | None:
    """Why a cluster cannot start here, or None."""
    if shutil.which("ip") is None:
        return "iproute2 is not installed (apt-get install iproute2)"
    try:
        import ray  # noqa: F401
    except ImportError:
        return "ray is not installed (pip install -e '.[test]')"
    return None


def start(resource: str = "target_x86_64_avx2") -> Cluster:
    # Ray's CLI on this interpreter: a venv made with --system-site-packages has no `ray`
    # script of its own, and another interpreter's would load another checkout
    ray = [sys.executable, "-m", "ray.scripts.scripts"]
    ns = f"optimizer-ray-{os.getpid()}"
    # Ray's socket paths must stay under 107 characters: a short folder of its own
    temp = Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp"))
    subprocess.run(["ip", "netns", "add", ns], check=True, capture_output=True)
    cluster = Cluster(ns, f"127.0.0.1:{PORT}", temp)
    try:
        subprocess.run(cluster.cmd("ip", "link", "set", "lo", "up"), check=True)
        common = ["--num-cpus", "1", "--object-store-memory", OBJECT_STORE,
                  "--disable-usage-stats"]
        for args in (
            ["--head", "--port", str(PORT), "--include-dashboard=false",
             "--temp-dir", str(temp)],
            ["--address", cluster.address, "--resources", f'{{"{resource}": 1}}'],
        ):
            res = cluster.run(*ray, "start", *args, *common, timeout=120,
                              env={**os.environ, "RAY_ADDRESS": ""})
            if res.returncode != 0:
                raise RuntimeError(f"ray start {' '.join(args)} failed: {res.stderr[-2000:]}")
    except BaseException:
        cluster.stop()
        raise
    return cluster
