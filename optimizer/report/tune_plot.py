"""`optimizer tune` as an HTML page: duration and cost against memory in one chart (as
AWS Lambda Power Tuning draws them), cold start beside it, and the table."""

from __future__ import annotations

import html
from typing import Any

from optimizer.lambda_local.session import INIT_PARTS
from optimizer.report.plot import figure, svg

DURATION, COST, INIT = "#1f77b4", "#d62728", "#2ca02c"


def _init_bars(ax: Any, xs: list[int], rows: list[dict[str, Any]]) -> None:
    """Stacked by the handler's OPTIMIZER_INIT parts where it logged them, else one bar."""
    if not all(r.get("init_breakdown") for r in rows):
        ax.bar(xs, [r["init_ms"] or 0 for r in rows], color=INIT, width=0.5,
               label="Init Duration")
        return
    bottom = [0.0] * len(rows)
    colors = ("#8c564b", "#9467bd", "#e377c2", "#2ca02c", "#bcbd22", "#17becf", "#c7c7c7")
    for (key, label), color in zip(INIT_PARTS, colors, strict=True):
        values = [r["init_breakdown"].get(key) or 0.0 for r in rows]
        ax.bar(xs, values, bottom=bottom, color=color, width=0.5, label=label)
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]


def _charts(doc: dict[str, Any]) -> str:
    from matplotlib.ticker import MaxNLocator

    rows = [r for r in doc["rows"] if r.get("mean_ms") is not None]
    if not rows:
        return "<p>no memory size ran without errors: nothing to draw</p>"
    xs = list(range(len(rows)))
    labels = [f"{r['memory_mb']}\n{r['vcpus']:.2g} vCPU" for r in rows]
    rec = doc.get("recommended_memory_mb")
    with figure(11, 4.2, ncols=2) as (fig, (left, right)):
        left.plot(xs, [r["mean_ms"] for r in rows], "o-", color=DURATION, label="mean (warm)")
        left.plot(xs, [r["p95_ms"] for r in rows], "o:", color=DURATION, alpha=0.6,
                  label="p95 (warm)")
        left.set_ylabel("duration per request, ms", color=DURATION)
        left.set_ylim(bottom=0)
        left.yaxis.set_major_locator(MaxNLocator(nbins=6))
        cost = left.twinx()
        priced = [(x, r["cost_per_million_usd"]) for x, r in zip(xs, rows, strict=True)
                  if r.get("cost_per_million_usd") is not None]
        cost.plot([x for x, _ in priced], [c for _, c in priced], "s--", color=COST,
                  label="cost")
        cost.set_ylabel("USD per 1 million requests", color=COST)
        cost.set_ylim(bottom=0)
        cost.yaxis.set_major_locator(MaxNLocator(nbins=6))
        cost.grid(False)
        _init_bars(right, xs, rows)
        right.plot(xs, [r["cold_duration_ms"] for r in rows], "o-", color="#555",
                   label="first request after init")
        right.set_ylabel("ms")
        right.set_title("cold start: Init Duration by part (bars) and the first request")
        right.legend(loc="upper center", bbox_to_anchor=(0.5, -0.22), frameon=False, ncol=3,
                     fontsize="small")
        for ax in (left, right):
            ax.set_xticks(xs, labels)
            ax.set_xlabel("memory size, MB")
            if rec in [r["memory_mb"] for r in rows]:
                ax.axvline(xs[[r["memory_mb"] for r in rows].index(rec)], color="#999",
                           lw=6, alpha=0.25, zorder=0)
        handles = left.get_legend_handles_labels()[0] + cost.get_legend_handles_labels()[0]
        left.legend(handles, [h.get_label() for h in handles], loc="upper center",
                    bbox_to_anchor=(0.5, -0.22), frameon=False, ncol=3)
        left.set_title(f"duration and cost per 1M requests ({doc['invocations']} warm "
                       "invocations per size; shaded: recommended)")
        fig.tight_layout()
        return svg(fig)


def render(doc: dict[str, Any]) -> str:
    rows = doc["rows"]

    def cell(v: Any) -> str:
        return "-" if v is None else html.escape(str(v))

    table = "".join(
        "<tr>" + "".join(f"<td>{cell(r.get(k))}</td>" for k in (
            "memory_mb", "vcpus", "init_ms", "cold_duration_ms", "mean_ms", "p50_ms",
            "p95_ms", "max_memory_mb", "cost_per_million_usd")) + f"<td>{len(r['errors'])}</td>"
        "</tr>" for r in rows)
    return (
        "<!doctype html><meta charset='utf-8'><title>optimizer tune: "
        f"{html.escape(doc['package'])}</title>"
        "<style>body{font-family:sans-serif;max-width:1100px}td,th{padding:3px 8px}</style>"
        f"<h2>{html.escape(doc['package'])}: recommended {doc['recommended_memory_mb']} MB "
        f"({html.escape(doc['strategy'])})</h2>"
        f"<p>{html.escape(doc['host'].get('model', ''))}; caps: "
        f"{html.escape(rows[0]['cap_method'] if rows else '')}. Cost is USD per 1 million "
        "requests at the measured warm mean, billed per 1 ms, plus the request fee.</p>"
        + _charts(doc)
        + "<table border=1><tr><th>memory MB</th><th>vCPU</th><th>init ms</th>"
        "<th>first request ms</th><th>mean ms</th><th>p50 ms</th><th>p95 ms</th>"
        "<th>max memory MB</th><th>USD per 1M requests</th><th>errors</th></tr>"
        f"{table}</table>" + _init_table(rows) + _batch_section(doc))


def _batch_chart(doc: dict[str, Any]) -> str:
    rows = [r for r in doc["batch_rows"] if r.get("cost_per_million_images_usd") is not None]
    if not rows:
        return "<p>no batch size ran without errors: nothing to draw</p>"
    rec = doc.get("recommended") or {}
    with figure(11, 4.2, ncols=2) as (fig, (left, right)):
        for mb in sorted({r["memory_mb"] for r in rows}):
            mine = sorted((r for r in rows if r["memory_mb"] == mb), key=lambda r: r["batch"])
            xs = [r["batch"] for r in mine]
            left.plot(xs, [r["cost_per_million_images_usd"] for r in mine], "o-",
                      label=f"{mb} MB")
            right.plot(xs, [r["per_image_p50_ms"] for r in mine], "o-", label=f"{mb} MB")
        for ax, key, title in ((left, "cost_per_million_images_usd",
                                "USD per 1 million images (request charge, compute, cold "
                                "starts)"), (right, "per_image_p50_ms",
                                             "per-image p50, ms (invocation p50 / batch)")):
            ax.set_xscale("log")
            ax.set_xlabel("images per invocation")
            ax.set_ylim(bottom=0)
            ax.set_title(title, fontsize="medium")
            ax.legend(frameon=False, fontsize="small")
            if rec:
                ax.plot([rec["batch"]], [rec[key]], "*", color="#d62728", markersize=16,
                        zorder=5)
        fig.tight_layout()
        return svg(fig)


def _batch_section(doc: dict[str, Any]) -> str:
    if not doc.get("batch_rows"):
        return ""
    rec = doc.get("recommended")
    keys = ("memory_mb", "batch", "p50_ms", "per_image_p50_ms", "images_per_second",
            "cost_per_million_images_usd", "request_charge_share")
    body = "".join("<tr>" + "".join(
        f"<td>{'-' if r.get(k) is None else html.escape(str(r[k]))}</td>" for k in keys)
        + f"<td>{len(r['errors'])}</td></tr>" for r in doc["batch_rows"])
    head = (f"recommended: {rec['memory_mb']} MB with {rec['batch']} images per invocation, "
            f"${rec['cost_per_million_images_usd']} per 1M images"
            + (f" ({rec['cost_vs_batch_1']:.0%} of one image per invocation)"
               if rec.get("cost_vs_batch_1") else "") if rec else "no recommendation")
    return (f"<h3>Images per invocation ({html.escape(doc['event'])}): "
            f"{html.escape(head)}</h3>" + _batch_chart(doc)
            + "<table border=1><tr><th>memory MB</th><th>batch</th><th>invocation p50 ms"
            "</th><th>per-image p50 ms</th><th>images/s per instance</th><th>USD per 1M "
            "images</th><th>request charge share</th><th>errors</th></tr>" + body
            + "</table>")


def _init_table(rows: list[dict[str, Any]]) -> str:
    if not any(r.get("init_breakdown") for r in rows):
        return ""
    head = "".join(f"<th>{html.escape(label)}</th>" for _, label in INIT_PARTS)
    body = "".join(
        f"<tr><td>{r['memory_mb']}</td>" + "".join(
            f"<td>{'-' if (v := (r.get('init_breakdown') or {}).get(k)) is None else round(v)}"
            "</td>" for k, _ in INIT_PARTS) + "</tr>" for r in rows)
    return ("<h3>Init Duration by part, ms (the handler's OPTIMIZER_INIT line)</h3>"
            f"<table border=1><tr><th>memory MB</th>{head}</tr>{body}</table>")
