"""The runtime comparison as report lines: one table per target, the winner named."""

from __future__ import annotations

from typing import Any

from optimizer.package.sizes import mib


def _cap(row: dict[str, Any]) -> str:
    cap = row.get("isa_cap")
    if not cap:
        return "-"
    if not cap["needed"]:
        return f"not needed (host ISA = target's); {cap['how']}"
    return f"{'applied' if cap['applied'] else 'NOT capped'}: {cap['how']}"


def markdown(section: dict[str, Any]) -> list[str]:
    lines = ["", "## Runtimes", "",
             f"Candidates: {', '.join(section['candidates'])}; each runtime's best pairing "
             f"below ({section['prefer']}, passing the gates, fitting a "
             f"{section['package_type']}). Package is the engine's slimmed wheels for the "
             "target plus the model and handler, unzipped. Every pairing is in report.json."]
    for target, t in section["targets"].items():
        w = t["winner"]
        lines += ["", f"### {target} ({t['isa']}); timing: {t['timing']}", "",
                  f"**Winner:** {w['runtime']} on `{w['artifact']}`: {w['p50_ms']} ms, "
                  f"{mib(w['package_bytes'])}" if w else
                  f"**Winner:** {winner_line(target, None, t['timing']).split(': ', 1)[1]}",
                  "", "| runtime | version | artifact | accuracy | p50 ms | package | fits | "
                  "ISA cap | why not |", "|---|---|---|---:|---:|---:|---|---|---|"]
        for r in t["best_per_runtime"]:
            acc = f"{r['accuracy']:.2f}%" if r.get("accuracy") is not None else "-"
            p50 = r["p50_ms"] if r.get("p50_ms") is not None else "-"
            size = ((">= " if r.get("package_bytes_lower_bound") else "")
                    + mib(r["package_bytes"])) if r.get("package_bytes") else "-"
            fits = "-" if "fits" not in r else "yes" if r["fits"] else "no"
            mark = " **(winner)**" if w and r["key"] == w["key"] else ""
            art = r["artifact"] if r.get("available") else "-"
            lines.append(f"| {r['runtime']}{mark} | {section['versions'].get(r['runtime']) or '-'}"
                         f" | {art} | {acc if r.get('available') else '-'} | {p50} | {size} | "
                         f"{fits} | {_cap(r)} | {r.get('why_not') or '-'} |")
    return lines


def winner_line(target: str, w: dict[str, Any] | None, timing: str = "") -> str:
    if w:
        return (f"runtime for {target}: {w['runtime']} on {w['artifact']} ({w['p50_ms']} ms, "
                f"{mib(w['package_bytes'])}, "
                f"{'native' if w.get('timing') == 'native' else 'emulated'})")
    if timing.startswith("not timed"):
        return f"runtime for {target}: none chosen, since nothing was timed: " + \
            timing.removeprefix("not timed: ")
    return f"runtime for {target}: none passed the gates and fits the package"


def console_lines(section: dict[str, Any]) -> list[str]:
    return [winner_line(target, t["winner"], t.get("timing", ""))
            for target, t in section["targets"].items()]
