"""Calls into the isolated MXNet environment: a request file in, a reply file out.

Nothing here imports MXNet; a test holds us to that. The worker's own errors (a corrupt
params file, an operator mx2onnx lacks) come back as BadInput with the worker's words; a
crash or a broken environment comes back with the tail of its output.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from optimizer.errors import BadInput, OptimizerError
from optimizer.sources.mxnet import env as envs
from optimizer.sources.mxnet import worker

# the script the isolated env runs: imported here only so its code is in cache keys
WORKER = Path(worker.__file__)
USER_ERROR = 2
ENV_BROKEN = 3


class WorkerFailed(OptimizerError):
    """The MXNet subprocess died without a reply (a crash, a kill, a timeout)."""


def call(command: str, request: dict[str, Any], *, log=print, timeout: float = 3600,
         addons: tuple[str, ...] = ()) -> dict[str, Any]:
    """Run one worker command; an env that cannot import its own packages is remade once."""
    for attempt in (1, 2):
        env = envs.ensure(envs.MXNET, addons, log=log)
        code, answer, output = _run(env, command, request, timeout, addons, log)
        if code == ENV_BROKEN and attempt == 1:
            log(f"MXNet environment {env.root} cannot import its packages "
                f"({(answer or {}).get('env_broken')}); remaking it")
            env.discard()
            continue
        break
    if code == USER_ERROR and answer and "error" in answer:
        raise BadInput(answer["error"])
    if code != 0 or answer is None:
        tail = "\n".join(output.strip().splitlines()[-12:])
        raise WorkerFailed(f"MXNet {command} failed (exit {code}) in {env.root}:\n{tail}")
    return answer


def _run(env: envs.Env, command: str, request: dict[str, Any], timeout: float,
         addons: tuple[str, ...], log) -> tuple[int, dict[str, Any] | None, str]:
    with tempfile.TemporaryDirectory(prefix="optimizer-mxnet-") as tmp:
        reply = Path(tmp) / "reply.json"
        req = Path(tmp) / "request.json"
        req.write_text(json.dumps({**request, "reply": str(reply)}))
        try:
            proc = subprocess.run([str(env.python), str(WORKER), command, str(req)],
                                  capture_output=True, text=True, timeout=timeout,
                                  env=env.environ(addons))
        except subprocess.TimeoutExpired:
            raise WorkerFailed(f"MXNet {command} took longer than {timeout:.0f} s") from None
        for line in proc.stdout.splitlines():
            log(f"  mxnet: {line}")
        answer = json.loads(reply.read_text()) if reply.exists() else None
    return proc.returncode, answer, proc.stderr or proc.stdout


def tool(argv: list[str], *, cwd: Path, log=print, addons: tuple[str, ...] = (),
         timeout: float = 600) -> str:
    """Run a Python entry point inside the environment (model-archiver, MMS) and check it."""
    env = envs.ensure(envs.MXNET, addons, log=log)
    proc = subprocess.run([str(env.python), *argv], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=env.environ(addons))
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr + proc.stdout).strip().splitlines()[-12:])
        raise WorkerFailed(f"{' '.join(argv[:3])} failed (exit {proc.returncode}):\n{tail}")
    return proc.stdout
