"""`optimizer tune` as an HTML page: duration and cost against memory, as inline SVG."""

from __future__ import annotations

import html

W, H, PAD = 640, 300, 50


def _polyline(points: list[tuple[float, float]], xs: tuple[float, float],
              ys: tuple[float, float], colour: str) -> str:
    def sx(x: float) -> float:
        return PAD + (x - xs[0]) / ((xs[1] - xs[0]) or 1) * (W - 2 * PAD)

    def sy(y: float) -> float:
        return H - PAD - (y - ys[0]) / ((ys[1] - ys[0]) or 1) * (H - 2 * PAD)

    pts = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in points)
    dots = "".join(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{colour}"/>'
                   for x, y in points)
    return f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{pts}"/>{dots}'


def _chart(title: str, rows: list[dict], key: str, unit: str, colour: str) -> str:
    points = [(r["memory_mb"], r[key]) for r in rows if r.get(key) is not None]
    if not points:
        return f"<p>{html.escape(title)}: no data</p>"
    xs = (min(p[0] for p in points), max(p[0] for p in points))
    ys = (0.0, max(p[1] for p in points) * 1.1)
    ticks = "".join(
        f'<text x="{PAD + (x - xs[0]) / ((xs[1] - xs[0]) or 1) * (W - 2 * PAD):.1f}" '
        f'y="{H - PAD + 18}" font-size="11" text-anchor="middle">{x}</text>'
        for x, _ in points)
    return (f'<h3>{html.escape(title)}</h3><svg width="{W}" height="{H}" '
            f'xmlns="http://www.w3.org/2000/svg"><rect width="{W}" height="{H}" fill="white"/>'
            f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - PAD}" y2="{H - PAD}" stroke="#888"/>'
            f'<line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{H - PAD}" stroke="#888"/>'
            f'<text x="{PAD - 6}" y="{PAD}" font-size="11" text-anchor="end">'
            f'{ys[1]:.4g}</text><text x="{W / 2}" y="{H - 8}" font-size="12" '
            f'text-anchor="middle">memory (MB)</text><text x="12" y="{PAD - 14}" '
            f'font-size="12">{html.escape(unit)}</text>{ticks}'
            f'{_polyline(points, xs, ys, colour)}</svg>')


def render(doc: dict) -> str:
    rows = doc["rows"]
    table = "".join(
        f"<tr><td>{r['memory_mb']}</td><td>{r['vcpus']}</td><td>{r['init_ms']}</td>"
        f"<td>{r['mean_ms']}</td><td>{r['p50_ms']}</td><td>{r['p95_ms']}</td><td>{r['max_memory_mb']}</td>"
        f"<td>{r['cost_per_million_usd']}</td><td>{len(r['errors'])}</td></tr>" for r in rows)
    return (
        "<!doctype html><meta charset='utf-8'><title>optimizer tune</title>"
        f"<h2>{html.escape(doc['package'])}: recommended {doc['recommended_memory_mb']} MB "
        f"({html.escape(doc['strategy'])})</h2>"
        f"<p>{html.escape(doc['host'].get('model', ''))}; caps: "
        f"{html.escape(rows[0]['cap_method'] if rows else '')}</p>"
        + _chart("mean duration (warm)", rows, "mean_ms", "ms", "#1f77b4")
        + _chart("init duration (cold start)", rows, "init_ms", "ms", "#2ca02c")
        + _chart("cost per 1M requests", rows, "cost_per_million_usd", "USD", "#d62728")
        + "<table border=1 cellpadding=4><tr><th>memory MB</th><th>vCPU</th><th>init ms</th>"
        "<th>mean ms</th><th>p50 ms</th><th>p95 ms</th><th>max memory MB</th><th>USD / 1M</th>"
        f"<th>errors</th></tr>{table}</table>")
