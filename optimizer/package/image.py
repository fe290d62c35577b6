"""Container images from dockerfiles/: through the Docker Engine, and without one.

Both paths use the same template and the same build context (dependencies resolved for the
image's Python, the function folder), and each image is proved by starting it and sending
it a request through a local Runtime API.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from pathlib import Path

from optimizer import docker_client, targets
from optimizer.docker_client import has_image
from optimizer.errors import BadInput, PackageFailed, PackageTooLarge
from optimizer.lambda_local.instances import ContainerInstance
from optimizer.lambda_local.run import run_events
from optimizer.model import sha256_file, sha256_tree, size_bytes
from optimizer.package import oci, sizes, template
from optimizer.package.baseimage import save
from optimizer.package.dependencies import Dependencies
from optimizer.package.function import HANDLER_NAME
from optimizer.package.proof import Answers, Sample, check_proof, proof_events
from optimizer.recipe.schema import ImageConfig, Recipe

DEFAULT_BASE = {
    "lambda": "public.ecr.aws/lambda/python:{python}",
    "debian": "python:{python}-slim-bookworm",
}
EXTRA_REQUIREMENTS = {"lambda": (), "debian": ("awslambdaric",)}
PROBE = ("import sys, platform; "
         "print('%d.%d' % sys.version_info[:2], platform.libc_ver()[1], platform.machine())")


def _context(dest: Path, deps: Path, function_dir: Path, dockerfile: Path) -> Path:
    shutil.copytree(deps, dest / "deps")
    shutil.copytree(function_dir, dest / "function")
    shutil.copyfile(dockerfile, dest / "Dockerfile")
    return dest


def base_of(cfg: ImageConfig, runtime: str) -> str:
    return cfg.base or DEFAULT_BASE[cfg.template].format(
        python=cfg.python or targets.RUNTIMES[runtime].python)


def _pull_or_explain(client, base: str) -> None:
    if has_image(client, base):
        return
    from docker.errors import DockerException

    try:
        client.images.pull(base)
    except DockerException as exc:
        reason = " ".join(str(exc).split())
        raise BadInput(
            f"base image {base} is not in the local Docker Engine and pulling it failed "
            f"({reason[:300]}); build a local one with `optimizer base-image` (add "
            "--lambda-like for the lambda template) and set package.image.base to its tag"
        ) from None


def preflight(recipe: Recipe) -> None:
    """Before any step runs (and at `optimizer check`): the base an image build needs is
    there, so a missing one costs seconds, not a whole build."""
    cfg = recipe.package.image
    if cfg is None:
        return
    base = base_of(cfg, recipe.target.runtime)
    if cfg.engine or (cfg.tarball and cfg.base_tarball is None):
        try:
            client = docker_client.client()
        except PackageFailed as exc:
            raise BadInput(exc.detail) from None
        _pull_or_explain(client, base)


def _check_base(client, base: str, python: str, glibc: str, arch: str) -> None:
    try:
        _pull_or_explain(client, base)
    except BadInput as exc:
        raise PackageFailed(str(exc)) from None
    out = client.containers.run(base, ["-c", PROBE], entrypoint="python3", remove=True)
    have_py, have_glibc, machine = out.decode().split()
    if have_py != python or machine != arch or (
            tuple(map(int, have_glibc.split("."))) < tuple(map(int, glibc.split(".")))):
        raise PackageFailed(
            f"base image {base} has Python {have_py}, glibc {have_glibc} on {machine}; the "
            f"package was resolved for Python {python}, glibc {glibc} on {arch} "
            "(set package.image.python and package.image.glibc to match the base)")


def _limits(part: sizes.Part, ref: str) -> list[dict]:
    rows = sizes.limits_for([part])
    over = [r for r in rows if not r.ok]
    if over:
        raise PackageTooLarge("; ".join(f"image {ref}: {r.what} is {r.size:,} B, over "
                                        f"the {r.limit:,} B limit" for r in over))
    return [r.__dict__ for r in rows]


def _prove(ref: str, samples: list[Sample], answers: Answers, max_images: int,
           memory_mb: int) -> dict:
    """The image started as Lambda would start it, at the target's memory and CPU share, sent
    each proof request in turn."""
    timeout = 120.0
    instance = ContainerInstance(ref, memory_mb, targets.vcpus(memory_mb), timeout)
    run = run_events(instance, proof_events(samples, max_images), memory_mb, timeout,
                     f"image {ref}")
    return {**check_proof(run["responses"], samples, max_images, f"image {ref}", answers),
            "first_response_s": run["first_response_s"], "init_ms": run["init_ms"]}


def _engine_build(client, ctx: Path, ref: str, base: str, recipe: str) -> object:
    from docker.errors import BuildError

    try:
        img, _ = client.images.build(path=str(ctx), dockerfile="Dockerfile", tag=ref,
                                     buildargs={"BASE_IMAGE": base}, rm=True, forcerm=True,
                                     pull=False, labels={"optimizer.recipe": recipe})
    except BuildError as exc:
        lines = [ln for c in exc.build_log
                 for ln in str(c.get("stream", c.get("error", ""))).splitlines() if ln.strip()]
        raise PackageFailed(f"docker build of {ref} failed: {exc.msg}\n"
                            + "\n".join(lines[-12:])) from None
    return img


def _tarball(cfg: ImageConfig, client, base: str, dockerfile: Path, ctx: Path, arch: str,
             ref: str, work: Path) -> tuple[Path, dict, object]:
    """The daemonless image tarball: (file, what the writer reports, the engine client if
    one was needed for the base)."""
    base_tar = cfg.base_tarball
    if base_tar is None:
        client = client or docker_client.client()
        if not has_image(client, base):
            raise PackageFailed(f"the daemonless writer needs the base {base} as a tarball "
                                "(package.image.base_tarball), and no engine holds it")
        base_tar = save(base, work / "base.tar")
    tpl = template.parse(dockerfile, {"BASE_IMAGE": base})
    dest = work / "image.tar"
    return dest, oci.write(Path(base_tar), tpl, ctx, arch, ref, dest), client


def build(recipe: Recipe, cfg: ImageConfig, deps: Dependencies, ran: Callable[[str], None],
          function_dir: Path, kind: str, samples: list[Sample], answers: Answers, work: Path,
          files: list[Path]) -> list[dict]:
    """The image records (engine image, tarball), each proved; files to publish are added
    to `files`."""
    t = recipe.target
    runtime = targets.RUNTIMES[t.runtime]
    arch = targets.TARGETS[t.name].arch
    python, glibc = cfg.python or runtime.python, cfg.glibc or runtime.glibc
    dep = deps.resolve(kind, python, arch, glibc, EXTRA_REQUIREMENTS[cfg.template])
    dockerfile = template.template_path(cfg.template)
    base = base_of(cfg, t.runtime)
    ctx = _context(work / "image-context", dep / "deps", function_dir, dockerfile)
    version = hashlib.sha256((sha256_tree(ctx) + base).encode()).hexdigest()[:12]
    repo = cfg.tag or f"optimizer/{recipe.name}"
    max_images = recipe.package.max_images
    common = {"template": cfg.template, "base": base, "python": python, "glibc": glibc,
              "architecture": arch, "handler": HANDLER_NAME,
              "dependencies_bytes": size_bytes(ctx / "deps")}
    records, client = [], None
    if cfg.engine:
        client = docker_client.client()
        _check_base(client, base, python, glibc, arch)
        ref = f"{repo}:{version}"
        ran(f"image {ref} (Docker Engine, {cfg.template})")
        img = _engine_build(client, ctx, ref, base, recipe.name)
        part = sizes.inspect_engine_image(ref)
        records.append({
            "kind": "image", "ref": ref, "id": img.id, **common,
            "uncompressed_bytes": part.unzipped, "layers": part.layers,
            "config_bytes": part.config_bytes, "limits": _limits(part, ref),
            "proof": _prove(ref, samples, answers, max_images, t.memory_mb),
        })
    if cfg.tarball:
        ref = f"{repo}:tarball-{version}"
        ran("image tarball image.tar (daemonless)")
        dest, written, client = _tarball(cfg, client, base, dockerfile, ctx, arch, ref, work)
        part = sizes.inspect_image_tarball(dest)
        record = {"kind": "image-tarball", "file": "image.tar", "ref": ref, **common,
                  "sha256": sha256_file(dest), "tarball_bytes": dest.stat().st_size,
                  "uncompressed_bytes": part.unzipped, **written,
                  "limits": _limits(part, dest.name)}
        if client is None:
            try:
                client = docker_client.client()
            except PackageFailed as exc:
                record["proof"] = {"skipped": f"written without a daemon; none here to load "
                                              f"and run it ({exc})"}
        if client is not None:
            with dest.open("rb") as f:
                client.images.load(f)
            record["proof"] = {**_prove(ref, samples, answers, max_images, t.memory_mb),
                               "loaded_with": "docker load"}
        records.append(record)
        files.append(dest)
    return records
