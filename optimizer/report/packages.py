"""One formatting of package records for the markdown report and the terminal."""

from __future__ import annotations

from typing import Any

from optimizer.package.sizes import MIB, mib

COLUMNS = ("package", "kind", "zipped / tarball MiB", "unpacked MiB", "limits", "proof")


def _mb(n: int | None) -> str:
    return "-" if n is None else f"{n / MIB:,.2f}"


def _limits(rec: dict, compact: bool) -> str:
    rows = rec.get("limits", [])
    if not rows:
        return "-"
    if compact and all(x["ok"] for x in rows):
        return "ok"
    return "; ".join(f"{'ok' if x['ok'] else 'OVER'} {x['what']} "
                     + (f"{x['size']}/{x['limit']}" if x["what"] == "layers"
                        else f"{x['size'] / x['limit']:.0%}") for x in rows)


def _proof(rec: dict, compact: bool) -> str:
    p = rec.get("proof")
    if rec["kind"] == "layer":
        return "with function.zip"
    if not p:
        return "not run"
    if "skipped" in p:
        return f"skipped: {p['skipped']}"
    how = f"Python {p['python']}" if "python" in p else "docker run + Runtime API"
    emu = p.get("isa") or {}
    cpu = (f"; {emu['emulator'].split(' -cpu ')[-1]} ok" if "emulator" in emu
           else "; ISA not proved" if emu else "")
    if compact:
        return f"ok ({how}{cpu})"
    isa_text = (f"; same answer under {emu['emulator']} ({emu['seconds']} s)" if "emulator" in emu
                else f"; ISA not proved: {emu['skipped']}" if emu else "")
    return (f"{how}: '{p['label']}' ({p['score']:.3f}) for a '{p['expected']}' image; "
            f"bad request -> {p['bad_request_status']}{isa_text}")


def rows(report: dict[str, Any], compact: bool = False) -> list[tuple[str, ...]]:
    out = []
    for rec in report.get("packages", []):
        if "refused" in rec:
            out.append((rec["kind"], "refused", "-", _mb(rec["unzipped_bytes"]),
                        "OVER (see note)" if compact else rec["refused"], "-"))
            continue
        name = rec.get("file") or rec.get("ref", "?")
        packed = rec.get("zipped_bytes", rec.get("tarball_bytes"))
        unpacked = rec.get("unzipped_bytes", rec.get("uncompressed_bytes"))
        out.append((name, rec["kind"], _mb(packed), _mb(unpacked), _limits(rec, compact),
                    _proof(rec, compact)))
    return out


def digests(report: dict[str, Any]) -> list[str]:
    out = []
    for rec in report.get("packages", []):
        name = rec.get("file") or rec.get("ref")
        if rec.get("sha256"):
            out.append(f"{name}: sha256 {rec['sha256']}")
        if rec.get("config_digest"):
            out.append(f"{name}: image ID {rec['config_digest']}, manifest "
                       f"{rec['manifest_digest']}")
        if rec.get("id") and rec["kind"] == "image":
            out.append(f"{name}: image ID {rec['id']} (engine build; not reproducible)")
        if slim := rec.get("slim"):
            out.append(f"{name}: dependencies slimmed {mib(slim['dependencies_before'])} -> "
                       f"{mib(slim['dependencies_after'])} unpacked; function "
                       f"{mib(slim['function_bytes'])}")
    return out


def slim_table(report: dict[str, Any]) -> list[str]:
    """Each dependency's unpacked size before and after slimming, the rules that removed the
    most, and the bytecode added: where a package's megabytes went."""
    rec = next((p for p in report.get("packages", []) if p.get("slim")), None)
    if rec is None:
        return []
    slim = rec["slim"]
    lines = ["", "Dependencies by distribution, unpacked (MiB):", "",
             "| distribution | before | after |", "|---|---:|---:|"]
    for dist, size in sorted(slim["by_distribution"].items(), key=lambda kv: -kv[1]["before"]):
        lines.append(f"| {dist} | {size['before'] / MIB:.2f} | {size['after'] / MIB:.2f} |")
    lines.append(f"| **total** | {slim['dependencies_before'] / MIB:.2f} | "
                 f"{slim['dependencies_after'] / MIB:.2f} |")
    lines += [""] + [f"- removed {b / MIB:.2f} MiB: {rule}"
                     for rule, b in list(slim["removed_by_rule"].items())[:8]]
    if (pyc := rec.get("bytecode")) and "pyc_files" in pyc:
        lines.append(f"- added {pyc['pyc_bytes'] / MIB:.2f} MiB of bytecode: "
                     f"{pyc['pyc_files']} modules, {pyc['selected']}")
    elif pyc:
        lines.append(f"- no bytecode: {pyc['skipped']}")
    return lines


def proof_gaps(r: dict[str, Any]) -> list[str]:
    """What the build could not prove, each with the reason (which names what to install):
    a package not run on the target's CPU, a compared target not timed."""
    gaps = []
    for rec in r.get("packages", []):
        proof = rec.get("proof") or {}
        name = rec.get("file") or rec.get("ref") or rec["kind"]
        if "skipped" in proof:
            gaps.append(f"{name} was not run: {proof['skipped']}")
        elif "skipped" in (proof.get("isa") or {}):
            gaps.append(f"{name} was not run on the {r['target']['name']} target's CPU "
                        f"({r['target']['isa']}): {proof['isa']['skipped']}")
    for target, t in (r.get("runtimes") or {}).get("targets", {}).items():
        if str(t.get("timing", "")).startswith("not timed"):
            gaps.append(f"runtimes on {target} were not timed: "
                        f"{t['timing'].removeprefix('not timed: ')}")
    return gaps

