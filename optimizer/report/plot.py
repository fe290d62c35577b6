"""matplotlib, set up once for every picture the tool draws: SVG text, fixed fonts and hash
salt, no date, so the same report always gives the same bytes; and labels placed where they
overlap neither each other nor the points."""

from __future__ import annotations

import io
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

RC = {"svg.hashsalt": "optimizer", "svg.fonttype": "none", "font.family": "DejaVu Sans",
      "font.size": 9, "axes.titlesize": 10, "axes.grid": True, "grid.alpha": 0.3}
# where a label may go around its point, in points, tried in order
OFFSETS = [(7, 6), (7, -12), (-7, 6), (-7, -12), (0, 12), (0, -16), (12, 0), (-12, 0),
           (14, 16), (14, -22), (-14, 16), (-14, -22), (24, 4), (-24, 4)]


@contextmanager
def figure(width: float, height: float, **subplots: Any) -> Iterator[tuple[Any, Any]]:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    with plt.rc_context(RC):
        fig, axes = plt.subplots(figsize=(width, height), **subplots)
        try:
            yield fig, axes
        finally:
            plt.close(fig)


def svg(fig) -> str:
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None}, bbox_inches="tight")
    return buf.getvalue()


def place_labels(ax, points: list[tuple[float, float, str]]) -> None:
    """Annotate each (x, y, text) at the first offset whose box overlaps no other label, no
    point and stays inside the axes; a label set far from its point gets a thin line to it."""
    renderer = ax.figure.canvas.get_renderer()
    dots = [ax.transData.transform((x, y)) for x, y, _ in points]
    placed: list[Any] = []

    def note(x: float, y: float, text: str, dx: float, dy: float):
        far = abs(dx) + abs(dy) > 20
        return ax.annotate(text, (x, y), xytext=(dx, dy), textcoords="offset points",
                           fontsize=8, ha="left" if dx >= 0 else "right", va="center",
                           arrowprops={"arrowstyle": "-", "lw": 0.5, "color": "#666"}
                           if far else None)

    def clear(box) -> bool:
        return (not any(box.overlaps(b) for b in placed)
                and not any(box.x0 - 4 <= px <= box.x1 + 4 and box.y0 - 4 <= py <= box.y1 + 4
                            for px, py in dots)
                and ax.bbox.contains(box.x0, box.y0) and ax.bbox.contains(box.x1, box.y1))

    for x, y, text in points:
        offset = OFFSETS[-1]  # crowded: the farthest, with a leader line
        for dx, dy in OFFSETS:
            trial = note(x, y, text, dx, dy)
            box = trial.get_window_extent(renderer).expanded(1.05, 1.15)
            trial.remove()
            if clear(box):
                offset = (dx, dy)
                break
        final = note(x, y, text, *offset)
        placed.append(final.get_window_extent(renderer).expanded(1.05, 1.15))


def log_axis(axis, lo: float, hi: float) -> None:
    """A logarithmic axis whose ticks read as plain numbers: 1-2-5 steps over a wide range,
    every integer multiple over a narrow one (a single labelled tick tells nothing)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    subs = (1.0, 2.0, 5.0) if hi / max(lo, 1e-12) > 8 else (1.0, 1.5, 2.0, 3.0, 5.0, 7.0)
    axis.set_major_locator(LogLocator(subs=subs))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def percent_axis(ax, values: list[float]) -> None:
    """A percentage axis that never runs past 100 and shows a spread even when all agree."""
    from matplotlib.ticker import MaxNLocator

    lo, hi = min(values), max(values)
    pad = max((hi - lo) * 0.12, 0.25)
    ax.set_ylim(max(0.0, lo - pad), min(100.0 + pad * 0.15, hi + pad))
    ax.yaxis.set_major_locator(MaxNLocator(nbins=8))
