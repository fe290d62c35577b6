"""report.json, assembled from the stages' records: the one document report.md, the console,
the plots, the manifest and CI read. Its keys are a contract; they are only ever added."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from optimizer import __version__, hostinfo, targets
from optimizer.artifact import Artifact, Selection
from optimizer.data.dataset import Dataset
from optimizer.measure.source_check import confusion
from optimizer.model import sha256_file
from optimizer.package.packager import Packages
from optimizer.recipe.schema import Recipe
from optimizer.report import cost, migration, students
from optimizer.report.packages import proof_gaps
from optimizer.select.gates import explain_failure

CONFUSION_UP_TO = 100  # classes; a bigger matrix is too large for report.json to carry


@dataclass(frozen=True)
class Run:
    """How the build ran, besides what it made."""

    recipe_file: Path
    started: float  # epoch seconds
    seconds: float
    cache: dict[str, Any]
    executor: dict[str, Any]
    timed_on: dict[str, Any]
    source_check: dict[str, Any]
    prefer: str
    require_proof: bool


def _row(art: Artifact, recipe: Recipe) -> dict[str, Any]:
    t = recipe.target
    share = targets.vcpus(t.memory_mb)
    # below 1 vCPU Lambda gives a proportional share; scale the single-thread time
    est_ms = (art.measured.latency.p50_ms if art.measured.latency else 0.0) / min(1.0, share)
    return {
        "name": art.name, "step": art.step, "kind": art.model.kind,
        "file": art.file_name if art.published else None,
        "path": None if art.published else str(art.model.path),
        "sha256": sha256_file(art.model.path) if art.model.path.is_file() else None,
        "digest": art.model.digest, "cached": art.cached,
        "build_seconds": round(art.seconds, 3), "info": art.model.info,
        "validation": art.validation(), "gates": [g.report() for g in art.gates],
        "passed": art.passed, "candidate": art.candidate, "parent": art.parent,
        "variant": art.variant, "step_name": art.step_name,
        "estimate": {
            "duration_ms": round(est_ms, 3),
            "cost_per_million_usd": round(
                targets.cost_per_million(est_ms, t.memory_mb, t.name), 4),
            "method": "measured p50 scaled by the CPU share of the memory size; "
            "no CPU quota applied",
        },
    }


def confusion_section(dataset: Dataset, source: Artifact, ship: Artifact | None,
                      test_samples: int | None) -> dict[str, Any] | None:
    """Counts of the shipped artifact's answers against the truth (or the source's)."""
    k = len(dataset.classes)
    if ship is None or k > CONFUSION_UP_TO:
        return None
    assert source.measured.accuracy is not None and ship.measured.accuracy is not None
    rows = (dataset.labels_of("test", test_samples) if dataset.labeled
            else np.asarray(source.measured.accuracy.top1))
    matrix = confusion(rows, np.asarray(ship.measured.accuracy.top1), k)
    return {"artifact": ship.name, "classes": dataset.classes, "matrix": matrix.tolist(),
            "rows_are": "true class" if dataset.labeled else "the source's answer",
            "title": "test images by true class" if dataset.labeled else
            "agreement with the source (no labels)"}


def per_class_section(classes: list[str], source: Artifact, ship: Artifact) -> dict[str, Any]:
    """Source and shipped artifact side by side, class by class, in output order."""
    mine, ref = ship.measured.per_class, source.measured.per_class
    assert mine is not None and ref is not None
    rows = []
    for i, name in enumerate(classes):
        s, r = mine.score[i], ref.score[i]
        drop = None if s is None else round((100.0 if mine.by_agreement else (r or 0.0)) - s, 3)
        rows.append({"index": i, "class": name, "n": mine.n[i], "source": r, "ship": s,
                     "drop": drop})
    drop = ship.measured.class_drop
    return {"basis": mine.basis, "artifact": ship.name, "rows": rows,
            "max_class_drop": drop.max_class_drop if drop else None,
            "worst_class": drop.worst_class if drop else None}


def _recipe(recipe: Recipe, run: Run) -> dict[str, Any]:
    return {"name": recipe.name, "file": str(run.recipe_file), "digest": recipe.digest(),
            "resolved": recipe.model_dump(mode="json", by_alias=True, exclude_defaults=True)}


def _target(recipe: Recipe) -> dict[str, Any]:
    t = recipe.target
    return {"name": t.name, "runtime": t.runtime, "memory_mb": t.memory_mb,
            "vcpus": round(targets.vcpus(t.memory_mb), 3), "threads": t.threads,
            "isa": targets.TARGETS[t.name].isa, "targets_version": targets.TARGETS_VERSION}


def _dataset(dataset: Dataset) -> dict[str, Any]:
    return {"name": dataset.name, "digest": dataset.digest, "classes": dataset.classes,
            "classes_from": dataset.classes_from, "labeled": dataset.labeled,
            "splits": {s: len(dataset.indices(s)) for s in ("train", "val", "test")}}


def document(recipe: Recipe, dataset: Dataset, sel: Selection, packages: Packages,
             run: Run) -> dict[str, Any]:
    """The whole of report.json."""
    arts, ship = sel.artifacts, sel.ship
    source = arts[0]
    rows = [_row(a, recipe) for a in arts]
    report: dict[str, Any] = {
        "tool": {"name": "optimizer", "version": __version__},
        "recipe": _recipe(recipe, run),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(run.started)),
        "seconds": round(run.seconds, 2),
        "cache": run.cache,
        "host": {**hostinfo.cpu(), "versus_target": hostinfo.versus_target(recipe.target.name)},
        "timed_on": run.timed_on,
        "executor": run.executor,
        "target": _target(recipe),
        "dataset": _dataset(dataset),
        "classes": dataset.classes,
        "source_check": run.source_check,
        "per_class": per_class_section(dataset.classes, source, ship or source),
        "confusion": confusion_section(dataset, source, ship, recipe.gates.test_samples),
        "libraries": hostinfo.library_versions(),
        "artifacts": rows,
        "prefer": run.prefer,
        "candidates": students.candidates(rows, run.prefer),
        "teacher_student": students.teacher_student(rows, ship.name if ship else None),
        "ship": ship.name if ship else None,
        "ship_file": ship.file_name if ship else None,
        "passed": ship is not None,
        "failure": None if ship is not None else explain_failure(arts),
    }
    if sel.compared is not None:
        report["runtimes"] = sel.compared
    report["ship_runtime"] = (sel.engine or targets.default_engine(ship.model.kind)
                              if ship else None)
    report["packages"], report["package_notes"] = packages.records, packages.notes
    if packages.tune is not None:
        report["tune"] = packages.tune
    return _after_packaging(report, recipe, run.require_proof)


def _after_packaging(report: dict[str, Any], recipe: Recipe,
                     require_proof: bool) -> dict[str, Any]:
    """What depends on the packages: cost with cold starts, the migration's cost
    comparison (after the sweep: it prefers its measured rows) and the proofs missing."""
    if c := cost.section(report, recipe.gates.cold_starts_per_1000):
        report["cost"] = c
    if mig := migration.section(report, recipe.gates.baselines):
        report["migration"] = mig
    report["proof_gaps"] = proof_gaps(report)
    report["require_proof"] = require_proof
    if require_proof and report["proof_gaps"] and report["passed"]:
        report["passed"] = False
        report["failure"] = ("a proof was required (validate.require_proof or "
                             "--require-proof) but " + "; ".join(report["proof_gaps"]))
    return report


def rendered(report: dict[str, Any]) -> dict[str, str]:
    """Files drawn from report.json for a person: report.md, and the plots there are."""
    from optimizer.report import confusion_plot, markdown, pareto_plot

    out = {"report.md": markdown.render(report)}
    for name, svg in (("pareto.svg", pareto_plot.render(report)),
                      ("confusion.svg", confusion_plot.render(report))):
        if svg is not None:
            out[name] = svg
    return out
