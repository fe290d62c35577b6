"""The package stage: the artifact the recipe asks to package (the ship, or a step's best)
made into its zip and layers or image, each proved, and the memory sweep if asked."""

from __future__ import annotations

from pathlib import Path

from optimizer.artifact import Selection
from optimizer.build.ledger import Ledger
from optimizer.data.dataset import Dataset
from optimizer.package.packager import Packager, Packages
from optimizer.progress import Progress
from optimizer.recipe.schema import Recipe
from optimizer.select.gates import choose


def package(recipe: Recipe, chosen: Selection, dataset: Dataset, ledger: Ledger,
            progress: Progress, work: Path, prefer: str) -> Packages:
    cfg = recipe.package
    if cfg.zip is None and cfg.image is None:
        return Packages()
    if cfg.model == "ship" and chosen.ship is None:
        return Packages(notes=["not packaged: no artifact passed the gates"])
    art, engine = chosen.ship, chosen.engine
    if cfg.model != "ship":  # a step name: its one artifact, or its best candidate
        mine = [a for a in chosen.artifacts if a.step_name == cfg.model]
        art = (choose(mine, prefer, deployable_only=False)
               or choose(mine, prefer, require_pass=False, deployable_only=False))
        engine = None
    assert art is not None
    source = chosen.artifacts[0].measured.accuracy
    assert source is not None
    packager = Packager(recipe, ledger.cached_dir, progress, ledger.ran)
    handler = chosen.artifacts[0].model.info.get("handler") or {}
    answer = handler.get("answer_shape") if cfg.response == "handler" else None
    return packager.run(art, dataset, work, list(source.top1), engine, answer)
