"""pareto.svg: accuracy (or, without labels, agreement) against latency and against size.

Every deployable artifact is a point, coloured by the student it descends from (the
teacher's own line is grey squares); the dashed line joins the Pareto front, whose points
are labelled with their step; the shipped artifact is ringed. Both x axes are logarithmic,
since students are tens of times cheaper than teachers.
"""

from __future__ import annotations

from typing import Any

from optimizer.report.plot import figure, log_axis, percent_axis, place_labels, svg
from optimizer.report.students import front, quality, student_of

PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
           "#17becf", "#bcbd22")
TEACHER = "#7f7f7f"


def _cost(row: dict[str, Any], cost: str) -> float:
    v = row["validation"]
    return max(v["latency"]["p50_ms"] if cost == "latency" else v["size_bytes"] / 1e6, 1e-6)


def _panel(ax, rows: list[dict[str, Any]], all_rows: list[dict[str, Any]], cost: str,
           ship: str | None, colours: dict[str, str], ylabel: str) -> None:
    groups: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(_group(r, all_rows, colours), []).append(r)
    for name, members in groups.items():
        xs = [_cost(r, cost) for r in members]
        ys = [quality(r) for r in members]
        teacher = name == TEACHER_LABEL
        ax.scatter(xs, ys, s=30 if teacher else 28, color=colours[name],
                   marker="s" if teacher else "o", zorder=3, label=name)
    on_front = set(front(rows, cost))
    line = sorted((r for r in rows if r["name"] in on_front), key=lambda r: _cost(r, cost))
    if len(line) > 1:
        ax.plot([_cost(r, cost) for r in line], [quality(r) for r in line], "--",
                color="#444", lw=1, zorder=2, label="Pareto front")
    for r in rows:
        if r["name"] == ship:
            ax.scatter([_cost(r, cost)], [quality(r)], s=170, facecolors="none",
                       edgecolors="black", linewidths=1.5, zorder=4, label="shipped")
    ax.set_xscale("log")
    xs = [_cost(r, cost) for r in rows]
    ax.set_xlim(min(xs) / 1.35, max(xs) * 1.35)
    log_axis(ax.xaxis, min(xs) / 1.35, max(xs) * 1.35)
    percent_axis(ax, [quality(r) for r in rows])
    ax.set_ylabel(ylabel)
    ax.set_xlabel("batch-1 p50 latency, ms (log scale)" if cost == "latency"
                  else "model size, MB (log scale)")
    ax.set_title("accuracy against latency" if cost == "latency" else "accuracy against size")
    ax.figure.canvas.draw()  # labels are placed against the final axis limits
    few = len(rows) <= 6  # label everything when there is room, else the front and ship
    place_labels(ax, [(_cost(r, cost), quality(r), r["name"].split("@")[0])
                      for r in rows if few or r["name"] in on_front or r["name"] == ship])


TEACHER_LABEL = "teacher (its own conversions)"


def _group(r: dict[str, Any], rows: list[dict[str, Any]], colours: dict[str, str]) -> str:
    """A student's line by the student's name; without students, each step its colour."""
    student = student_of(r, rows)
    if student is not None:
        return student["name"]
    if TEACHER_LABEL in colours:  # there are students: the teacher's line is one group
        return TEACHER_LABEL
    return f"{r['step']} ({r['kind']})"


def render(report: dict[str, Any]) -> str | None:
    """None when there is nothing to trade off (fewer than two deployable artifacts)."""
    rows = report["artifacts"]
    deployable = [r for r in rows if r["candidate"]]
    if len(deployable) < 2:
        return None
    colours: dict[str, str] = {}
    for r in deployable:
        if (student := student_of(r, rows)) is not None and student["name"] not in colours:
            colours[student["name"]] = PALETTE[len(colours) % len(PALETTE)]
    if colours:
        colours[TEACHER_LABEL] = TEACHER
    for r in deployable:
        colours.setdefault(_group(r, rows, colours), PALETTE[len(colours) % len(PALETTE)])
    labeled = rows[0]["validation"].get("accuracy") is not None
    ylabel = "test accuracy, %" if labeled else "top-1 agreement with the source, % (no labels)"
    with figure(11, 4.6, ncols=2) as (fig, axes):
        for ax, cost in zip(axes, ("latency", "size"), strict=True):
            _panel(ax, deployable, rows, cost, report.get("ship"), colours, ylabel)
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="lower center", ncol=min(4, len(labels)),
                   frameon=False, bbox_to_anchor=(0.5, -0.02))
        fig.suptitle(f"{report['recipe']['name']}: every deployable artifact, measured in "
                     "one run")
        fig.tight_layout(rect=(0, 0.08, 1, 0.96))
        return svg(fig)
