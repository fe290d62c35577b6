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

import numpy as np

from optimizer import __version__, hostinfo, targets
from optimizer.build import local as parallel
from optimizer.build.ray import portable
from optimizer.cache import Cache, code_digest, make_key, versions
from optimizer.data.classes import reconcile, relabel
from optimizer.data.dataset import Dataset, prepared
from optimizer.data.load import load_dataset
from optimizer.errors import BadInput, GateFailed, OptimizerError
from optimizer.measure import agreement, source_check
from optimizer.measure.accuracy import test_scores, unpack
from optimizer.measure.latency import cap_note, measured_here
from optimizer.model import ModelRef, file_digests, sha256_file, size_bytes
from optimizer.package.build import Packager, Packages
from optimizer.package.image import preflight as image_preflight
from optimizer.progress import Progress
from optimizer.publish.outdir import artifact_file, check_replaceable, publish, published, recover
from optimizer.recipe.schema import Recipe
from optimizer.report import cost as report_cost
from optimizer.report import migration, students
from optimizer.report import packages as report_packages
from optimizer.runtime_compare import RuntimeComparison
from optimizer.select import engines as runtimes
from optimizer.select import gates as gate_checks
from optimizer.sources import SOURCES
from optimizer.sources import labels as source_labels
from optimizer.steps import STEPS
from optimizer.steps.base import StepContext

_HERE = Path(__file__).parent
# code every cached result depends on besides the step's own module
COMMON_CODE = tuple(
    str(p)
    for p in (_HERE / "preprocess.py", _HERE / "handler" / "preprocess.py", _HERE / "model.py",
              *sorted((_HERE / "data").glob("*.py")))
)
VALIDATION_CODE = tuple(str(p) for p in sorted((_HERE / "validate").glob("*.py")))
CONFUSION_UP_TO = 100  # classes; a bigger matrix is too large for report.json to carry
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
                 force: bool = False, prefer: str | None = None,
                 require_proof: bool = False, retry: bool = False, executor=None) -> None:
        self.recipe, self.recipe_file = recipe, recipe_file
        # None: this machine (worker processes for candidates); else a RayExecutor
        self.executor = executor
        self.workers: dict[str, Any] = {}  # how candidates were trained here, per step
        self.timed_on: dict[str, Any] = {}
        self.cache, self.progress, self.force = cache, progress, force
        self.prefer = prefer or recipe.gates.prefer
        self.require_proof = require_proof or recipe.gates.require_proof
        self.retry = retry  # ask again what failed before (a wheel the index lacked)
        self._count = threading.Lock()  # candidates may finish on several threads
        # hits: reused from earlier builds; misses: ran now; shared: made earlier in this
        # build and used again (one dependency entry for the comparison and the package)
        self.hits = self.misses = self.shared = 0
        self._made: set[str] = set()
        # test-split scores per (artifact, second runtime or None)
        self.scores: dict[tuple[str, str | None], np.ndarray] = {}
        self.source_check: dict[str, Any] = {}
        self.carried: str | None = None  # where the model's own labels were read

    # --- producing models -------------------------------------------------------------

    def _tally(self, key: str, hit: bool) -> bool:
        """Count one use of `key`; True when it was made earlier in this build."""
        with self._count:
            if not hit:
                self.misses += 1
                self._made.add(key)
                return False
            if key in self._made:
                self.shared += 1
                return True
            self.hits += 1
            return False

    def ran(self, label: str) -> None:
        """Work that has no cache entry of its own (a Docker build): it ran, so it counts."""
        self._tally(f"ran:{label}:{time.monotonic_ns()}", False)
        self.progress.log(f"[cyan]run[/]    {label}")

    def cached_dir(self, key: str, label: str, produce: Callable[[Path], Any],
                   remember_failure: bool = False) -> tuple[Path, bool]:
        """(entry, reused): made by `produce(tmp)` unless it exists; counted and logged.
        `remember_failure`: a look-up that failed (no wheel for the target) is stored and
        raised again on the next build instead of asking the index again (--retry asks)."""
        failed = f"{key}-failed"
        if remember_failure and not (self.force or self.retry):
            if (known := self.cache.get_json(failed)) is not None:
                self._tally(failed, True)
                self.progress.log(f"[green]cached[/] {label}: failed before (--retry asks "
                                  "again)")
                raise BadInput(known["error"])

        def run(tmp: Path) -> None:
            self.progress.log(f"[cyan]run[/]    {label}")
            produce(tmp)

        try:
            path, hit = self.cache.ensure_dir(key, run, {"label": label}, self.force)
        except OptimizerError as exc:
            self._tally(key, False)  # it ran, and failed
            if remember_failure:
                self.cache.put_json(failed, {"error": str(exc), "label": label})
            raise
        if self._tally(key, hit):
            self.progress.log(f"[green]reused[/] {label} (made earlier in this build)")
        elif hit:
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
        return StepContext(out_dir=out_dir, target=self.recipe.target.name, dataset=dataset,
                           progress=self.progress, checkpoints=checkpoints,
                           cached=self._cached_parts, offload=self.offload)

    def offload(self, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        """fn(*args) here, or as a task on the cluster; either way the caller caches it."""
        if self.executor is None:
            return fn(*args)
        return self.executor.call(what, fn, *args)[0]

    def _each(self, fn: Callable[[Any], Any], items: list) -> list:
        """fn over items: in turn here, side by side when the work goes to a cluster."""
        if self.executor is None or len(items) < 2:
            return [fn(i) for i in items]
        with ThreadPoolExecutor(min(len(items), 32)) as threads:
            return list(threads.map(fn, items))

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
            if self.executor is not None:
                made[cfg.name] = self._on_cluster(cfg.name, tasks, dataset)
            elif STEPS[cfg.step].produces == "tf" and len(tasks) > 1:
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
        self.workers[name] = {"processes": plan.jobs, "threads": plan.threads,
                              "reason": plan.reason}
        if plan.jobs == 1:
            return [self._step(name, one, parent, label, dataset)
                    for parent, label, one in tasks]
        self._prepare(tasks, dataset)
        workers = parallel.pool(plan.jobs)
        threads = ThreadPoolExecutor(plan.jobs)

        def remote(model: ModelRef, cfg, ctx: StepContext) -> ModelRef:
            return workers.submit(parallel.run_step, {
                "model": model, "config": cfg, "target": self.recipe.target.name,
                "out_dir": str(ctx.out_dir), "checkpoints": str(ctx.checkpoints),
                "dataset": ctx.dataset,
                "cache_root": str(self.cache.root), "threads": plan.threads}).result()

        try:
            futures = [threads.submit(self._step, name, one, parent, label, dataset, remote)
                       for parent, label, one in tasks]
            return [f.result() for f in futures]
        finally:
            parallel.stop(workers)  # on an interrupt too: checkpoints let a rerun resume
            threads.shutdown(wait=False, cancel_futures=True)

    def _prepare(self, tasks: list, dataset: Dataset) -> None:
        """What candidates share (teacher outputs), once per input, not once per worker;
        prepare writes only through ctx.cached, so it gets no output or checkpoint folder."""
        if prepare := STEPS[tasks[0][2].step].prepare:
            firsts = {id(parent): (parent, one) for parent, _, one in reversed(tasks)}
            for parent, one in firsts.values():
                prepare(parent.model, one, self._context(Path(os.devnull), dataset,
                                                         Path(os.devnull)))

    def _on_cluster(self, name: str, tasks: list, dataset: Dataset) -> list[Artifact]:
        """Every artifact of a step as its own task, all at once; the cluster queues them."""
        self._prepare(tasks, dataset)
        return self._each(lambda t: self._step(name, t[2], t[0], t[1], dataset), tasks)

    def _remote(self, full: str, step: str) -> Callable:
        """A step's run that sends the work to the cluster and writes what comes back."""
        training = STEPS[step].produces == "tf"

        def run(model: ModelRef, cfg, ctx: StepContext) -> ModelRef:
            payload = {"config": cfg, "target": self.recipe.target.name,
                       "files": portable.files_of(cfg),
                       "checkpoint_key": ctx.checkpoints.name}
            result = self.executor.run_step(full, payload, model, ctx.dataset, training)
            for key, label, blob in result["entries"]:  # made there, stored here
                self.cached_dir(key, label, lambda tmp, b=blob: portable.unpack(b, tmp))
            for line in result["log"]:
                if "resume" in line or "restart" in line:
                    self.progress.log(line)
            return portable.adopt(result, ctx.out_dir)

        return run

    def _step(self, name: str, cfg, parent: Artifact, label: str, dataset: Dataset,
              run: Callable | None = None) -> Artifact:
        spec = STEPS[cfg.step]
        variant = "+".join(v for v in (parent.variant, label) if v)
        full = f"{name}@{variant}" if variant else name
        run = run or (self._remote(full, cfg.step) if self.executor else spec.run)
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

    def _validation_key(self, kind: str, digests: list, dataset: Dataset,
                        host: dict[str, Any] | None = None) -> str:
        """`host`: the machine that measures, when it is not this one (a target's node)."""
        g, t = self.recipe.gates, self.recipe.target
        return make_key({
            "validate": kind, "models": digests, "dataset": dataset.digest,
            "test_samples": g.test_samples, "latency": g.latency.model_dump(),
            "threads": t.threads, "isa": targets.TARGETS[t.name].isa,
            "host": host or hostinfo.fingerprint(), "versions": versions(RUNTIME_LIBS),
            "code": code_digest(*VALIDATION_CODE),
        })

    def measured(self, key: str, what: str, compute: Callable[[], Any]) -> Any:
        """A cached measurement: reused unless --force, else taken, logged and stored."""
        hit = None if self.force else self.cache.get_json(key)
        self._tally(key, hit is not None)
        if hit is None:
            self.progress.log(f"[cyan]measure[/] {what}")
            hit = compute()
            self.cache.put_json(key, hit)
        return hit

    def accuracy(self, art: Artifact, dataset: Dataset, runtime: str | None = None) -> None:
        """Top-1 on the test split (None without labels) and the scores themselves, kept in
        memory for agreement and per-class results; with `runtime`, of the same file run by
        that other runtime, kept under validation["runtimes"] and gated like any other."""
        g = self.recipe.gates
        if (art.name, runtime) in self.scores:
            return

        kind = f"accuracy/{runtime}" if runtime else "accuracy"
        what = f"accuracy of {art.name}" + (f" with {runtime}" if runtime else "")
        hit = dict(self.measured(
            self._validation_key(kind, [art.model.digest], dataset), what,
            lambda: self.offload(what, test_scores, art.model, dataset, g.test_samples,
                                 runtime)))
        self.scores[(art.name, runtime)] = unpack(hit.pop("scores"))
        if runtime:
            art.validation.setdefault("runtimes", {}).setdefault(runtime, {}).update(hit)
        else:
            art.validation.update(hit)

    def vouch(self, source: Artifact, dataset: Dataset) -> dict[str, Any]:
        """Stop here, before any step, if the source is no good on this data."""
        v = source.validation
        if not dataset.labeled:
            top1 = np.asarray(v["top1"])
            common = int(np.bincount(top1).argmax())
            share = 100.0 * float(np.mean(top1 == common))
            record = {"verdict": "no labels", "accuracy": None,
                      "commonest_answer": source.model.classes[common],
                      "commonest_share": round(share, 2), "classes_from": dataset.classes_from}
            if share >= 95.0 and len(top1) >= 20:
                record["warning"] = (f"the source answers '{source.model.classes[common]}' for "
                                     f"{share:.0f}% of the {len(top1)} test images; without "
                                     "labels nothing else checks it is right about them")
                self.progress.log(f"[yellow]warning[/]: {record['warning']}")
            return record
        labels = dataset.labels_of("test", self.recipe.gates.test_samples)
        record = source_check.check(labels, np.asarray(v["top1"]), dataset.classes,
                                    v["accuracy"], self.recipe.gates.min_source_accuracy,
                                    dataset.classes_from, source.step == "architecture",
                                    self.carried)
        self.progress.log(f"source: {v['accuracy']:.2f}% on {len(labels)} test images "
                          f"(chance {record['chance']:.2f}%); classes in the model's order")
        return record

    def compare_with_source(self, artifacts: list[Artifact], dataset: Dataset) -> None:
        """Agreement, probability distance and per-class results of every artifact and
        runtime pairing, against the source's answers on the same images."""
        classes = dataset.classes
        src = self.scores[("source", None)]
        src_top1 = src.argmax(axis=1)
        labels = (dataset.labels_of("test", self.recipe.gates.test_samples)
                  if dataset.labeled else None)
        src_classes = agreement.per_class(classes, src_top1, labels, src_top1)
        for art in artifacts:
            views = [(None, art.validation), *art.validation.get("runtimes", {}).items()]
            for runtime, v in views:
                mine = self.scores.get((art.name, runtime))
                if mine is None:
                    continue
                v.update(agreement.compare(src, mine))
                v["per_class"] = agreement.per_class(classes, mine.argmax(axis=1), labels,
                                                     src_top1)
                v.update(agreement.class_drop(classes, v["per_class"], src_classes))

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
        artifacts run by a second runtime are timed in the same rounds. On a cluster with a
        node that declares the target's resource, that node times them, natively."""
        g, t = self.recipe.gates, self.recipe.target
        arts = {a.name: a for a in group}
        entries = {a.name: (a, None) for a in group} | {
            p.key: (arts[p.artifact], p.runtime) for p in alternates}
        node = self.executor.target_node(t.name) if self.executor else None
        where = {"ray_node": node["ip"], "resource": node["resource"]} if node else None
        key = self._validation_key("latency", [(k, a.model.digest, rt) for k, (a, rt)
                                               in entries.items()], dataset, where)

        def compute() -> dict[str, Any]:
            x = {k: prepared(dataset, "test", a.model.preprocess, limit=1)
                 for k, (a, _) in entries.items()}
            args = ({k: a.model for k, (a, _) in entries.items()}, x, t.threads,
                    g.latency.warmup, g.latency.runs, targets.TARGETS[t.name].isa,
                    {k: rt for k, (_, rt) in entries.items() if rt})
            if node is None:
                return {**measured_here(*args), "where": "build host"}
            value, ran = self.executor.call(f"latency on the {t.name} node", measured_here,
                                            *args, cpus=t.threads, node=node)
            return {**value, "where": f"Ray node {ran['ip']} ({ran['node_id'][:8]}, "
                                      f"declares {node['resource']})"}

        hit = self.measured(key, f"latency of {', '.join(entries)}", compute)
        self.timed_on = timed_on(t.name, hit["where"], hit["cpu"])
        self.progress.log(f"latency timed on {self.timed_on['where']}: "
                          f"{self.timed_on['cpu']}, {self.timed_on['summary']}")
        for k, (art, rt) in entries.items():
            runtime = rt or targets.default_runtime(art.model.kind)
            lat = {**hit["models"][k], "isa_cap": cap_note(runtime, t.name, hit["cpu"])["note"]}
            if rt:
                art.validation.setdefault("runtimes", {}).setdefault(rt, {})["latency"] = lat
            else:
                art.validation["latency"] = lat

    def ort_format(self, art: Artifact, dataset: Dataset) -> None:
        """The .ort file and reduced-operator config of an ONNX artifact, and load times."""
        from optimizer.measure import load_time
        from optimizer.package import ort_format

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
            lambda: load_time.load_times(art.model.path, folder / ort_format.ORT_FILE))
        art.validation["ort_format"] = {**result, **times}
        art.ort_files = (folder / ort_format.ORT_FILE, folder / ort_format.CONFIG_FILE)

    # --- the whole build --------------------------------------------------------------

    def dataset(self) -> Dataset:
        """The recipe's dataset, in the order of the labels the model carries (if any)."""
        dataset = load_dataset(self.recipe.dataset)
        if carried := source_labels.of_source(self.recipe.source):
            dataset = reconcile(dataset, *carried)
            self.carried = carried[1]
        self.progress.log(
            f"dataset {dataset.name}: {len(dataset.labels)} images"
            + (f", {len(dataset.classes)} classes" if dataset.classes else "")
            + ("" if dataset.labeled else ", no labels")
            + f", train/val/test {[len(dataset.indices(s)) for s in ('train', 'val', 'test')]}")
        if dataset.classes:
            shown = ", ".join(dataset.classes[:12]) + (", ..." if len(dataset.classes) > 12
                                                       else "")
            self.progress.log(f"classes in output order, from {dataset.classes_from}: {shown}")
        return dataset

    def run(self, out_dir: Path) -> BuildResult:
        started = time.time()
        t0 = time.perf_counter()
        recover(out_dir)  # a killed build's staging folders; its predecessor put back
        check_replaceable(out_dir)  # fail before an hour of work, not after
        image_preflight(self.recipe)  # and a missing base image likewise
        if swept := self.cache.sweep_orphans():
            self.progress.log(f"cache: removed {swept} temporary folder(s) of killed builds")
        dataset = self.dataset()
        source = self.source(dataset)
        if not dataset.classes:  # no labels and no names: the model's output numbers
            dataset = relabel(dataset, source.model.classes, np.arange(0),
                              "the model's output numbers")
        self.accuracy(source, dataset)
        self.source_check = self.vouch(source, dataset)
        artifacts = [source, *self.steps(source, dataset)]
        alternates = self.alternates(artifacts)
        by_name = {a.name: a for a in artifacts}
        self._each(lambda a: self.accuracy(a, dataset), artifacts)
        self._each(lambda p: self.accuracy(by_name[p.artifact], dataset, p.runtime),
                   alternates)
        self.latency(artifacts, dataset, alternates)
        for art in artifacts:
            if art.model.is_onnx:
                self.ort_format(art, dataset)
        self.compare_with_source(artifacts, dataset)
        for art in artifacts:
            art.validation["size_bytes"] = size_bytes(art.model.path)
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
            if cost := report_cost.section(report, self.recipe.gates.cold_starts_per_1000):
                report["cost"] = cost
            # after the sweep: the cost comparison prefers its measured rows
            if mig := migration.section(report, self.recipe.gates.baselines):
                report["migration"] = mig
            report["proof_gaps"] = report_packages.proof_gaps(report)
            report["require_proof"] = self.require_proof
            if self.require_proof and report["proof_gaps"] and report["passed"]:
                report["passed"] = False
                report["failure"] = ("a proof was required (validate.require_proof or "
                                     "--require-proof) but " + "; ".join(report["proof_gaps"]))
            publish(out_dir, artifacts, report, self.recipe, packages.files)
        exit_code = 0 if report["passed"] else GateFailed.exit_code
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
        reference = artifacts[0].validation["top1"]
        packager = Packager(self.recipe, self.cached_dir, self.progress, self.ran)
        return packager.run(art, dataset, work, reference, engine)

    def _confusion(self, dataset: Dataset, source: Artifact,
                   ship: Artifact | None) -> dict[str, Any] | None:
        """Counts of the shipped artifact's answers against the truth (or the source's)."""
        k = len(dataset.classes)
        if ship is None or k > CONFUSION_UP_TO:
            return None
        rows = (dataset.labels_of("test", self.recipe.gates.test_samples) if dataset.labeled
                else np.asarray(source.validation["top1"]))
        matrix = source_check.confusion(rows, np.asarray(ship.validation["top1"]), k)
        return {"artifact": ship.name, "classes": dataset.classes, "matrix": matrix.tolist(),
                "rows_are": "true class" if dataset.labeled else "the source's answer",
                "title": "test images by true class" if dataset.labeled else
                "agreement with the source (no labels)"}

    def _report(self, dataset: Dataset, artifacts: list[Artifact], ship: Artifact | None,
                started: float, seconds: float) -> dict[str, Any]:
        t = self.recipe.target
        share = targets.vcpus(t.memory_mb)
        rows = []
        for art in artifacts:
            v = {k: val for k, val in art.validation.items() if k not in ("top1", "per_class")}
            for alt in v.get("runtimes", {}).values():
                for k in ("top1", "per_class"):
                    alt.pop(k, None)
            lat = v.get("latency", {})
            # below 1 vCPU Lambda gives a proportional share; scale the single-thread time
            est_ms = lat.get("p50_ms", 0.0) / min(1.0, share)
            rows.append({
                "name": art.name,
                "step": art.step,
                "kind": art.model.kind,
                "file": artifact_file(art) if published(art) else None,
                "path": None if published(art) else str(art.model.path),
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
                      "shared": self.shared, "all_cached": self.misses == 0},
            "host": {**hostinfo.cpu(), "versus_target": hostinfo.versus_target(t.name)},
            "timed_on": self.timed_on,
            "executor": (self.executor.summary() if self.executor else
                         {"kind": "local", "candidates": self.workers}),
            "target": {"name": t.name, "runtime": t.runtime, "memory_mb": t.memory_mb,
                       "vcpus": round(share, 3), "threads": t.threads,
                       "isa": targets.TARGETS[t.name].isa,
                       "targets_version": targets.TARGETS_VERSION},
            "dataset": {"name": dataset.name, "digest": dataset.digest,
                        "classes": dataset.classes, "classes_from": dataset.classes_from,
                        "labeled": dataset.labeled,
                        "splits": {s: len(dataset.indices(s)) for s in ("train", "val", "test")}},
            "classes": dataset.classes,
            "source_check": self.source_check,
            "per_class": per_class_section(dataset.classes, artifacts[0],
                                           ship or artifacts[0]),
            "confusion": self._confusion(dataset, artifacts[0], ship),
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


def timed_on(target: str, where: str, cpu: dict[str, Any]) -> dict[str, Any]:
    """Where the target's latency was measured and how that CPU differs from the target's."""
    vs = hostinfo.versus_target(target, cpu)
    extra, missing = vs["host_extra_flags"], vs["target_flags_missing_on_host"]
    if not vs["same_arch"]:
        summary = f"{cpu['arch']}, not the target's architecture"
    elif extra:
        summary = ("has " + ", ".join(extra) + f" beyond {target}'s {vs['target_isa']}: int8 "
                   "and fp16 timings may be faster than on the target")
    else:
        summary = f"no extensions beyond {target}'s {vs['target_isa']}: native timing"
    return {"target": target, "where": where, "cpu": cpu["model"], "arch": cpu["arch"],
            "flags": cpu["flags"], "extra_flags": extra, "missing_flags": missing,
            "native": vs["same_arch"] and not extra, "summary": summary}


def per_class_section(classes: list[str], source: Artifact, ship: Artifact) -> dict[str, Any]:
    """Source and shipped artifact side by side, class by class, in output order."""
    mine, ref = ship.validation["per_class"], source.validation["per_class"]
    by_agreement = mine["basis"].startswith("agreement")
    rows = []
    for i, name in enumerate(classes):
        s, r = mine["score"][i], ref["score"][i]
        drop = None if s is None else round((100.0 if by_agreement else (r or 0.0)) - s, 3)
        rows.append({"index": i, "class": name, "n": mine["n"][i], "source": r,
                     "ship": s, "drop": drop})
    return {"basis": mine["basis"], "artifact": ship.name, "rows": rows,
            "max_class_drop": ship.validation.get("max_class_drop"),
            "worst_class": ship.validation.get("worst_class")}


def build(recipe: Recipe, recipe_file: Path, out_dir: Path | None, cache: Cache,
          progress: Progress, force: bool = False, prefer: str | None = None,
          require_proof: bool = False, retry: bool = False, executor=None) -> BuildResult:
    out = out_dir or Path("artifacts") / recipe.name
    return Builder(recipe, recipe_file, cache, progress, force, prefer, require_proof,
                   retry, executor).run(out)
