"""ISA proof: qemu-user as the target's CPU catches code the target cannot run.

Two tiny C programs, one using an AVX-512 instruction and one using AVX2, are run under
`qemu-x86_64 -cpu Haswell` (what x86_64 Lambda promises). The AVX-512 one must die with
SIGILL and the checker must name the target; the AVX2 one must run.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from optimizer.emulation import qemu as isa
from optimizer.errors import PackageFailed

PROGRAM = """
int main(void) {
    __asm__ volatile("%s" ::: "xmm0");
    return 0;
}
"""
INSTRUCTIONS = {"avx512": "vpxord %%zmm0, %%zmm0, %%zmm0",
                "avx2": "vpxor %%ymm0, %%ymm0, %%ymm0"}

pytestmark = [
    pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc is not installed"),
    pytest.mark.skipif(isa.emulator("x86_64") is None,
                       reason="qemu-x86_64 is not installed (apt-get install qemu-user)"),
]


def _compile(tmp_path: Path, name: str) -> Path:
    src = tmp_path / f"{name}.c"
    src.write_text(PROGRAM % INSTRUCTIONS[name])
    out = tmp_path / name
    subprocess.run(["gcc", "-O0", "-o", str(out), str(src)], check=True)
    return out


def test_avx512_binary_dies_with_sigill_under_haswell(tmp_path):
    emu = isa.emulator("x86_64")
    assert emu is not None
    avx512 = subprocess.run([*emu.prefix(), str(_compile(tmp_path, "avx512"))])
    assert avx512.returncode == -4  # SIGILL
    with pytest.raises(PackageFailed, match=r"SIGILL.*x86_64 target \(avx2, Haswell\)"):
        isa.check_signal(avx512.returncode, "x86_64", "the AVX-512 probe")
    avx2 = subprocess.run([*emu.prefix(), str(_compile(tmp_path, "avx2"))])
    assert avx2.returncode == 0
    isa.check_signal(avx2.returncode, "x86_64", "the AVX2 probe")  # no error


def test_targets_without_an_emulator_say_why():
    assert isa.emulator("x86_64-avx512") is None
    assert "cannot emulate avx512" in isa.why_not("x86_64-avx512")
