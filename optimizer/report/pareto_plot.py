"""pareto.svg: accuracy against latency and against size, every deployable artifact a dot.

Axes are logarithmic in cost (students are tens of times cheaper than teachers); colours
are the student an artifact descends from, the dashed line joins the front (whose points
are labelled with their step), and the shipped artifact is ringed.
"""

from __future__ import annotations

import html
import math
from typing import Any

from optimizer.report.students import front, quality, student_of

W, H, PAD = 560, 360, 56
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#17becf", "#bcbd22")
TEACHER = "#7f7f7f"


def _panel(rows: list[dict[str, Any]], all_rows: list[dict[str, Any]], cost: str, title: str,
           unit: str, ship: str | None, x0: float) -> str:
    def value(r: dict[str, Any]) -> float:
        v = r["validation"]
        return v["latency"]["p50_ms"] if cost == "latency" else v["size_bytes"] / 1e6

    pts = [(value(r), quality(r), r) for r in rows]
    lx = [math.log10(max(p[0], 1e-6)) for p in pts]
    xlo, xhi = min(lx) - 0.1, max(lx) + 0.1
    ylo = min(p[1] for p in pts)
    ylo, yhi = max(0.0, ylo - max(1.0, (100 - ylo) * 0.1)), 100.0

    def sx(x: float) -> float:
        return x0 + PAD + (math.log10(max(x, 1e-6)) - xlo) / (xhi - xlo) * (W - 2 * PAD)

    def sy(y: float) -> float:
        return H - PAD - (y - ylo) / ((yhi - ylo) or 1) * (H - 2 * PAD)

    colours: dict[str, str] = {}
    parts = [f'<text x="{x0 + W / 2}" y="20" font-size="14" text-anchor="middle">'
             f'{html.escape(title)}</text>',
             f'<line x1="{x0 + PAD}" y1="{H - PAD}" x2="{x0 + W - PAD}" y2="{H - PAD}" '
             f'stroke="#888"/><line x1="{x0 + PAD}" y1="{PAD}" x2="{x0 + PAD}" y2="{H - PAD}" '
             f'stroke="#888"/>',
             f'<text x="{x0 + W / 2}" y="{H - 14}" font-size="12" text-anchor="middle">'
             f'{html.escape(unit)} (log scale)</text>',
             f'<text x="{x0 + 14}" y="{H / 2}" font-size="12" text-anchor="middle" '
             f'transform="rotate(-90 {x0 + 14} {H / 2})">test accuracy %</text>']
    for k in range(math.floor(xlo), math.ceil(xhi) + 1):
        for m in (1, 2, 5):
            t = m * 10.0 ** k
            if xlo <= math.log10(t) <= xhi:
                parts.append(f'<text x="{sx(t):.1f}" y="{H - PAD + 16}" font-size="10" '
                             f'text-anchor="middle">{t:g}</text>')
    for y in (ylo, (ylo + yhi) / 2, yhi):
        parts.append(f'<text x="{x0 + PAD - 6}" y="{sy(y) + 4:.1f}" font-size="10" '
                     f'text-anchor="end">{y:.1f}</text>')
    on_front = set(front(rows, cost))
    line = sorted((p for p in pts if p[2]["name"] in on_front), key=lambda p: p[0])
    if len(line) > 1:
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y, _ in line)
        parts.append(f'<polyline fill="none" stroke="#444" stroke-dasharray="4 3" '
                     f'points="{path}"/>')
    labelled = 0
    for x, y, r in pts:
        student = student_of(r, all_rows)
        colour = TEACHER if student is None else colours.setdefault(
            student["name"], PALETTE[len(colours) % len(PALETTE)])
        ring = (f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="9" fill="none" stroke="black" '
                f'stroke-width="2"/>' if r["name"] == ship else "")
        parts.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="5" fill="{colour}">'
                     f'<title>{html.escape(r["name"])}: {y:.2f}%, {x:.4g} {unit}</title>'
                     f'</circle>{ring}')
        if r["name"] in on_front or r["name"] == ship:  # the rest: hover for the name
            dy = -8 if labelled % 2 == 0 else 16
            labelled += 1
            parts.append(f'<text x="{sx(x) + 8:.1f}" y="{sy(y) + dy:.1f}" font-size="9">'
                         f'{html.escape(r["name"].split("@")[0])}</text>')
    legend = [("teacher", TEACHER), *colours.items()]
    for i, (name, colour) in enumerate(legend):
        ly = PAD + 4 + 14 * i
        parts.append(f'<circle cx="{x0 + W - PAD - 150}" cy="{ly}" r="4" fill="{colour}"/>'
                     f'<text x="{x0 + W - PAD - 142}" y="{ly + 3}" font-size="9">'
                     f'{html.escape(name)}</text>')
    return "".join(parts)


def render(report: dict[str, Any]) -> str | None:
    """None when there is nothing to trade off (fewer than two deployable artifacts)."""
    rows = report["artifacts"]
    deployable = [r for r in rows if r["candidate"]]
    if len(deployable) < 2:
        return None
    ship = report.get("ship")
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{2 * W}" height="{H}" '
            f'font-family="sans-serif"><rect width="{2 * W}" height="{H}" fill="white"/>'
            + _panel(deployable, rows, "latency", "accuracy vs batch-1 latency", "p50 ms",
                     ship, 0)
            + _panel(deployable, rows, "size", "accuracy vs size", "MB", ship, W)
            + "</svg>\n")
