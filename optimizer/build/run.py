"""The engine: a recipe's build as one linear run, each stage handed what the one before made.

    recipe -> source -> steps -> measure -> select -> package -> report -> publish

Only this module and its stages know about the cache (through the ledger) and about where
work runs (through the workers); steps only transform, measurements only measure, selection
only decides.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from optimizer.artifact import BuildResult
from optimizer.build.ledger import Ledger
from optimizer.build.stages import measure, source, steps
from optimizer.build.stages.package import package
from optimizer.build.stages.select import select
from optimizer.build.workers import LocalWorkers, RayWorkers
from optimizer.cache import Cache
from optimizer.errors import GateFailed
from optimizer.package.image import preflight as image_preflight
from optimizer.progress import Progress
from optimizer.publish.outdir import check_replaceable, publish, recover
from optimizer.recipe.schema import Recipe
from optimizer.report.document import Run, document, rendered


@dataclass(frozen=True)
class Options:
    """How to run a build, apart from what to build (the recipe)."""

    force: bool = False  # ignore the cache
    prefer: str | None = None  # speed | size [default: the recipe's]
    require_proof: bool = False
    retry: bool = False  # ask the package index again what it lacked before
    executor: Any = None  # a RayExecutor, or None for this machine


def run(recipe: Recipe, recipe_file: Path, out_dir: Path, cache: Cache, progress: Progress,
        opts: Options = Options()) -> BuildResult:
    started, t0 = time.time(), time.perf_counter()
    prefer = opts.prefer or recipe.gates.prefer
    require_proof = opts.require_proof or recipe.gates.require_proof
    _before_any_work(recipe, out_dir, cache, progress)
    ledger = Ledger(cache, progress, opts.force, opts.retry)
    workers = (RayWorkers(opts.executor, ledger) if opts.executor is not None
               else LocalWorkers(progress, cache.root))

    data = source.dataset(recipe, progress)
    stage = steps.Stage(recipe.target.name, data.dataset, ledger, workers, progress)
    src = source.load(recipe, stage)
    data = source.named(data, src)
    stage = replace(stage, dataset=data.dataset)
    measuring = measure.Measure(recipe, data.dataset, ledger, workers, progress)
    src, checked = measuring.source(src, data.carried)  # stops a wrong source here
    artifacts, timed_on = measuring.everything([src, *stage.run(recipe.steps, src)])
    chosen = select(recipe, artifacts, data.dataset, ledger, prefer)
    with tempfile.TemporaryDirectory(prefix=".package-", dir=cache.root) as work:
        packages = package(recipe, chosen, data.dataset, ledger, progress, Path(work), prefer)
        report = document(recipe, data.dataset, chosen, packages, Run(
            recipe_file, started, time.perf_counter() - t0, ledger.summary(),
            workers.summary(), timed_on, checked, prefer, require_proof))
        publish(out_dir, chosen.artifacts, report, rendered(report), packages.files)
    exit_code = 0 if report["passed"] else GateFailed.exit_code
    return BuildResult(report=report, out_dir=out_dir, exit_code=exit_code)


def _before_any_work(recipe: Recipe, out_dir: Path, cache: Cache, progress: Progress) -> None:
    """What can fail in seconds fails before an hour of work, not after it."""
    recover(out_dir)  # a killed build's staging folders; its predecessor put back
    check_replaceable(out_dir)
    image_preflight(recipe)  # a missing base image
    if swept := cache.sweep_orphans():
        progress.log(f"cache: removed {swept} temporary folder(s) of killed builds")


def build(recipe: Recipe, recipe_file: Path, out_dir: Path | None, cache: Cache,
          progress: Progress, opts: Options = Options()) -> BuildResult:
    """`optimizer build`: the output goes to artifacts/NAME unless told otherwise."""
    return run(recipe, recipe_file, out_dir or Path("artifacts") / recipe.name, cache,
               progress, opts)
