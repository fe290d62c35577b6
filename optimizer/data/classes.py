"""The class order: the model's outputs, named. Recipes, datasets and the labels a model
carries each say something about it; these put a dataset in one order or say why not."""

from __future__ import annotations

import numpy as np

from optimizer.data.dataset import Dataset, make, split_indices
from optimizer.errors import BadInput

FROM_RECIPE = "the recipe's dataset.classes"


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
