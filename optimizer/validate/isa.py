"""Proof that an artifact runs on the target's instruction set, under qemu-user.

A build machine with AVX-512 happily runs code that dies with "illegal instruction" on
Lambda, which promises AVX2 on x86_64 and Neoverse N1 on arm64. qemu-user emulating the
target CPU (`qemu-x86_64 -cpu Haswell`) reports the CPUID of that CPU, so libraries that
dispatch on CPUID pick the target's kernels, and an instruction the CPU lacks raises
SIGILL. QEMU 7.2 cannot emulate AVX-512 at all, so the opt-in AVX-512 target is proved only
natively, on a host that has it.
"""

from __future__ import annotations

import shutil
import signal
from dataclasses import dataclass
from pathlib import Path

from optimizer import targets
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

    def prefix(self) -> list[str]:
        return [self.binary, "-cpu", self.cpu]

    def describe(self) -> str:
        return f"{Path(self.binary).name} -cpu {self.cpu}"


def emulator(target: str) -> Emulator | None:
    """The emulator for a target, or None where there is none or it is not installed."""
    spec = EMULATORS.get(target)
    if spec is None:
        return None
    path = shutil.which(spec[0])
    return Emulator(path, spec[1]) if path else None


def why_not(target: str) -> str:
    if EMULATORS.get(target) is None:
        return f"qemu cannot emulate {targets.TARGETS[target].isa}; prove it on such a host"
    return f"{EMULATORS[target][0]} is not installed (Debian: apt-get install qemu-user)"


def check_signal(returncode: int, target: str, what: str) -> None:
    """A process killed by SIGILL used an instruction the target lacks: say which target."""
    if returncode == -signal.SIGILL:
        t = targets.TARGETS[target]
        raise PackageFailed(
            f"{what} died with SIGILL (illegal instruction) under {EMULATORS[target][0]} -cpu "
            f"{t.cpu}: it uses an instruction the {t.name} target ({t.isa}, {t.cpu}) does not "
            "have, and would crash the same way on Lambda")
