"""Function zip plus dependency layer zips, checked against the limits and proved to run:
natively at the target's memory size, and as the target's CPU under qemu."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from optimizer import targets
from optimizer.archive import files_under, write_zip
from optimizer.emulation import interpreters, qemu
from optimizer.emulation.qemu import Emulator, check_signal
from optimizer.errors import PackageFailed, PackageTooLarge
from optimizer.lambda_local.deployable import open_zip
from optimizer.lambda_local.run import run_events
from optimizer.model import sha256_file
from optimizer.package import bytecode, sizes
from optimizer.package import layers as layer_split
from optimizer.package.proof import (
    EMULATED_SAMPLES,
    Answers,
    Sample,
    check_proof,
    proof_events,
)

FUNCTION_ZIP = "function.zip"
LIMITS_INIT_S = targets.LIMITS.init_timeout_s


@dataclass
class ZipPlan:
    python: str
    arch: str
    memory_mb: int
    layers: int


def _entries(root: Path, prefix: str = "") -> list[tuple[str, Path]]:
    return [(prefix + name, p) for name, p in files_under(root)]


def write(function_dir: Path, deps_dir: Path, plan: ZipPlan, out: Path) -> list[Path]:
    """function.zip (handler and model, plus the dependencies when layers is 0) and
    layer-N.zip files with the dependencies under python/, as Lambda layers expect."""
    fn = _entries(function_dir)
    zips = []
    if plan.layers == 0:
        fn += _entries(deps_dir)
    else:
        for i, group in enumerate(layer_split.split(deps_dir, plan.layers), start=1):
            entries = []
            for top in group:
                if top.is_file():
                    entries.append((f"python/{top.name}", top))
                else:
                    entries += _entries(top, f"python/{top.name}/")
            path = out / f"layer-{i}.zip"
            write_zip(path, entries)
            zips.append(path)
    write_zip(out / FUNCTION_ZIP, fn)
    return [out / FUNCTION_ZIP, *zips]


def describe(zips: list[Path]) -> tuple[list[dict], list[sizes.Limit]]:
    parts = [sizes.inspect_zip(z) for z in zips]
    records = [{
        "kind": "zip" if z.name == FUNCTION_ZIP else "layer",
        "file": z.name,
        "zipped_bytes": p.zipped,
        "unzipped_bytes": p.unzipped,
        "files": p.files,
        "sha256": sha256_file(z),
        "largest": p.largest[:5],
    } for z, p in zip(zips, parts, strict=True)]
    return records, sizes.limits_for(parts)


def prove(zips: list[Path], plan: ZipPlan, events: list, emulate: Emulator | None = None,
          target: str | None = None) -> dict:
    """Unpack as Lambda does (/var/task, layers into /opt) and send `events` through the
    runtime client, as `optimizer invoke` would, at the plan's memory size; any module
    loaded from outside the package fails it. Under `emulate` nothing is capped and the
    limits are qemu's (15-90x slower)."""
    where = f"Python {plan.python}" + (f" under {emulate.describe()}" if emulate else "")
    timeout = 900.0 if emulate else 300.0
    with tempfile.TemporaryDirectory(prefix="optimizer-unzip-") as tmp:
        dep = open_zip(zips[0], Path(tmp), None, None, emulate=emulate, check_imports=True)
        instance = dep.make(plan.memory_mb, targets.vcpus(plan.memory_mb), timeout)
        try:
            return run_events(instance, events, plan.memory_mb, timeout,
                              f"the packaged handler ({where})",
                              init_limit_s=timeout if emulate else LIMITS_INIT_S)
        except PackageFailed:
            if emulate and target and instance.proc is not None:
                check_signal(instance.proc.returncode, target,
                             f"the packaged handler ({where})")
            raise


def _write_all(function_dir: Path, deps: Path, plan: ZipPlan,
               out: Path) -> tuple[list[Path], dict]:
    """The zips, with bytecode for what a cold start imports compiled by the runtime's
    Python (see bytecode.py); without that Python, without."""
    python = interpreters.find_python(plan.python)
    if python is None:
        return (write(function_dir, deps, plan, out),
                {"skipped": f"no Python {plan.python} here to compile bytecode with"})
    fn_stage, deps_stage = out / ".stage-function", out / ".stage-deps"
    bytecode.stage(function_dir, fn_stage)
    bytecode.stage(deps, deps_stage)
    try:
        pyc = bytecode.compile_tree(
            python, plan.python, {fn_stage: "/var/task",
                                  deps_stage: "/opt/python" if plan.layers else "/var/task"},
            native=interpreters.can_run(plan.arch))
        return write(fn_stage, deps_stage, plan, out), pyc
    finally:
        shutil.rmtree(fn_stage, ignore_errors=True)
        shutil.rmtree(deps_stage, ignore_errors=True)


def _check_limits(limits: list[sizes.Limit], plan: ZipPlan) -> None:
    over = [lim for lim in limits if not lim.ok]
    if over:
        hint = (" (spread the dependencies over more layers with package.zip.layers)"
                if plan.layers < targets.LIMITS.max_layers
                and any(lim.what.endswith(" zipped") for lim in over) else "")
        raise PackageTooLarge("; ".join(
            f"{lim.what}: {sizes.mib(lim.size)} ({lim.size:,} B) over the "
            f"{sizes.mib(lim.limit)} limit" for lim in over) + hint)


def _prove_isa(zips: list[Path], plan: ZipPlan, samples: list[Sample], answers: Answers,
               max_images: int, target: str,
               log: Callable[[str], None]) -> tuple[dict, dict | None]:
    """The same proof with the CPU the target promises, not the one this host has:
    (what to record under proof.isa, the full checked proof with its Python, or None)."""
    try:
        emu = qemu.emulator(target, plan.python, log=log)
    except PackageFailed as exc:  # no debootstrap or no mirror: say so, do not fail
        return {"skipped": str(exc)}, None
    if emu is None:
        return {"skipped": qemu.why_not(target, plan.python)}, None
    log(f"prove  zip under {emu.describe()} (the {target} target's ISA)")
    samples = samples[:EMULATED_SAMPLES]
    result = prove(zips, plan, proof_events(samples, max_images), emulate=emu, target=target)
    checked = check_proof(result["responses"], samples, max_images,
                          f"zip under {emu.describe()}", answers)
    return ({"emulator": emu.describe(), "label": checked["label"],
             "score": checked["score"], "seconds": result["seconds"]},
            {**checked, "python": result["python"]})


def make_and_prove(plan: ZipPlan, function_dir: Path, deps: Path, samples: list[Sample],
                   answers: Answers, max_images: int, target: str, out: Path,
                   log: Callable[[str], None]) -> dict:
    """Zips written to `out`, checked against the limits and proved: the cache entry's
    result (records, limits, proof, bytecode)."""
    zips, pyc = _write_all(function_dir, deps, plan, out)
    records, limits = describe(zips)
    _check_limits(limits, plan)
    here = interpreters.can_run(plan.arch) and interpreters.find_python(plan.python)
    if here:
        result = prove(zips, plan, proof_events(samples, max_images))
        proof = {**check_proof(result["responses"], samples, max_images, "zip", answers),
                 "python": result["python"], "init_ms": round(result["init_ms"], 1),
                 "init_breakdown": result["init_breakdown"], "caps": result["caps"]}
    emulated, checked = _prove_isa(zips, plan, samples, answers, max_images, target, log)
    if here:
        proof["isa"] = emulated
    elif checked:  # a foreign CPU, or no such Python here: the emulated run is the proof
        proof = {**checked, "isa": emulated}
    else:
        why = (f"no Python {plan.python} on this machine to run it (pyenv install "
               f"{plan.python})" if interpreters.can_run(plan.arch) else
               f"the package is for {plan.arch} and this machine cannot run it natively")
        proof = {"skipped": f"{why}; {emulated['skipped']}"}
    return {"records": records, "limits": [lim.__dict__ for lim in limits], "proof": proof,
            "proved": bool(here) or checked is not None, "bytecode": pyc}
