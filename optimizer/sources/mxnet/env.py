"""The isolated Python environments MXNet work runs in.

MXNet 1.9.1 needs numpy older than 1.24, which TensorFlow and current ONNX refuse, so MXNet
never enters this process: it lives in a virtual environment made once under the cache, and
MXNet work runs there as a subprocess that exchanges files with us. An environment is ready
only when its marker, written last, names the same pins and its key files are all there;
anything less (an interrupted install, a deleted file) is removed and made again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from optimizer.cache import envs_root, file_lock
from optimizer.errors import OptimizerError

READY = "ready.json"


class EnvFailed(OptimizerError):
    """The environment could not be made (no suitable Python, pip failed)."""


@dataclass(frozen=True)
class EnvSpec:
    """What goes into one environment: pins for the venv, plus add-ons in their own folders.

    An add-on is a `pip install --target` folder put on PYTHONPATH only by the commands that
    need it, so a tool with a clashing package name (MMS 0.4 and 1.x both ship `mms`) can sit
    beside the rest. `no_deps` add-ons install exactly what they list.
    """

    name: str
    pins: tuple[str, ...]
    # a file under site-packages that must exist for the env to count as whole
    key_files: tuple[str, ...] = ()
    addons: dict[str, tuple[tuple[str, ...], bool]] = field(default_factory=dict)
    max_python: tuple[int, int] = (3, 11)

    def digest(self, python_version: str) -> str:
        text = json.dumps([self.name, self.pins, self.key_files, python_version], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


MXNET = EnvSpec(
    name="mxnet",
    pins=("mxnet==1.9.1", "numpy==1.23.5", "onnx==1.14.1", "protobuf==3.20.3",
          "model-archiver==1.0.3"),
    key_files=("mxnet/libmxnet.so", "onnx/__init__.py", "numpy/__init__.py",
               "model_archiver/model_packaging.py"),
    addons={
        # the real MXNet Model Server 1.x, for serving benchmarks (needs Java)
        "mms": (("multi-model-server==1.1.11", "pillow==10.4.0", "psutil==6.1.1"), False),
        # MMS 0.4's mxnet-model-export, which wrote the older (.model, top-level manifest)
        # layout; its own deps are Flask-era servers we never start, so they stay out
        "mms-legacy": (("mxnet-model-server==0.4", "future==1.0.0", "pillow==10.4.0",
                        "psutil==6.1.1"), True),
    },
)


def _version_of(python: str) -> tuple[int, int] | None:
    try:
        out = subprocess.run([python, "-c", "import sys; print(*sys.version_info[:2])"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    parts = out.stdout.split()
    return (int(parts[0]), int(parts[1])) if out.returncode == 0 and len(parts) == 2 else None


def find_python(spec: EnvSpec) -> tuple[str, tuple[int, int]]:
    """An interpreter MXNet's pins have wheels for: OPTIMIZER_MXNET_PYTHON, ours, or PATH."""
    tried = []
    candidates = [os.environ.get("OPTIMIZER_MXNET_PYTHON"), sys.executable]
    candidates += [shutil.which(f"python3.{m}") for m in range(spec.max_python[1], 7, -1)]
    for python in filter(None, candidates):
        version = _version_of(python)
        tried.append(f"{python} ({'.'.join(map(str, version)) if version else 'not runnable'})")
        if version and (3, 8) <= version <= spec.max_python:
            return python, version
    raise EnvFailed(
        f"no Python between 3.8 and {'.'.join(map(str, spec.max_python))} for the {spec.name} "
        f"environment (its pins have no wheels for newer ones); tried {', '.join(tried)}. "
        "Set OPTIMIZER_MXNET_PYTHON to such an interpreter.")


@dataclass
class Env:
    """A ready environment: run `python` with `env(addons)` to use it."""

    spec: EnvSpec
    root: Path

    @property
    def python(self) -> Path:
        return self.root / "bin" / "python"

    def site_packages(self) -> Path:
        found = sorted((self.root / "lib").glob("python3.*/site-packages"))
        if not found:
            raise EnvFailed(f"{self.root}: no site-packages folder")
        return found[0]

    def environ(self, addons: tuple[str, ...] = ()) -> dict[str, str]:
        """A clean environment for the subprocess: nothing of ours leaks onto its path."""
        env = {k: v for k, v in os.environ.items()
               if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")}
        paths = [str(self.root / "addons" / a) for a in addons]
        if paths:
            env["PYTHONPATH"] = os.pathsep.join(paths)
        env["PATH"] = f"{self.root / 'bin'}{os.pathsep}{env.get('PATH', '')}"
        env["PYTHONNOUSERSITE"] = "1"
        env.setdefault("OMP_NUM_THREADS", "1")
        env["MXNET_SUBGRAPH_VERBOSE"] = "0"
        return env

    def discard(self) -> None:
        """Forget that this env is ready; the next ensure() remakes it."""
        (self.root / READY).unlink(missing_ok=True)

    def whole(self, addons: tuple[str, ...] = ()) -> bool:
        try:
            marker = json.loads((self.root / READY).read_text())
        except (OSError, ValueError):
            return False
        if marker.get("pins") != list(self.spec.pins) or not self.python.exists():
            return False
        site = self.site_packages() if (self.root / "lib").is_dir() else None
        if site is None or not all((site / f).exists() for f in self.spec.key_files):
            return False
        done = marker.get("addons", {})
        return all(done.get(a) == list(self.spec.addons[a][0]) for a in addons)


Log = Callable[[str], None]


def ensure(spec: EnvSpec = MXNET, addons: tuple[str, ...] = (), log: Log = print,
           root: Path | None = None) -> Env:
    """The spec's environment, made (or remade, if broken) on first use; safe across processes."""
    unknown = set(addons) - set(spec.addons)
    if unknown:
        raise ValueError(f"unknown add-ons {sorted(unknown)} for {spec.name}")
    python, version = find_python(spec)
    base = root or envs_root()
    env = Env(spec, base / f"{spec.name}-{spec.digest('.'.join(map(str, version)))}")
    if env.whole(addons):
        return env
    with file_lock(env.root.with_name(env.root.name + ".lock")):
        if env.whole(addons):  # another process finished it while we waited
            return env
        if not env.whole():
            if env.root.exists():
                log(f"{spec.name} environment at {env.root} is incomplete or broken; remaking it")
                shutil.rmtree(env.root)
            _create(env, python, log)
        for addon in addons:
            _add(env, addon, log)
    if not env.whole(addons):
        raise EnvFailed(f"{env.root}: still incomplete after installing; see the pip output above")
    return env


def _pip(env: Env, args: list[str], what: str, log: Log) -> None:
    """pip with its output streamed a line at a time: a first install takes a minute."""
    cmd = [str(env.python), "-m", "pip", "install", "--disable-pip-version-check",
           "--no-input", "--progress-bar", "off", *args]
    log(f"installing {what} into {env.root} ...")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env.environ())
    tail: list[str] = []
    assert proc.stdout is not None
    for line in proc.stdout:
        line = line.rstrip()
        if line.startswith(("Collecting", "Installing", "Successfully")):
            log(f"  {line}")
        tail = ([*tail, line])[-15:]
    if proc.wait() != 0:
        raise EnvFailed(f"pip could not install {what} (exit {proc.returncode}):\n"
                        + "\n".join(tail))


def _write_marker(env: Env, addons: dict[str, list[str]]) -> None:
    tmp = env.root / (READY + ".tmp")
    tmp.write_text(json.dumps({"pins": list(env.spec.pins), "addons": addons}, indent=1))
    os.replace(tmp, env.root / READY)


def _create(env: Env, python: str, log: Log) -> None:
    log(f"creating the {env.spec.name} environment with {python} (once; later builds reuse it)")
    env.root.parent.mkdir(parents=True, exist_ok=True)
    made = subprocess.run([python, "-m", "venv", str(env.root)], capture_output=True, text=True)
    if made.returncode != 0:
        shutil.rmtree(env.root, ignore_errors=True)
        raise EnvFailed(f"python -m venv {env.root} failed: {made.stderr.strip()[-500:]}")
    try:
        _pip(env, list(env.spec.pins), " ".join(env.spec.pins), log)
    except BaseException:
        shutil.rmtree(env.root, ignore_errors=True)  # never leave a half env that looks whole
        raise
    _write_marker(env, {})


def _add(env: Env, addon: str, log: Log) -> None:
    marker = json.loads((env.root / READY).read_text())
    pins, no_deps = env.spec.addons[addon]
    if marker.get("addons", {}).get(addon) == list(pins):
        return
    folder = env.root / "addons" / addon
    shutil.rmtree(folder, ignore_errors=True)
    try:
        _pip(env, ["--target", str(folder), *(["--no-deps"] if no_deps else []), *pins],
             f"add-on {addon} ({' '.join(pins)})", log)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    _write_marker(env, {**marker.get("addons", {}), addon: list(pins)})
