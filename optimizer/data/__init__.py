"""Datasets as uint8 images plus labels, with deterministic stratified splits."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np

from optimizer.preprocess import Preprocess, apply

SPLITS = ("train", "val", "test")


@dataclass
class Dataset:
    name: str
    images: list[np.ndarray]
    labels: np.ndarray
    classes: list[str]
    splits: dict[str, np.ndarray]
    digest: str
    _prepared: dict[tuple[str, str, int | None], np.ndarray] = field(
        default_factory=dict, repr=False)

    def indices(self, split: str, limit: int | None = None) -> np.ndarray:
        idx = self.splits[split]
        return idx if limit is None else idx[:limit]

    def labels_of(self, split: str, limit: int | None = None) -> np.ndarray:
        return self.labels[self.indices(split, limit)]


def split_indices(labels: np.ndarray, test: float, val: float, seed: int) -> dict[str, np.ndarray]:
    """Stratified, seeded: each class contributes the same fractions to every split."""
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        n_test = round(len(idx) * test)
        n_val = round(len(idx) * val)
        parts["test"].append(idx[:n_test])
        parts["val"].append(idx[n_test : n_test + n_val])
        parts["train"].append(idx[n_test + n_val :])
    # shuffle across classes so "first N" of a split is a fair sample
    return {s: rng.permutation(np.concatenate(p)).astype(np.int64) for s, p in parts.items()}


def make(
    name: str, images: list[np.ndarray], labels: np.ndarray, classes: list[str], split_cfg,
    splits: dict[str, np.ndarray] | None = None,
) -> Dataset:
    """A Dataset with a content digest; splits are stratified from `split_cfg` unless given."""
    labels = np.asarray(labels, dtype=np.int64)
    h = hashlib.sha256()
    for img in images:
        h.update(str(img.shape).encode())
        h.update(np.ascontiguousarray(img).tobytes())
    h.update(labels.tobytes())
    if splits is None:
        splits = split_indices(labels, split_cfg.test, split_cfg.val, split_cfg.seed)
    h.update(json.dumps({"classes": classes, "split": split_cfg.model_dump()}).encode())
    for s in SPLITS:
        h.update(splits[s].tobytes())
    return Dataset(name, images, labels, classes, splits, h.hexdigest())


def prepared(
    ds: Dataset, split: str, spec: Preprocess, limit: int | None = None
) -> np.ndarray:
    """Model-ready float32 batch of a split's first `limit` images, memoised.

    Only what is asked for is converted: a calibration set of 256 from a 54,000-image split
    must not cost gigabytes.
    """
    key = (split, spec.model_dump_json())
    whole = ds._prepared.get((*key, None))
    if whole is not None:
        return whole if limit is None else whole[:limit]
    if (*key, limit) not in ds._prepared:
        ds._prepared[(*key, limit)] = apply([ds.images[i] for i in ds.indices(split, limit)], spec)
    return ds._prepared[(*key, limit)]


def load_dataset(cfg) -> Dataset:
    from optimizer.data import digits, fashion_mnist, folder, npz

    loaders = {"sklearn-digits": digits.load, "folder": folder.load, "npz": npz.load,
               "fashion-mnist": fashion_mnist.load}
    return loaders[cfg.kind](cfg)
