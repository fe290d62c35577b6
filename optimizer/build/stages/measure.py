"""The measure stage: every artifact, and every second engine that runs it, measured in one
run and cached. Accuracy on the test split, agreement with the source and per-class results,
batch-1 latency (all models in one process, in alternating rounds), the .ort file and its
load time, and the size on disk.

The source is scored first, on its own, so a source that is wrong about the data stops the
build before any step runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from optimizer import hostinfo, targets
from optimizer.artifact import Accuracy, Artifact, Latency, Measured, OrtFormat
from optimizer.build.ledger import Ledger
from optimizer.build.workers import Workers
from optimizer.cache import make_key, versions
from optimizer.codekey import code_of
from optimizer.data.dataset import Dataset, prepared
from optimizer.measure import agreement, load_time, source_check
from optimizer.measure.accuracy import test_scores, unpack
from optimizer.measure.latency import cap_note, latency_timed_on, measured_here
from optimizer.model import size_bytes
from optimizer.package import ort_format
from optimizer.progress import Progress
from optimizer.recipe.schema import Recipe
from optimizer.select.engines import Pair, installed, pairs

# what runs a model: a measurement from another version of one is another measurement
ENGINE_LIBS = ("onnxruntime", "tensorflow", "tensorflow-cpu", "keras", "numpy",
               "ai-edge-litert", "openvino")


@dataclass
class Measure:
    recipe: Recipe
    dataset: Dataset
    ledger: Ledger
    workers: Workers
    progress: Progress
    # test-split scores per (artifact, second engine or None): agreement needs them all
    scores: dict[tuple[str, str | None], np.ndarray] = field(default_factory=dict)

    def _key(self, kind: str, models: list, code: str,
             host: dict[str, Any] | None = None) -> str:
        """`host`: the machine that measures, when it is not this one (a target's node)."""
        g, t = self.recipe.gates, self.recipe.target
        return make_key({
            "validate": kind, "models": models, "dataset": self.dataset.digest,
            "test_samples": g.test_samples, "latency": g.latency.model_dump(),
            "threads": t.threads, "isa": targets.TARGETS[t.name].isa,
            "host": host or hostinfo.fingerprint(), "versions": versions(ENGINE_LIBS),
            "code": code,
        })

    # --- the source, before any step -------------------------------------------------

    def source(self, source: Artifact, carried: str | None) -> tuple[Artifact, dict]:
        """The source with its accuracy, and the source check's record; raises
        SourceRejected when the source cannot be trusted on this data."""
        source = replace(source, measured=Measured(accuracy=self._accuracy(source, None)))
        return source, self._vouch(source, carried)

    def _accuracy(self, art: Artifact, engine: str | None) -> Accuracy:
        """Top-1 on the test split (None without labels); the scores themselves are kept
        for agreement and per-class results. With `engine`, of the same file run by it."""
        kind = f"accuracy/{engine}" if engine else "accuracy"
        what = f"accuracy of {art.name}" + (f" with {engine}" if engine else "")
        limit = self.recipe.gates.test_samples
        hit = dict(self.ledger.measured(
            self._key(kind, [art.model.digest], code_of(test_scores)), what,
            lambda: self.workers.offload(what, test_scores, art.model, self.dataset, limit,
                                         engine)))
        self.scores[(art.name, engine)] = unpack(hit.pop("scores"))
        return Accuracy.of(hit)

    def _vouch(self, source: Artifact, carried: str | None) -> dict[str, Any]:
        """Stop here, before any step, if the source is no good on this data."""
        acc = source.measured.accuracy
        assert acc is not None
        top1 = np.asarray(acc.top1)
        if not self.dataset.labeled:
            common = int(np.bincount(top1).argmax())
            share = 100.0 * float(np.mean(top1 == common))
            record = {"verdict": "no labels", "accuracy": None,
                      "commonest_answer": source.model.classes[common],
                      "commonest_share": round(share, 2),
                      "classes_from": self.dataset.classes_from}
            if share >= 95.0 and len(top1) >= 20:
                record["warning"] = (f"the source answers '{source.model.classes[common]}' "
                                     f"for {share:.0f}% of the {len(top1)} test images; "
                                     "without labels nothing else checks it is right about "
                                     "them")
                self.progress.log(f"[yellow]warning[/]: {record['warning']}")
            return record
        labels = self.dataset.labels_of("test", self.recipe.gates.test_samples)
        record = source_check.check(labels, top1, self.dataset.classes, acc.accuracy,
                                    self.recipe.gates.min_source_accuracy,
                                    self.dataset.classes_from, source.step == "architecture",
                                    carried)
        self.progress.log(f"source: {acc.accuracy:.2f}% on {len(labels)} test images "
                          f"(chance {record['chance']:.2f}%); classes in the model's order")
        return record

    # --- everything ------------------------------------------------------------------

    def second_engines(self, artifacts: list[Artifact]) -> list[Pair]:
        """Artifacts paired with the recipe's other engines that are installed here."""
        if self.recipe.engines is None:
            return []
        kinds = {a.name: a.model.kind for a in artifacts}
        return [p for p in pairs(kinds, self.recipe.engines.candidates)
                if not p.default and installed(p.engine)]

    def everything(self, artifacts: list[Artifact]) -> tuple[list[Artifact], dict[str, Any]]:
        """(the artifacts with all they measured, where latency was timed)."""
        second = self.second_engines(artifacts)
        by_name = {a.name: a for a in artifacts}
        own = dict(zip(by_name, self.workers.each(
            lambda a: a.measured.accuracy or self._accuracy(a, None), artifacts), strict=True))
        alt = dict(zip([p.key for p in second], self.workers.each(
            lambda p: self._accuracy(by_name[p.artifact], p.engine), second), strict=True))
        latency, timed_on = self._latency(artifacts, second)
        out = []
        for art in artifacts:
            engines = {p.engine: self._compared(art.name, p.engine, alt[p.key], latency[p.key])
                       for p in second if p.artifact == art.name}
            ort, files = self._ort(art) if art.model.is_onnx else (None, ())
            out.append(replace(
                art, measured=self._compared(art.name, None, own[art.name], latency[art.name]),
                engines=engines, ort=ort, ort_files=files, size_bytes=size_bytes(art.model.path)))
        return out, timed_on

    def _compared(self, name: str, engine: str | None, accuracy: Accuracy,
                  latency: Latency) -> Measured:
        """Agreement, probability distance and per-class results against the source's
        answers on the same images."""
        classes, src = self.dataset.classes, self.scores[("source", None)]
        src_top1 = src.argmax(axis=1)
        labels = (self.dataset.labels_of("test", self.recipe.gates.test_samples)
                  if self.dataset.labeled else None)
        mine = self.scores[(name, engine)]
        per_class = agreement.per_class(classes, mine.argmax(axis=1), labels, src_top1)
        reference = agreement.per_class(classes, src_top1, labels, src_top1)
        return Measured(accuracy=accuracy, agreement=agreement.compare(src, mine),
                        per_class=per_class,
                        class_drop=agreement.class_drop(classes, per_class, reference),
                        latency=latency)

    def _latency(self, group: list[Artifact],
                 second: list[Pair]) -> tuple[dict[str, Latency], dict[str, Any]]:
        """One subprocess for all models, timed in alternating rounds, so ratios are fair;
        artifacts run by a second engine are timed in the same rounds. On a cluster with a
        node that declares the target's resource, that node times them, natively."""
        g, t = self.recipe.gates, self.recipe.target
        arts = {a.name: a for a in group}
        entries = {a.name: (a, None) for a in group} | {
            p.key: (arts[p.artifact], p.engine) for p in second}
        node = self.workers.target_node(t.name)
        where = {"ray_node": node["ip"], "resource": node["resource"]} if node else None
        key = self._key("latency", [(k, a.model.digest, e) for k, (a, e) in entries.items()],
                        code_of(measured_here, prepared), where)

        def compute() -> dict[str, Any]:
            x = {k: prepared(self.dataset, "test", a.model.preprocess, limit=1)
                 for k, (a, _) in entries.items()}
            args = ({k: a.model for k, (a, _) in entries.items()}, x, t.threads,
                    g.latency.warmup, g.latency.runs, targets.TARGETS[t.name].isa,
                    {k: e for k, (_, e) in entries.items() if e})
            if node is None:
                return {**measured_here(*args), "where": "build host"}
            value, ran = self.workers.on_node(f"latency on the {t.name} node", node,
                                              measured_here, *args, cpus=t.threads)
            return {**value, "where": ran}

        hit = self.ledger.measured(key, f"latency of {', '.join(entries)}", compute)
        timed_on = latency_timed_on(t.name, hit["where"], hit["cpu"])
        self.progress.log(f"latency timed on {timed_on['where']}: "
                          f"{timed_on['cpu']}, {timed_on['summary']}")
        out = {}
        for k, (art, engine) in entries.items():
            note = cap_note(engine or targets.default_engine(art.model.kind), t.name,
                            hit["cpu"])["note"]
            out[k] = Latency(**hit["models"][k], isa_cap=note)
        return out, timed_on

    def _ort(self, art: Artifact) -> tuple[OrtFormat, tuple]:
        """The .ort file and reduced-operator config of an ONNX artifact, and load times."""
        folder, _ = self.ledger.cached_dir(
            make_key({"ort_format": art.model.digest, "versions": versions(ENGINE_LIBS),
                      "code": code_of(ort_format.convert)}),
            f"ort format of {art.name}",
            lambda tmp: (tmp / "result.json").write_text(json.dumps(
                ort_format.convert(art.model.path, tmp))))
        result = json.loads((folder / "result.json").read_text())
        ort_file = folder / ort_format.ORT_FILE
        times = self.ledger.measured(
            self._key("ort_load", [art.model.digest], code_of(load_time.load_times)),
            f"load time of {art.name} (.onnx against .ort)",
            lambda: load_time.load_times(art.model.path, ort_file))
        return OrtFormat(**result, **times), (ort_file, folder / ort_format.CONFIG_FILE)
