"""The select stage: every artifact through the recipe's gates, the ship (the fastest, or
smallest, that passed), and where the recipe compares engines, the engine to ship it with."""

from __future__ import annotations

from dataclasses import replace

from optimizer.artifact import Artifact, Selection
from optimizer.build.ledger import Ledger
from optimizer.build.stages.engines import Comparison
from optimizer.data.dataset import Dataset
from optimizer.recipe.schema import Recipe
from optimizer.select.gates import check, choose, insists


def select(recipe: Recipe, artifacts: list[Artifact], dataset: Dataset, ledger: Ledger,
           prefer: str) -> Selection:
    source = artifacts[0]
    judged = [replace(a, gates=check(a, source, recipe.gates, recipe.target.name,
                                     insists(recipe, a))) for a in artifacts]
    ship = choose(judged, prefer)
    if recipe.engines is None or ship is None:
        return Selection(judged, ship)
    compared = Comparison(recipe, judged, dataset, ledger, prefer).run()
    if won := compared["targets"][recipe.target.name]["winner"]:
        return Selection(judged, next(a for a in judged if a.name == won["artifact"]),
                         won["runtime"], compared)
    return Selection(judged, ship, None, compared)
