"""The source stage: the recipe's dataset in the model's class order, and the source model
(trained or converted here and cached, or the user's own file as it is)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from optimizer.artifact import Artifact
from optimizer.build.stages.steps import Stage
from optimizer.cache import make_key, versions
from optimizer.codekey import code_of
from optimizer.data.classes import reconcile, relabel
from optimizer.data.dataset import Dataset
from optimizer.data.load import load_dataset
from optimizer.errors import SourceRejected
from optimizer.model import file_digests
from optimizer.progress import Progress
from optimizer.recipe.schema import Recipe
from optimizer.sources import SOURCES
from optimizer.sources import labels as source_labels


@dataclass(frozen=True)
class Data:
    dataset: Dataset
    carried: str | None  # where the labels the model carries were read, if it has any


def dataset(recipe: Recipe, progress: Progress) -> Data:
    """The recipe's dataset, in the order of the labels the model carries (if any)."""
    ds = load_dataset(recipe.dataset)
    carried = None
    if found := source_labels.of_source(recipe.source):
        ds = reconcile(ds, *found)
        carried = found[1]
    progress.log(
        f"dataset {ds.name}: {len(ds.labels)} images"
        + (f", {len(ds.classes)} classes" if ds.classes else "")
        + ("" if ds.labeled else ", no labels")
        + f", train/val/test {[len(ds.indices(s)) for s in ('train', 'val', 'test')]}")
    if ds.classes:
        shown = ", ".join(ds.classes[:12]) + (", ..." if len(ds.classes) > 12 else "")
        progress.log(f"classes in output order, from {ds.classes_from}: {shown}")
    return Data(ds, carried)


def load(recipe: Recipe, stage: Stage) -> Artifact:
    cfg, dataset = recipe.source, stage.dataset
    loader = SOURCES[cfg.kind]
    if not loader.trains:
        t0 = time.perf_counter()
        ref = loader.load(cfg, dataset, None)
        return Artifact("source", cfg.kind, ref, False, time.perf_counter() - t0)
    key = make_key({
        "source": cfg.model_dump(mode="json"), "dataset": dataset.digest,
        # files the source reads (weights, symbol, archive): their content, not their path
        "files": file_digests(cfg.input_files()),
        "versions": versions(loader.tools),
        "code": code_of(loader.load),
    })
    what = " ".join(filter(None, (cfg.kind, getattr(cfg, "architecture", None))))
    ref, cached, secs = stage.ledger.cached_model(
        key, f"source ({what})",
        lambda tmp, ckpt: loader.load(cfg, dataset, stage.context(tmp, ckpt)))
    _required_handler(recipe, ref.info)
    return Artifact("source", cfg.kind, ref, cached, secs)


def _required_handler(recipe: Recipe, info: dict) -> None:
    """validate.require_handler_parity: the old endpoint's handler must have been compared."""
    if not recipe.gates.require_handler_parity:
        return
    handler = info.get("handler") or {
        "verdict": "not run", "reason": f"a {recipe.source.kind} source carries no handler"}
    if handler["verdict"] != "ok":
        raise SourceRejected("validate.require_handler_parity: the archive's handler was not "
                             f"compared with the converted model ({handler['reason']})",
                             {"verdict": "rejected", "handler": handler})


def named(data: Data, source: Artifact) -> Data:
    """Without labels and without names, the classes are the model's output numbers."""
    if data.dataset.classes:
        return data
    return Data(relabel(data.dataset, source.model.classes, np.arange(0),
                        "the model's output numbers"), data.carried)

