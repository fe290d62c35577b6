"""What `invoke` and `tune` run: a build's package folder, a zip, or an image.

Zips are unpacked as Lambda does (function into the task root, layers in order into /opt)
and run by a Python of the runtime's version with the runtime client resolved for it;
images run with their own entry point.
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from optimizer import docker_client, targets, wheels
from optimizer.archive import extract_zip
from optimizer.cache import Cache, default_root, make_key
from optimizer.emulation import interpreters
from optimizer.emulation.qemu import Emulator
from optimizer.errors import BadInput
from optimizer.lambda_local.instances import ContainerInstance, ProcessInstance

DEFAULT_HANDLER = "lambda_function.lambda_handler"


@dataclass
class Deployable:
    kind: str  # zip | image
    ref: str
    arch: str
    runtime: str | None
    sample_event: Path | None
    make: Callable[[int, float, float], object]  # (memory MB, cpus, timeout s) -> Instance
    layers: int = 0

    def hint(self, error: str) -> str | None:
        """What to try when the function cannot import what it needs."""
        if self.kind == "zip" and "No module named" in error and not self.layers:
            return ("the zip was run without layers, and its dependencies are in them: pass "
                    "the folder holding function.zip and layer-N.zip, or function.zip itself "
                    "with its layers beside it")
        return None


def _zips(path: Path) -> tuple[list[Path], Path | None]:
    """The function zip, its layers in order, and the sample event beside them. A build's
    function.zip named on its own brings its layers: without them nothing imports."""
    folder = path / "package" if (path / "package" / "function.zip").is_file() else path
    if path.is_file():
        folder = path.parent
        layers = sorted(folder.glob("layer-*.zip")) if path.name == "function.zip" else []
    else:
        if not (folder / "function.zip").is_file():
            raise BadInput(f"{path}: no function.zip (nor package/function.zip) here")
        path, layers = folder / "function.zip", sorted(folder.glob("layer-*.zip"))
    sample = folder / "sample-event.json"
    return [path, *layers], sample if sample.is_file() else None


def built_image(folder: Path) -> str | None:
    """The image an image build published (docker://REF, or its image.tar), if any."""
    report = folder / "report.json"
    if not report.is_file() or (folder / "package" / "function.zip").is_file():
        return None
    try:
        records = json.loads(report.read_text()).get("packages", [])
    except (OSError, ValueError):
        return None
    for rec in records:
        if rec.get("kind") == "image" and rec.get("ref"):
            return f"docker://{rec['ref']}"
    tarball = folder / "package" / "image.tar"
    return str(tarball) if tarball.is_file() else None


def _runtime_client(python: str, arch: str, glibc: str) -> Path:
    # boto3 sits beside the runtime client, as in Lambda's managed runtimes; never in packages
    reqs = wheels.pinned(("awslambdaric", "boto3"), arch)
    key = make_key({"runtime-client": reqs, "python": python, "arch": arch, "glibc": glibc})
    entry, _ = Cache(default_root()).ensure_dir(
        key, lambda tmp: wheels.resolve(reqs, python, arch, glibc, tmp / "runtime"),
        {"label": f"runtime client for Python {python}"})
    return entry / "runtime"


def open_zip(path: Path, work: Path, runtime: str | None, handler: str | None,
             emulate: Emulator | None = None, check_imports: bool = False,
             environment: dict[str, str] | None = None) -> Deployable:
    """`emulate`: run under qemu-user as the target's CPU (for a foreign architecture with
    that architecture's Python); `check_imports`: fail an invocation that loaded a module
    from outside the package (see import_check); `environment`: the function's variables."""
    zips, sample = _zips(path)
    task, opt = work / "task", work / "opt"
    extract_zip(zips[0], task)
    opt.mkdir(parents=True)
    for layer in zips[1:]:
        extract_zip(layer, opt)
    manifest_file = task / "model" / "package.json"
    manifest = json.loads(manifest_file.read_text()) if manifest_file.is_file() else {}
    runtime = runtime or manifest.get("lambda_runtime") or targets.DEFAULT_RUNTIME
    if runtime not in targets.RUNTIMES:
        raise BadInput(f"unknown runtime '{runtime}'; choose one of {sorted(targets.RUNTIMES)}")
    arch = manifest.get("architecture", "x86_64")
    if emulate is None and not interpreters.can_run(arch):
        raise BadInput(f"{path}: a package for {arch} cannot run on this machine")
    rt = targets.RUNTIMES[runtime]
    python = (emulate.python if emulate and emulate.python
              else interpreters.find_python(rt.python))
    if python is None:
        raise BadInput(f"no Python {rt.python} on this machine to run a {runtime} package; "
                       f"install one (pyenv install {rt.python})")
    client = _runtime_client(rt.python, arch, rt.glibc)
    handler = handler or manifest.get("handler") or DEFAULT_HANDLER
    prefix = tuple(emulate.prefix()) if emulate else ()

    def make(memory_mb: int, cpus: float, timeout_s: float) -> ProcessInstance:
        return ProcessInstance(python, task, opt, client, handler, memory_mb, cpus, timeout_s,
                               prefix, check_imports, environment)

    return Deployable("zip", str(path), arch, runtime, sample, make, layers=len(zips) - 1)


def open_image(ref: str, sample: Path | None = None) -> Deployable:
    path = Path(ref)
    if path.is_file() and tarfile.is_tarfile(path):
        from optimizer.image_tarball import locate, open_tarball

        with open_tarball(path) as tar:
            locate(tar, path)  # refuses a tarball that is not one image
        with path.open("rb") as f:
            images = docker_client.client().images.load(f)
        ref = images[0].tags[0] if images[0].tags else images[0].id
    ref = ref.removeprefix("docker://")
    from docker.errors import ImageNotFound


    try:
        arch = docker_client.client().images.get(ref).attrs.get("Architecture", "amd64")
    except ImageNotFound:
        raise BadInput(f"{ref}: no such file, folder, or image in the local Docker Engine")\
            from None
    if sample is None and path.is_file():
        sample = path.parent / "sample-event.json"

    def make(memory_mb: int, cpus: float, timeout_s: float) -> ContainerInstance:
        return ContainerInstance(ref, memory_mb, cpus, timeout_s)

    return Deployable("image", ref, "aarch64" if arch == "arm64" else "x86_64", None,
                      sample if sample and sample.is_file() else None, make)


def open_deployable(target: str, work: Path, runtime: str | None = None,
                    handler: str | None = None,
                    environment: dict[str, str] | None = None) -> Deployable:
    """`environment`: the function's variables (zip packages)."""
    path = Path(target)
    if target.startswith("docker://") or (path.is_file() and path.suffix == ".tar"):
        return open_image(target)
    if path.is_dir() and (image := built_image(path)):
        sample = path / "package" / "sample-event.json"
        return open_image(image, sample if sample.is_file() else None)
    if path.exists():
        return open_zip(path, work, runtime, handler, environment=environment)
    return open_image(target)
