"""scikit-learn's digits: 1,797 8x8 images that ship inside the wheel, so no download."""

from __future__ import annotations

import numpy as np

from optimizer.data.classes import ordered
from optimizer.data.dataset import Dataset

CLASSES = [str(c) for c in range(10)]


def load(cfg) -> Dataset:
    from sklearn.datasets import load_digits

    d = load_digits()
    # pixel values are 0..16; stretch to 0..255 so preprocessing sees ordinary 8-bit images
    imgs = np.clip(np.rint(d.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    return ordered("sklearn-digits", list(imgs), d.target.astype(np.int64), CLASSES, cfg,
                   numbered=True, default_order="the dataset (digit value)")
