"""Every shared object in a package must suit the target: right machine, old enough glibc.

A wheel for the wrong architecture, or one linked against a newer glibc than the Lambda
runtime's, imports fine on the build machine and dies on Lambda. Reading the ELF headers
finds both at build time and names the file and the symbol.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile
from elftools.elf.gnuversions import GNUVerNeedSection, GNUVerSymSection
from elftools.elf.sections import SymbolTableSection

ELF_MACHINE = {"x86_64": "EM_X86_64", "aarch64": "EM_AARCH64"}


@dataclass
class ElfProblem:
    file: str
    problem: str

    def __str__(self) -> str:
        return f"{self.file}: {self.problem}"


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in text.split(".") if p.isdigit())


def is_elf(path: Path) -> bool:
    try:
        with path.open("rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


def needed(path: Path) -> list[str]:
    """DT_NEEDED entries: the libraries the dynamic loader must find for this file."""
    with path.open("rb") as f:
        dyn = ELFFile(f).get_section_by_name(".dynamic")
        return [t.needed for t in dyn.iter_tags() if t.entry.d_tag == "DT_NEEDED"] if dyn else []


def soname(path: Path) -> str | None:
    """DT_SONAME: the name other libraries' DT_NEEDED entries use for this one."""
    with path.open("rb") as f:
        dyn = ELFFile(f).get_section_by_name(".dynamic")
        names = [t.soname for t in dyn.iter_tags() if t.entry.d_tag == "DT_SONAME"] if dyn \
            else []
    return names[0] if names else None


def _glibc_versions(elf: ELFFile) -> dict[int, str]:
    """Version index -> GLIBC_x.y for every glibc version the file asks the loader for."""
    names: dict[int, str] = {}
    for sec in elf.iter_sections():
        if isinstance(sec, GNUVerNeedSection):
            for _, auxs in sec.iter_versions():
                for aux in auxs:
                    if aux.name.startswith("GLIBC_"):
                        names[aux.entry.vna_other] = aux.name
    return names


def _symbols_needing(elf: ELFFile, wanted: dict[int, str]) -> dict[str, list[str]]:
    """Imported symbols per version; read only when a version is too new (large files have
    hundreds of thousands of symbols)."""
    versym = next((s for s in elf.iter_sections() if isinstance(s, GNUVerSymSection)), None)
    dynsym = elf.get_section_by_name(".dynsym")
    out: dict[str, list[str]] = {v: [] for v in wanted.values()}
    if versym is None or not isinstance(dynsym, SymbolTableSection):
        return out
    for i, sym in enumerate(dynsym.iter_symbols()):
        ndx = versym.get_symbol(i).entry["ndx"]
        if isinstance(ndx, int) and sym.entry.st_shndx == "SHN_UNDEF" and \
                (name := wanted.get(ndx & 0x7FFF)):
            out[name].append(sym.name)
    return out


def check_file(path: Path, rel: str, arch: str, glibc: str) -> list[ElfProblem]:
    try:
        with path.open("rb") as f:
            elf = ELFFile(f)
            machine = elf["e_machine"]
            if machine != ELF_MACHINE[arch]:
                return [ElfProblem(rel, f"built for {machine}, the target is {arch} "
                                        f"({ELF_MACHINE[arch]})")]
            ceiling = _version(glibc)
            too_new = {i: v for i, v in _glibc_versions(elf).items()
                       if _version(v.removeprefix("GLIBC_")) > ceiling}
            if not too_new:
                return []
            return [
                ElfProblem(rel, f"needs {ver} (symbol {', '.join(sorted(syms)[:3]) or '?'}) "
                                f"but the runtime has glibc {glibc}")
                for ver, syms in sorted(_symbols_needing(elf, too_new).items())
            ]
    except ELFError as exc:
        return [ElfProblem(rel, f"unreadable ELF file ({exc})")]


def check_tree(root: Path, arch: str, glibc: str) -> tuple[int, list[ElfProblem]]:
    """(ELF files checked, problems) for every ELF file under root."""
    count, problems = 0, []
    for p in sorted(root.rglob("*")):
        if p.is_file() and not p.is_symlink() and is_elf(p):
            count += 1
            problems += check_file(p, p.relative_to(root).as_posix(), arch, glibc)
    return count, problems
