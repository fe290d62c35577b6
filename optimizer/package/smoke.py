"""Proof that a package runs: its handler imported and invoked by a Python of the runtime's
version, with nothing from this machine's site-packages on the path.

Only the package's folders and the interpreter's standard library are importable (`-I -S`),
and the runner fails if any module came from elsewhere, so a slimming rule that removed
something the import needs, or a dependency missing from the package, fails the build.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

from optimizer.emulation.interpreters import find_python
from optimizer.emulation.qemu import Emulator, check_signal
from optimizer.errors import PackageFailed

RUNNER = r'''
import json, sys, time
task, opt, events_file = sys.argv[1], sys.argv[2:-1], sys.argv[-1]
roots = [task] + [o + "/python" for o in opt]
sys.path[:0] = roots
t0 = time.perf_counter()
from handler import app
init_ms = (time.perf_counter() - t0) * 1000
class Context:
    aws_request_id = "smoke-0"
    function_name = "smoke"
    memory_limit_in_mb = 0
    def get_remaining_time_in_millis(self):
        return 60000
responses = [app.lambda_handler(e, Context()) for e in json.load(open(events_file))]
import sysconfig
stdlib = sysconfig.get_paths()["stdlib"]
foreign = sorted({m.__file__ for n, m in list(sys.modules.items()) if n != "__main__"
                  and getattr(m, "__file__", None)
                  and not any(m.__file__.startswith(r) for r in roots + [stdlib])})
print(json.dumps({"init_ms": init_ms, "responses": responses, "foreign": foreign,
                  "python": sys.version.split()[0], "threads": app.THREADS,
                  "init_breakdown": app.INIT_BREAKDOWN}))
'''


def run(python_version: str, task: Path, opt_roots: list[Path], events: list,
        memory_mb: int, timeout_s: float = 300, emulate: Emulator | None = None,
        target: str | None = None) -> dict:
    """`emulate` runs the interpreter under qemu-user as the target's CPU (15-90x slower);
    for a foreign architecture it brings that architecture's interpreter too."""
    python = emulate.python if emulate and emulate.python else find_python(python_version)
    if python is None:
        raise PackageFailed(f"no Python {python_version} on this machine to prove the package "
                         f"with; install one (pyenv install {python_version})")
    with tempfile.TemporaryDirectory(prefix="optimizer-smoke-") as tmp:
        runner = Path(tmp) / "runner.py"
        runner.write_text(RUNNER)
        events_file = Path(tmp) / "events.json"
        events_file.write_text(json.dumps(events))
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": tmp,
               "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(memory_mb), "LANG": "C.UTF-8"}
        t0 = time.perf_counter()
        proc = subprocess.run(
            [*(emulate.prefix() if emulate else []), str(python), "-I", "-S", "-B", str(runner),
             str(task),
             *(str(o) for o in opt_roots), str(events_file)],
            capture_output=True, text=True, env=env, timeout=timeout_s, cwd=tmp,
        )
        seconds = time.perf_counter() - t0
    where = f"Python {python_version}" + (f" under {emulate.describe()}" if emulate else "")
    if proc.returncode != 0:
        if emulate and target:
            check_signal(proc.returncode, target, f"the packaged handler ({where})")
        tail = "\n".join(proc.stderr.strip().splitlines()[-8:])
        raise PackageFailed(f"the packaged handler failed under {where} (exit "
                            f"{proc.returncode}):\n{tail}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    if result["foreign"]:
        raise PackageFailed("the packaged handler imported modules from outside the package: "
                         + ", ".join(result["foreign"][:5]))
    result["interpreter"] = str(python)
    result["seconds"] = round(seconds, 2)
    return result
