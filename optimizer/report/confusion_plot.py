"""confusion.svg: the shipped artifact's confusion matrix, rows normalised to 100%.

Off-diagonal cells are where a class is lost; with no labels the rows are the source's
answers, so the picture shows where the artifact disagrees with the model it came from.
Drawn with matplotlib through report/plot.py, so the same report gives the same bytes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from optimizer.report.plot import figure, svg

LABELS_UP_TO = 40  # above this, cells only: names would overlap


def render(r: dict[str, Any]) -> str | None:
    conf = r.get("confusion")
    if not conf or not conf.get("matrix"):
        return None
    m = np.asarray(conf["matrix"], dtype=np.float64)
    classes = conf["classes"]
    k = len(classes)
    rows = m / np.maximum(m.sum(axis=1, keepdims=True), 1)
    side = min(12.0, max(4.5, 0.42 * k + 2.5))
    with figure(side + 1.2, side) as (fig, ax):
        ax.grid(False)
        image = ax.imshow(100 * rows, cmap="Blues", vmin=0, vmax=100)
        if k <= LABELS_UP_TO:
            ax.set_xticks(range(k), labels=classes, rotation=60, ha="right",
                          rotation_mode="anchor")
            ax.set_yticks(range(k), labels=classes)
            if k <= 20:
                for i in range(k):
                    for j in range(k):
                        if m[i, j]:
                            ax.text(j, i, f"{int(m[i, j])}", ha="center", va="center",
                                    fontsize=7, color="white" if rows[i, j] > 0.5 else "black")
        ax.set_xlabel(f"{conf['artifact']}'s answer")
        ax.set_ylabel(conf["rows_are"])
        ax.set_title(f"{conf['artifact']}: {conf['title']}")
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="% of the row")
        fig.tight_layout()
        return svg(fig)
