"""The dataset a recipe names, by its kind."""

from __future__ import annotations

from optimizer.data import digits, fashion_mnist, folder, npz
from optimizer.data.dataset import Dataset

LOADERS = {"sklearn-digits": digits.load, "folder": folder.load, "npz": npz.load,
           "fashion-mnist": fashion_mnist.load}


def load_dataset(cfg) -> Dataset:
    return LOADERS[cfg.kind](cfg)
