"""Proof that an artifact runs on the target's instruction set, under qemu-user.

A build machine with AVX-512 happily runs code that dies with "illegal instruction" on
Lambda, which promises AVX2 on x86_64 and Neoverse N1 on arm64. qemu-user emulating the
target CPU (`qemu-x86_64 -cpu Haswell`) reports the CPUID of that CPU, so libraries that
dispatch on CPUID pick the target's kernels, and an instruction the CPU lacks raises
SIGILL. QEMU 7.2 cannot emulate AVX-512 at all, so the opt-in AVX-512 target is proved only
natively, on a host that has it.
"""

from __future__ import annotations

import platform
import shutil
import signal
from dataclasses import dataclass
from pathlib import Path

from optimizer import targets
from optimizer.emulation.debian import SUITE_FOR_PYTHON, sysroot
from optimizer.emulation.interpreters import find_python
from optimizer.errors import PackageFailed

# target name -> (qemu-user binary, -cpu model); None: no emulation can prove it
EMULATORS: dict[str, tuple[str, str] | None] = {
    "x86_64": ("qemu-x86_64", "Haswell"),
    "x86_64-avx512": None,
    "arm64": ("qemu-aarch64", "neoverse-n1"),
}


@dataclass(frozen=True)
class Emulator:
    binary: str
    cpu: str
    # for a foreign architecture: a Debian root with that architecture's Python in it
    sysroot: Path | None = None
    python: Path | None = None

    def prefix(self) -> list[str]:
        return [self.binary, "-cpu", self.cpu, *(["-L", str(self.sysroot)]
                                                 if self.sysroot else [])]

    def describe(self) -> str:
        return f"{Path(self.binary).name} -cpu {self.cpu}"


def emulator(target: str, python: str | None = None, log=print) -> Emulator | None:
    """The emulator for a target, or None where there is none or it is not installed.

    A foreign target also needs an interpreter of the runtime's Python `python` built for
    it; that comes from a Debian root made once (see sysroot), or there is no emulator.
    """
    spec = EMULATORS.get(target)
    if spec is None or (path := shutil.which(spec[0])) is None:
        return None
    arch = targets.TARGETS[target].arch
    if arch == platform.machine():  # this machine's own Python of that version, emulated
        return Emulator(path, spec[1]) if python is None or find_python(python) else None
    if python is None or python not in SUITE_FOR_PYTHON:
        return None
    root = sysroot(arch, SUITE_FOR_PYTHON[python], log)
    return Emulator(path, spec[1], root, root / "usr" / "bin" / f"python{python}")


def provers(target: str) -> dict[str, str | None]:
    """The tools an emulated proof needs and where they are (None: missing). Part of the
    cache key of a proof, so a rerun after installing them proves instead of reusing
    "skipped"."""
    spec = EMULATORS.get(target)
    tools = [spec[0]] if spec else []
    if targets.TARGETS[target].arch != platform.machine():
        tools += ["debootstrap", "dpkg-deb"]
    return {t: shutil.which(t) for t in tools}


def why_not(target: str, python: str | None = None) -> str:
    if EMULATORS.get(target) is None:
        return f"qemu cannot emulate {targets.TARGETS[target].isa}; prove it on such a host"
    if shutil.which(EMULATORS[target][0]) is None:
        return f"{EMULATORS[target][0]} is not installed (Debian: apt-get install qemu-user)"
    if targets.TARGETS[target].arch == platform.machine():
        return f"no Python {python} here to run under {EMULATORS[target][0]}"
    return (f"no {targets.TARGETS[target].arch} Python {python} to emulate: Debian ships "
            + ", ".join(f"{v} in {s}" for v, s in SUITE_FOR_PYTHON.items()))


def check_signal(returncode: int, target: str, what: str) -> None:
    """A process killed by SIGILL used an instruction the target lacks: say which target."""
    if returncode == -signal.SIGILL:
        t = targets.TARGETS[target]
        raise PackageFailed(
            f"{what} died with SIGILL (illegal instruction) under {EMULATORS[target][0]} -cpu "
            f"{t.cpu}: it uses an instruction the {t.name} target ({t.isa}, {t.cpu}) does not "
            "have, and would crash the same way on Lambda")
