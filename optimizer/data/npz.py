"""A .npz with `x` (N,H,W[,C] uint8 or floats in 0..1) and `y` (N,) integer labels."""

from __future__ import annotations

import zipfile

import numpy as np

from optimizer.data import Dataset, make
from optimizer.errors import BadInput


def load(cfg) -> Dataset:
    path = cfg.path
    try:
        with np.load(path, allow_pickle=False) as z:
            if "x" not in z or "y" not in z:
                raise BadInput(f"{path}: .npz needs arrays 'x' and 'y', has {sorted(z.files)}")
            x, y = z["x"], z["y"]
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise BadInput(f"{path}: not a readable .npz ({exc})") from None
    if x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[3] not in (1, 3)):
        raise BadInput(f"{path}: x must be N,H,W or N,H,W,C with C 1 or 3; got {x.shape}")
    if y.ndim != 1 or len(y) != len(x):
        raise BadInput(f"{path}: y must be 1-D with one label per image; got {y.shape}")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
        raise BadInput(f"{path}: y must hold non-negative integer labels")
    if x.dtype != np.uint8:
        xf = x.astype(np.float32)
        if xf.min() < 0 or xf.max() > 1.0:
            raise BadInput(f"{path}: non-uint8 x must be in 0..1, got {xf.min()}..{xf.max()}")
        x = np.rint(xf * 255).astype(np.uint8)
    n_classes = int(y.max()) + 1
    classes = list(cfg.classes) if cfg.classes else [str(i) for i in range(n_classes)]
    if len(classes) < n_classes:
        raise BadInput(f"{path}: labels go up to {n_classes - 1} but only {len(classes)} "
                       "class names were given")
    return make(f"npz:{path.name}", list(x), y, classes, cfg.split)
