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

from optimizer.errors import BadInput
from optimizer.preprocess import Preprocess, apply

SPLITS = ("train", "val", "test")
UNLABELED = -1
FROM_RECIPE = "the recipe's dataset.classes"


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


def order_classes(own: list[str], requested: list[str] | None, numbered: bool,
                  where: str) -> tuple[list[str], np.ndarray]:
    """(classes in the model's output order, new label of each old one).

    `requested` lists the model's outputs: the dataset's own names in another order (a
    reorder), or, where the dataset only numbers its classes, new names for 0..K-1.
    """
    ident = np.arange(len(own))
    if requested is None:
        return list(own), ident
    if len(set(requested)) != len(requested):
        dup = sorted({c for c in requested if requested.count(c) > 1})
        raise BadInput(f"{where}: classes lists {dup} more than once")
    if set(requested) == set(own):
        return list(requested), np.asarray([requested.index(c) for c in own])
    if numbered and not set(requested) & set(own) and len(requested) >= len(own):
        return list(requested), ident
    missing = [c for c in own if c not in requested]
    extra = [c for c in requested if c not in own]
    raise BadInput(f"{where}: classes must name the dataset's {len(own)} classes in the "
                   f"model's output order; not listed: {missing or 'none'}; not classes of "
                   f"the dataset: {extra or 'none'}")


def ordered(name: str, images: list[np.ndarray], labels: np.ndarray, own: list[str], cfg,
            numbered: bool, default_order: str = "the dataset") -> Dataset:
    """A labelled dataset in the order `cfg.classes` asks for; its splits are drawn from the
    dataset's own numbering, so reordering classes never moves an image between splits."""
    classes, mapping = order_classes(own, cfg.classes, numbered, "dataset.classes")
    splits = split_indices(labels, cfg.split.test, cfg.split.val, cfg.split.seed)
    ds = make(name, images, mapping[labels], classes, cfg.split, splits=splits,
              classes_from=FROM_RECIPE if cfg.classes else default_order)
    ds.numbered = numbered and not cfg.classes
    return ds


def _first_difference(ours: list[str], model: list[str]) -> str:
    for i, (x, y) in enumerate(zip(ours, model, strict=False)):
        if x != y:
            return f"output {i} is '{x}' in dataset.classes but '{y}' in the model's labels"
    return f"dataset.classes names {len(ours)} classes, the model's labels {len(model)}"


def reconcile(ds: Dataset, names: list[str], where: str) -> Dataset:
    """The dataset in the order of the labels the model carries (`where` says whence).

    Classes the recipe lists must be those labels in that order; classes the dataset only
    implies (sorted folder names, numbers) are reordered by name, or, where they are only
    numbers, renamed; anything else is an error naming both lists.
    """
    if not ds.labeled:
        if ds.classes and ds.classes != names:
            raise BadInput(f"dataset.classes and the model's labels ({where}) differ: "
                           f"{_first_difference(ds.classes, names)}; remove dataset.classes "
                           "to answer with the model's labels")
        return relabel(ds, list(names), np.arange(len(names)), f"the model's labels ({where})")
    if ds.classes == names:
        return ds
    if ds.classes_from == FROM_RECIPE:
        raise BadInput(f"dataset.classes and the model's labels ({where}) differ: "
                       f"{_first_difference(ds.classes, names)}; list the classes in the "
                       "model's order, or remove dataset.classes to use it")
    if set(ds.classes) == set(names) and len(set(names)) == len(names):
        return relabel(ds, list(names), np.asarray([names.index(c) for c in ds.classes]),
                       f"the model's labels ({where})")
    if ds.numbered and len(names) >= len(ds.classes) and not set(names) & set(ds.classes):
        return relabel(ds, list(names), np.arange(len(ds.classes)),
                       f"the model's labels ({where}), by label number")
    missing = [c for c in ds.classes if c not in names]
    extra = [c for c in names if c not in ds.classes]
    raise BadInput(f"the dataset's classes ({ds.classes_from}) do not match the model's labels "
                   f"({where}): not among the labels: {missing[:8] or 'none'}; labels with no "
                   f"class: {extra[:8] or 'none'}")


def relabel(ds: Dataset, classes: list[str], mapping: np.ndarray, source: str) -> Dataset:
    """The same images with labels renumbered (`mapping[old] = new`) and the same splits."""
    labels = mapping[ds.labels] if ds.labeled else ds.labels
    out = make(ds.name, ds.images, labels, classes, None, splits=ds.splits,
               classes_from=source)
    return out


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


def load_dataset(cfg) -> Dataset:
    from optimizer.data import digits, fashion_mnist, folder, npz

    loaders = {"sklearn-digits": digits.load, "folder": folder.load, "npz": npz.load,
               "fashion-mnist": fashion_mnist.load}
    return loaders[cfg.kind](cfg)
