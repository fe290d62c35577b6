"""A .npz with `x` (N,H,W[,C] uint8 or floats in 0..1) and optionally `y` (N,) labels.

`y` holds integer labels 0..K-1; without `y` the images have no labels and artifacts are
judged by their agreement with the source model.
"""

from __future__ import annotations

import zipfile

import numpy as np

from optimizer.data.classes import FROM_RECIPE, ordered
from optimizer.data.dataset import Dataset, make
from optimizer.errors import BadInput


def load(cfg) -> Dataset:
    path = cfg.path
    try:
        with np.load(path, allow_pickle=False) as z:
            if "x" not in z:
                raise BadInput(f"{path}: .npz needs an array 'x' (and 'y' for labels), has "
                               f"{sorted(z.files)}")
            x = z["x"]
            y = z["y"] if "y" in z and cfg.labels != "none" else None
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise BadInput(f"{path}: not a readable .npz ({exc})") from None
    if x.ndim not in (3, 4) or (x.ndim == 4 and x.shape[3] not in (1, 3, 4)):
        raise BadInput(f"{path}: x must be N,H,W or N,H,W,C with C 1, 3 or 4; got {x.shape}")
    if x.dtype != np.uint8:
        xf = x.astype(np.float32)
        if xf.min() < 0 or xf.max() > 1.0:
            raise BadInput(f"{path}: non-uint8 x must be in 0..1, got {xf.min()}..{xf.max()}")
        x = np.rint(xf * 255).astype(np.uint8)
    if y is None:
        return make(f"npz:{path.name}", list(x), None, list(cfg.classes or []), cfg.split,
                    classes_from=FROM_RECIPE if cfg.classes else "the model's outputs")
    if y.ndim != 1 or len(y) != len(x):
        raise BadInput(f"{path}: y must be 1-D with one label per image; got {y.shape}")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
        raise BadInput(f"{path}: y must hold non-negative integer labels")
    n_classes = int(y.max()) + 1
    if cfg.classes and len(cfg.classes) < n_classes:
        raise BadInput(f"{path}: labels go up to {n_classes - 1} but dataset.classes names only "
                       f"{len(cfg.classes)}")
    own = [str(i) for i in range(max(n_classes, len(cfg.classes or [])))]
    return ordered(f"npz:{path.name}", list(x), y.astype(np.int64), own, cfg, numbered=True,
                   default_order="the dataset (label value)")
