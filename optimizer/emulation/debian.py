"""Debian as the source of foreign interpreters and base images: suites, their Pythons, and a
root of another architecture with python3 unpacked, made once.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from optimizer.cache import envs_root, file_lock
from optimizer.errors import PackageFailed

DEFAULT_SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
# what the suite's python3 is, so the tag and the packages' wheels agree
SUITE_PYTHON = {"bookworm": ("3.11", "2.36"), "trixie": ("3.13", "2.41")}

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
