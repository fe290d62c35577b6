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
import subprocess
from dataclasses import dataclass
from pathlib import Path

from optimizer import targets
from optimizer.cache import envs_root, file_lock
from optimizer.errors import PackageFailed
from optimizer.package.baseimage import DEFAULT_MIRROR, SUITE_PYTHON

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
    if arch == platform.machine():
        return Emulator(path, spec[1])
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
    return (f"no {targets.TARGETS[target].arch} Python {python} to emulate: Debian ships "
            + ", ".join(f"{v} in {s}" for v, s in SUITE_FOR_PYTHON.items()))


# a foreign architecture's Python comes from Debian; these are the versions it has
SUITE_FOR_PYTHON = {python: suite for suite, (python, _) in SUITE_PYTHON.items()}
DEB_ARCH = {"aarch64": "arm64"}
# ONNX Runtime reads /proc/cpuinfo on arm64 and crashes on an x86 one; qemu -L serves this
ARM64_CPUINFO = """processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm \
lrcpc dcpop asimddp ssbs
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x3
CPU part\t: 0xd0c
CPU revision\t: 1

"""


def sysroot(arch: str, suite: str, log=print) -> Path:
    """A Debian `suite` root for `arch` with python3 unpacked, made once under the envs folder.

    `debootstrap --foreign` only downloads and unpacks the base (its second stage would need
    to run foreign binaries), so the python3 packages it fetched are unpacked here with
    dpkg-deb. Nothing is configured; qemu-user runs the interpreter straight from the tree.
    """
    root = envs_root() / f"sysroot-{DEB_ARCH.get(arch, arch)}-{suite}"
    marker = root / ".optimizer-ready"
    if marker.is_file():
        return root
    if shutil.which("debootstrap") is None or shutil.which("dpkg-deb") is None:
        raise PackageFailed("debootstrap is not installed (apt-get install debootstrap); it "
                            f"makes the {arch} Python the emulated proof runs")
    with file_lock(root.with_name(root.name + ".lock")):
        if marker.is_file():
            return root
        shutil.rmtree(root, ignore_errors=True)
        log(f"making a {suite} {arch} root with Python for qemu (once) in {root}")
        proc = subprocess.run(["debootstrap", f"--arch={DEB_ARCH.get(arch, arch)}", "--foreign",
                               "--variant=minbase", "--include=python3", suite, str(root),
                               DEFAULT_MIRROR], capture_output=True, text=True)
        if proc.returncode != 0:
            shutil.rmtree(root, ignore_errors=True)
            raise PackageFailed(f"debootstrap {suite} {arch} failed: "
                                f"{proc.stderr.strip()[-400:]}")
        for deb in sorted((root / "var/cache/apt/archives").glob("*.deb")):
            subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
        if arch == "aarch64":
            (root / "proc").mkdir(exist_ok=True)
            (root / "proc" / "cpuinfo").write_text(ARM64_CPUINFO)
        shutil.rmtree(root / "var/cache/apt/archives", ignore_errors=True)
        marker.write_text(suite)
    return root


def check_signal(returncode: int, target: str, what: str) -> None:
    """A process killed by SIGILL used an instruction the target lacks: say which target."""
    if returncode == -signal.SIGILL:
        t = targets.TARGETS[target]
        raise PackageFailed(
            f"{what} died with SIGILL (illegal instruction) under {EMULATORS[target][0]} -cpu "
            f"{t.cpu}: it uses an instruction the {t.name} target ({t.isa}, {t.cpu}) does not "
            "have, and would crash the same way on Lambda")
