"""Random shift and zoom of NHWC batches in numpy, seeded per (epoch, batch).

Drawing from a generator keyed by the position in training, not from one stream, makes a
resumed run see exactly the batches an uninterrupted one would have seen.
"""

from __future__ import annotations

import numpy as np


def shift_zoom(x: np.ndarray, fraction: float, rng: np.random.Generator,
               fill: np.ndarray | float = 0.0) -> np.ndarray:
    """Each image moved by up to `fraction` of its size and scaled by 1 +- `fraction`.

    Nearest-neighbour sampling; pixels from outside the image take `fill`.
    """
    if fraction <= 0:
        return x
    n, h, w = x.shape[:3]
    scale = rng.uniform(1 - fraction, 1 + fraction, size=(n, 1))
    dy = rng.uniform(-fraction, fraction, size=(n, 1)) * h
    dx = rng.uniform(-fraction, fraction, size=(n, 1)) * w
    rows = np.rint((np.arange(h) - (h - 1) / 2) / scale + (h - 1) / 2 - dy).astype(np.int64)
    cols = np.rint((np.arange(w) - (w - 1) / 2) / scale + (w - 1) / 2 - dx).astype(np.int64)
    inside = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]
    out = x[np.arange(n)[:, None, None], np.clip(rows, 0, h - 1)[:, :, None],
            np.clip(cols, 0, w - 1)[:, None, :]]
    fill_values = np.broadcast_to(np.asarray(fill, dtype=x.dtype), (x.shape[-1],))
    return np.where(inside[..., None], out, fill_values).astype(x.dtype, copy=False)
