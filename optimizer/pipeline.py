"""Runs a recipe: source, steps in order, validation, gates, report, output folder.

The only module that knows about the cache and the output folder; steps just transform.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optimizer import __version__, hostinfo, targets
from optimizer.cache import Cache, code_digest, make_key, versions
from optimizer.data import Dataset, load_dataset, prepared
from optimizer.errors import GateFailed
from optimizer.model import ModelRef, file_digests, sha256_file, size_bytes
from optimizer.outdir import artifact_file, check_replaceable, publish, recover
from optimizer.package.build import Packager, Packages
from optimizer.progress import Progress
from optimizer.recipe import Recipe
from optimizer.report import migration, students
from optimizer.runtime_compare import RuntimeComparison
from optimizer.sources import SOURCES
from optimizer.steps import STEPS
from optimizer.steps.base import StepContext
from optimizer.train import parallel
from optimizer.validate import gates as gate_checks
from optimizer.validate import runtimes
from optimizer.validate.accuracy import predict, score
from optimizer.validate.latency import cap_note, measure

_HERE = Path(__file__).parent
# code every cached result depends on besides the step's own module
COMMON_CODE = tuple(
    str(p)
    for p in (_HERE / "preprocess.py", _HERE / "handler" / "preprocess.py", _HERE / "model.py",
              *sorted((_HERE / "data").glob("*.py")))
)
VALIDATION_CODE = tuple(str(p) for p in sorted((_HERE / "validate").glob("*.py")))
RUNTIME_LIBS = ("onnxruntime", "tensorflow", "tensorflow-cpu", "keras", "numpy",
                "ai-edge-litert", "openvino")


@dataclass
class Artifact:
    name: str
    step: str
    model: ModelRef
    cached: bool
    seconds: float
    validation: dict[str, Any] = field(default_factory=dict)
    gates: list[dict[str, Any]] = field(default_factory=list)
    parent: str | None = None  # the artifact this one was made from
    variant: str = ""  # the candidate (student) it descends from, if the recipe lists several
    step_name: str = "source"  # the recipe step that made it
    ort_files: tuple[Path, ...] = ()  # .ort model and its operator config, for ONNX ones

    @property
    def candidate(self) -> bool:
        """Deployable without TensorFlow: what the build ships unless told otherwise."""
        return self.model.kind in ("onnx", "tflite")

    @property
    def passed(self) -> bool:
        return all(g["passed"] for g in self.gates)


@dataclass
class BuildResult:
    report: dict[str, Any]
    out_dir: Path
    exit_code: int


class Builder:
    def __init__(self, recipe: Recipe, recipe_file: Path, cache: Cache, progress: Progress,
                 force: bool = False, prefer: str | None = None) -> None:
        self.recipe, self.recipe_file = recipe, recipe_file
        self.cache, self.progress, self.force = cache, progress, force
        self.prefer = prefer or recipe.gates.prefer
        self._count = threading.Lock()  # candidates may finish on several threads
        self.hits = self.misses = 0

    # --- producing models -------------------------------------------------------------

    def cached_dir(self, key: str, label: str,
                   produce: Callable[[Path], Any]) -> tuple[Path, bool]:
        """(entry, reused): made by `produce(tmp)` unless it exists; counted and logged."""
        def run(tmp: Path) -> None:
            self.progress.log(f"[cyan]run[/]    {label}")
            produce(tmp)

        path, hit = self.cache.ensure_dir(key, run, {"label": label}, self.force)
        with self._count:
            if hit:
                self.hits += 1
            else:
                self.misses += 1
        if hit:
            self.progress.log(f"[green]cached[/] {label}")
        return path, hit

    def _cached_model(self, key: str, label: str, produce) -> tuple[ModelRef, bool, float]:
        """Made by `produce(tmp, checkpoints)`; checkpoints outlive a crash, not success."""
        t0 = time.perf_counter()
        checkpoints = self.cache.root / "checkpoints" / key
        path, hit = self.cached_dir(
            key, label, lambda tmp: produce(tmp, checkpoints).write_meta(tmp))
        shutil.rmtree(checkpoints, ignore_errors=True)
        return ModelRef.read(path), hit, 0.0 if hit else time.perf_counter() - t0

    def _cached_parts(self, parts: dict[str, Any], label: str,
                      produce: Callable[[Path], None]) -> Path:
        return self.cached_dir(make_key(parts), label, produce)[0]

    def _context(self, out_dir: Path, dataset: Dataset, checkpoints: Path) -> StepContext:
        return StepContext(out_dir=out_dir, recipe=self.recipe, dataset=dataset,
                           progress=self.progress, checkpoints=checkpoints,
                           cached=self._cached_parts)

    def source(self, dataset: Dataset) -> Artifact:
        cfg = self.recipe.source
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
            "code": code_digest(*loader.modules, *COMMON_CODE),
        })
        what = " ".join(filter(None, (cfg.kind, getattr(cfg, "architecture", None))))
        ref, cached, secs = self._cached_model(
            key, f"source ({what})",
            lambda tmp, ckpt: loader.load(cfg, dataset, self._context(tmp, dataset, ckpt)),
        )
        return Artifact("source", cfg.kind, ref, cached, secs)

    def steps(self, source: Artifact, dataset: Dataset) -> list[Artifact]:
        """Each step runs once per artifact of its input, and once per candidate it lists."""
        made: dict[str, list[Artifact]] = {"source": [source]}
        out = []
        for cfg in self.recipe.steps:
            tasks = [(parent, label, one) for parent in made[cfg.input]
                     for label, one in cfg.variants()]
            if STEPS[cfg.step].produces == "tf" and len(tasks) > 1:
                made[cfg.name] = self._train_many(cfg.name, tasks, dataset)
            else:
                made[cfg.name] = [self._step(cfg.name, one, parent, label, dataset)
                                  for parent, label, one in tasks]
            out += made[cfg.name]
        return out

    def _train_many(self, name: str, tasks: list, dataset: Dataset) -> list[Artifact]:
        """Candidates in worker processes, as many at once as cores and memory allow."""
        plan = parallel.plan(len(tasks))
        self.progress.log(f"train {len(tasks)} candidates of '{name}': {plan.reason}")
        if plan.jobs == 1:
            return [self._step(name, one, parent, label, dataset)
                    for parent, label, one in tasks]
        # what candidates share (teacher outputs), once per input, not once per worker;
        # prepare writes only through ctx.cached, so it gets no output or checkpoint folder
        if prepare := STEPS[tasks[0][2].step].prepare:
            firsts = {id(parent): (parent, one) for parent, _, one in reversed(tasks)}
            for parent, one in firsts.values():
                prepare(parent.model, one, self._context(Path(os.devnull), dataset,
                                                         Path(os.devnull)))
        workers = parallel.pool(plan.jobs)
        threads = ThreadPoolExecutor(plan.jobs)

        def remote(model: ModelRef, cfg, ctx: StepContext) -> ModelRef:
            return workers.submit(parallel.run_step, {
                "model": model, "config": cfg, "recipe": self.recipe,
                "out_dir": str(ctx.out_dir), "checkpoints": str(ctx.checkpoints),
                "cache_root": str(self.cache.root), "threads": plan.threads}).result()

        try:
            futures = [threads.submit(self._step, name, one, parent, label, dataset, remote)
                       for parent, label, one in tasks]
            return [f.result() for f in futures]
        finally:
            parallel.stop(workers)  # on an interrupt too: checkpoints let a rerun resume
            threads.shutdown(wait=False, cancel_futures=True)

    def _step(self, name: str, cfg, parent: Artifact, label: str, dataset: Dataset,
              run: Callable | None = None) -> Artifact:
        spec = STEPS[cfg.step]
        run = run or spec.run
        variant = "+".join(v for v in (parent.variant, label) if v)
        full = f"{name}@{variant}" if variant else name
        key = make_key({
            "step": cfg.step,
            "config": cfg.model_dump(mode="json", exclude={"name", "input"}),
            "files": file_digests(cfg.input_files()),
            "input": parent.model.digest,
            "dataset": dataset.digest if spec.uses_data else None,
            "target": self.recipe.target.name,
            "versions": versions(spec.tools),
            "code": code_digest(*spec.modules, *COMMON_CODE),
        })
        ref, cached, secs = self._cached_model(
            key, f"{full} ({cfg.step} <- {parent.name})",
            lambda tmp, ckpt: run(parent.model, cfg, self._context(tmp, dataset, ckpt)),
        )
        return Artifact(full, cfg.step, ref, cached, secs, parent=parent.name, variant=variant,
                        step_name=name)

    # --- measuring --------------------------------------------------------------------

    def _validation_key(self, kind: str, digests: list, dataset: Dataset) -> str:
        g, t = self.recipe.gates, self.recipe.target
        return make_key({
            "validate": kind, "models": digests, "dataset": dataset.digest,
            "test_samples": g.test_samples, "latency": g.latency.model_dump(),
            "threads": t.threads, "isa": targets.TARGETS[t.name].isa,
            "host": hostinfo.fingerprint(), "versions": versions(RUNTIME_LIBS),
            "code": code_digest(*VALIDATION_CODE),
        })

    def measured(self, key: str, what: str, compute: Callable[[], Any]) -> Any:
        """A cached measurement: reused unless --force, else taken, logged and stored."""
        hit = None if self.force else self.cache.get_json(key)
        with self._count:
            if hit is None:
                self.misses += 1
            else:
                self.hits += 1
        if hit is None:
            self.progress.log(f"[cyan]measure[/] {what}")
            hit = compute()
            self.cache.put_json(key, hit)
        return hit

    def accuracy(self, art: Artifact, dataset: Dataset, runtime: str | None = None) -> None:
        """Top-1 on the test split; with `runtime`, of the same file run by that other
        runtime, kept under validation["runtimes"] and gated like any other artifact."""
        g = self.recipe.gates

        def compute() -> dict[str, Any]:
            x = prepared(dataset, "test", art.model.preprocess, limit=g.test_samples)
            probs = predict(art.model, x, runtime)
            result = score(probs, dataset.labels_of("test", g.test_samples), None)
            result["top1"] = probs.argmax(axis=1).tolist()
            return result

        kind = f"accuracy/{runtime}" if runtime else "accuracy"
        what = f"accuracy of {art.name}" + (f" with {runtime}" if runtime else "")
        hit = self.measured(self._validation_key(kind, [art.model.digest], dataset), what,
                            compute)
        if runtime:
            art.validation.setdefault("runtimes", {}).setdefault(runtime, {}).update(hit)
        else:
            art.validation.update(hit)

    def alternates(self, artifacts: list[Artifact]) -> list[runtimes.Pair]:
        """Artifacts paired with the recipe's other runtimes that are installed here."""
        if self.recipe.runtimes is None:
            return []
        kinds = {a.name: a.model.kind for a in artifacts}
        return [p for p in runtimes.pairs(kinds, self.recipe.runtimes.candidates)
                if not p.default and runtimes.installed(p.runtime)]

    def latency(self, group: list[Artifact], dataset: Dataset,
                alternates: list[runtimes.Pair] = ()) -> None:
        """One subprocess for all models, timed in alternating rounds, so ratios are fair;
        artifacts run by a second runtime are timed in the same rounds."""
        g, t = self.recipe.gates, self.recipe.target
        arts = {a.name: a for a in group}
        entries = {a.name: (a, None) for a in group} | {
            p.key: (arts[p.artifact], p.runtime) for p in alternates}
        key = self._validation_key("latency", [(k, a.model.digest, rt) for k, (a, rt)
                                               in entries.items()], dataset)

        def compute() -> dict[str, Any]:
            x = {k: prepared(dataset, "test", a.model.preprocess, limit=1)
                 for k, (a, _) in entries.items()}
            return measure({k: a.model for k, (a, _) in entries.items()}, x, t.threads,
                           g.latency.warmup, g.latency.runs, targets.TARGETS[t.name].isa,
                           runtimes={k: rt for k, (_, rt) in entries.items() if rt})

        hit = self.measured(key, f"latency of {', '.join(entries)}", compute)
        for k, (art, rt) in entries.items():
            runtime = rt or targets.default_runtime(art.model.kind)
            lat = {**hit[k], "isa_cap": cap_note(runtime, t.name)["note"]}
            if rt:
                art.validation.setdefault("runtimes", {}).setdefault(rt, {})["latency"] = lat
            else:
                art.validation["latency"] = lat

    def ort_format(self, art: Artifact, dataset: Dataset) -> None:
        """The .ort file and reduced-operator config of an ONNX artifact, and load times."""
        from optimizer.validate import ort_format

        folder, _ = self.cached_dir(
            make_key({"ort_format": art.model.digest, "versions": versions(RUNTIME_LIBS),
                      "code": code_digest(ort_format.__file__)}),
            f"ort format of {art.name}",
            lambda tmp: (tmp / "result.json").write_text(json.dumps(
                ort_format.convert(art.model.path, tmp))))
        result = json.loads((folder / "result.json").read_text())
        times = self.measured(
            self._validation_key("ort_load", [art.model.digest], dataset),
            f"load time of {art.name} (.onnx against .ort)",
            lambda: ort_format.load_times(art.model.path, folder / ort_format.ORT_FILE))
        art.validation["ort_format"] = {**result, **times}
        art.ort_files = (folder / ort_format.ORT_FILE, folder / ort_format.CONFIG_FILE)

    # --- the whole build --------------------------------------------------------------

    def run(self, out_dir: Path) -> BuildResult:
        started = time.time()
        t0 = time.perf_counter()
        recover(out_dir)  # a killed build's staging folders; its predecessor put back
        check_replaceable(out_dir)  # fail before an hour of work, not after
        if swept := self.cache.sweep_orphans():
            self.progress.log(f"cache: removed {swept} temporary folder(s) of killed builds")
        dataset = load_dataset(self.recipe.dataset)
        self.progress.log(
            f"dataset {dataset.name}: {len(dataset.labels)} images, {len(dataset.classes)} "
            f"classes, train/val/test {[len(dataset.indices(s)) for s in ('train', 'val', 'test')]}"
        )
        source = self.source(dataset)
        artifacts = [source, *self.steps(source, dataset)]
        alternates = self.alternates(artifacts)
        by_name = {a.name: a for a in artifacts}
        for art in artifacts:
            self.accuracy(art, dataset)
        for p in alternates:
            self.accuracy(by_name[p.artifact], dataset, p.runtime)
        self.latency(artifacts, dataset, alternates)
        for art in artifacts:
            if art.model.is_onnx:
                self.ort_format(art, dataset)
        reference = source.validation["top1"]
        for art in artifacts:
            v = art.validation
            v["agreement"] = round(
                100.0 * sum(a == b for a, b in zip(v["top1"], reference, strict=True))
                / max(1, len(reference)), 3)
            v["size_bytes"] = size_bytes(art.model.path)
            art.gates = gate_checks.check(art, source, self.recipe)
        ship = gate_checks.choose(artifacts, self.prefer)
        engine, compared = None, None
        if self.recipe.runtimes is not None and ship is not None:
            compared = RuntimeComparison(self, artifacts, source, dataset).run()
            if won := compared["targets"][self.recipe.target.name]["winner"]:
                ship, engine = by_name[won["artifact"]], won["runtime"]
        with tempfile.TemporaryDirectory(prefix=".package-", dir=self.cache.root) as work:
            packages = self.package(artifacts, ship, dataset, Path(work), engine)
            seconds = time.perf_counter() - t0
            report = self._report(dataset, artifacts, ship, started, seconds)
            if compared is not None:
                report["runtimes"] = compared
            report["ship_runtime"] = (engine or targets.default_runtime(ship.model.kind)
                                      if ship else None)
            report["packages"], report["package_notes"] = packages.records, packages.notes
            if packages.tune is not None:
                report["tune"] = packages.tune
            # after the sweep: the cost comparison prefers its measured rows
            if mig := migration.section(report, self.recipe.gates.baselines):
                report["migration"] = mig
            publish(out_dir, artifacts, report, self.recipe, packages.files)
        exit_code = 0 if ship else GateFailed.exit_code
        return BuildResult(report=report, out_dir=out_dir, exit_code=exit_code)

    def package(self, artifacts: list[Artifact], ship: Artifact | None, dataset: Dataset,
                work: Path, engine: str | None = None) -> Packages:
        cfg = self.recipe.package
        if cfg.zip is None and cfg.image is None:
            return Packages()
        if cfg.model == "ship" and ship is None:
            return Packages(notes=["not packaged: no artifact passed the gates"])
        art = ship
        if cfg.model != "ship":  # a step name: its one artifact, or its best candidate
            mine = [a for a in artifacts if a.step_name == cfg.model]
            art = (gate_checks.choose(mine, self.prefer, deployable_only=False)
                   or gate_checks.choose(mine, self.prefer, require_pass=False,
                                         deployable_only=False))
            engine = None
        return Packager(self.recipe, self.cached_dir, self.progress).run(art, dataset, work,
                                                                         engine)

    def _report(self, dataset: Dataset, artifacts: list[Artifact], ship: Artifact | None,
                started: float, seconds: float) -> dict[str, Any]:
        t = self.recipe.target
        share = targets.vcpus(t.memory_mb)
        rows = []
        for art in artifacts:
            v = {k: val for k, val in art.validation.items() if k != "top1"}
            lat = v.get("latency", {})
            # below 1 vCPU Lambda gives a proportional share; scale the single-thread time
            est_ms = lat.get("p50_ms", 0.0) / min(1.0, share)
            rows.append({
                "name": art.name,
                "step": art.step,
                "kind": art.model.kind,
                "file": artifact_file(art),
                "sha256": sha256_file(art.model.path) if art.model.path.is_file() else None,
                "digest": art.model.digest,
                "cached": art.cached,
                "build_seconds": round(art.seconds, 3),
                "info": art.model.info,
                "validation": v,
                "gates": art.gates,
                "passed": art.passed,
                "candidate": art.candidate,
                "parent": art.parent,
                "variant": art.variant,
                "step_name": art.step_name,
                "estimate": {
                    "duration_ms": round(est_ms, 3),
                    "cost_per_million_usd": round(
                        targets.cost_per_million(est_ms, t.memory_mb, t.name), 4),
                    "method": "measured p50 scaled by the CPU share of the memory size; "
                    "no CPU quota applied",
                },
            })
        failed = None
        if ship is None:
            failed = gate_checks.explain_failure(artifacts)
        return {
            "tool": {"name": "optimizer", "version": __version__},
            "recipe": {
                "name": self.recipe.name, "file": str(self.recipe_file),
                "digest": self.recipe.digest(),
                "resolved": self.recipe.model_dump(mode="json", by_alias=True,
                                                   exclude_defaults=True),
            },
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "seconds": round(seconds, 2),
            "cache": {"root": str(self.cache.root), "hits": self.hits, "misses": self.misses,
                      "all_cached": self.misses == 0},
            "host": {**hostinfo.cpu(), "versus_target": hostinfo.versus_target(t.name)},
            "target": {"name": t.name, "runtime": t.runtime, "memory_mb": t.memory_mb,
                       "vcpus": round(share, 3), "threads": t.threads,
                       "isa": targets.TARGETS[t.name].isa,
                       "targets_version": targets.TARGETS_VERSION},
            "dataset": {"name": dataset.name, "digest": dataset.digest,
                        "classes": dataset.classes,
                        "splits": {s: len(dataset.indices(s)) for s in ("train", "val", "test")}},
            "libraries": hostinfo.library_versions(),
            "artifacts": rows,
            "prefer": self.prefer,
            "candidates": students.candidates(rows, self.prefer),
            "teacher_student": students.teacher_student(rows, ship.name if ship else None),
            "ship": ship.name if ship else None,
            "ship_file": artifact_file(ship) if ship else None,
            "passed": ship is not None,
            "failure": failed,
        }


def build(recipe: Recipe, recipe_file: Path, out_dir: Path | None, cache: Cache,
          progress: Progress, force: bool = False, prefer: str | None = None) -> BuildResult:
    out = out_dir or Path("artifacts") / recipe.name
    return Builder(recipe, recipe_file, cache, progress, force, prefer).run(out)
