"""Datasets as uint8 images plus labels, with deterministic stratified splits.

Labels are indices into `classes`, which is the model's output order once the build has
reconciled the two; -1 marks an image without a label (a dataset is labelled throughout or
not at all).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field

import numpy as np

from optimizer.preprocess_spec import Preprocess, apply

SPLITS = ("train", "val", "test")
UNLABELED = -1


@dataclass
class Dataset:
    name: str
    images: list[np.ndarray]
    labels: np.ndarray
    classes: list[str]
    splits: dict[str, np.ndarray]
    digest: str
    # where the class order came from, for the report and for error messages
    classes_from: str = "the dataset"
    # the classes are numbers (digits, npz labels), so a model's own names may rename them
    numbered: bool = False
    _prepared: dict[tuple[str, str, int | None], np.ndarray] = field(
        default_factory=dict, repr=False)

    def indices(self, split: str, limit: int | None = None) -> np.ndarray:
        idx = self.splits[split]
        return idx if limit is None else idx[:limit]

    def labels_of(self, split: str, limit: int | None = None) -> np.ndarray:
        return self.labels[self.indices(split, limit)]

    @property
    def labeled(self) -> bool:
        return bool(len(self.labels)) and bool((self.labels >= 0).all())


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
    name: str, images: list[np.ndarray], labels: np.ndarray | None, classes: list[str],
    split_cfg, splits: dict[str, np.ndarray] | None = None, classes_from: str = "the dataset",
) -> Dataset:
    """A Dataset with a content digest; splits are stratified from `split_cfg` unless given
    (without labels they are a seeded random split). `labels` None: none of the images has
    one."""
    labels = (np.full(len(images), UNLABELED, dtype=np.int64) if labels is None
              else np.asarray(labels, dtype=np.int64))
    h = hashlib.sha256()
    for img in images:
        h.update(str(img.shape).encode())
        h.update(np.ascontiguousarray(img).tobytes())
    h.update(labels.tobytes())
    if splits is None:
        splits = split_indices(labels, split_cfg.test, split_cfg.val, split_cfg.seed)
    h.update(json.dumps({"classes": classes}).encode())
    for s in SPLITS:
        h.update(splits[s].tobytes())
    return Dataset(name, images, labels, classes, splits, h.hexdigest(), classes_from)


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
