"""Turning the chosen model into the packages a recipe asks for, each proved to run.

Dependencies are resolved once per (requirements, Python, architecture, glibc) and cached
slimmed; zips are cached by the dependency entry, the function folder's digest and the
layer count, so an unchanged rebuild reuses everything.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from optimizer import targets
from optimizer.artifact import Artifact
from optimizer.cache import make_key
from optimizer.codekey import code_of
from optimizer.data.dataset import Dataset
from optimizer.emulation import interpreters, qemu
from optimizer.model import sha256_tree, size_bytes
from optimizer.package import image, lambda_zip, sam
from optimizer.package.dependencies import CachedDir, Dependencies
from optimizer.package.function import HANDLER_NAME, assemble
from optimizer.package.proof import (
    SAMPLE_EVENT,
    SAMPLE_EVENT_IMAGES,
    Answers,
    Sample,
    output_kind,
    pick_samples,
    sample_event,
)
from optimizer.package.sizes import mib
from optimizer.progress import Progress
from optimizer.recipe.schema import ImageConfig, Recipe


@dataclass
class Packages:
    records: list[dict[str, Any]] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)  # published under package/
    notes: list[str] = field(default_factory=list)
    tune: dict[str, Any] | None = None


class Packager:
    def __init__(self, recipe: Recipe, cached: CachedDir, progress: Progress,
                 ran: Callable[[str], None] | None = None) -> None:
        self.recipe, self.cached, self.progress = recipe, cached, progress
        self.deps = Dependencies(cached)
        # work with no cache entry (a Docker build) is announced and counted through this
        self.ran = ran or (lambda label: progress.log(f"[cyan]run[/]    {label}"))

    def run(self, art: Artifact, dataset: Dataset, work: Path, reference: list[int],
            engine: str | None = None, answer: dict | None = None) -> Packages:
        """`engine`: the inference engine to ship (default: the model kind's own);
        `reference`: the source's top-1 on the test split (what 'right' means without
        labels); `answer`: an MMS handler's answer shape, to respond with."""
        cfg, t = self.recipe.package, self.recipe.target
        out = Packages()
        runtime = targets.RUNTIMES[t.runtime]
        arch = targets.TARGETS[t.name].arch
        kind = engine or targets.default_engine(art.model.kind)
        output = output_kind(art.model, dataset)
        answers = Answers(art.model, kind, output == "logits", targets.threads_for(t.memory_mb))
        samples = pick_samples(art, dataset, reference, answers)
        if missing := [c for c in art.model.classes if c not in {s.label for s in samples}]:
            out.notes.append(f"the proof covers {len(samples)} of {len(art.model.classes)} "
                             f"classes; no test image of {', '.join(missing[:8])}"
                             f"{', ...' if len(missing) > 8 else ''} was answered right")
        function_dir = work / "function"
        assemble(function_dir, art.model, self.recipe.name, t.memory_mb, cfg.top_k,
                 cfg.max_images, output, t.runtime, arch, kind, answer)
        shown = samples[:min(SAMPLE_EVENT_IMAGES, cfg.max_images)]
        (work / SAMPLE_EVENT).write_text(json.dumps(
            sample_event([x.png for x in shown])))
        out.files.append(work / SAMPLE_EVENT)
        fn_bytes = size_bytes(function_dir)
        image_cfg = cfg.image
        if cfg.zip is not None:
            deps = self.deps.resolve(kind, runtime.python, arch, runtime.glibc)
            slimmed = json.loads((deps / "slim.json").read_text())
            total = fn_bytes + slimmed["bytes_after"]
            limit = targets.LIMITS.unzipped_bytes
            if total > limit:
                reason = (f"a {kind} zip would be {mib(total)} unzipped ({total:,} B), over "
                          f"Lambda's {mib(limit)} ({limit:,} B) limit for a function plus "
                          "layers")
                out.records.append({"kind": "zip", "refused": reason, "unzipped_bytes": total,
                                    "limit_bytes": limit})
                out.notes.append(reason + "; built as a container image instead")
                self.progress.log(f"[yellow]zip refused[/]: {reason}")
                if image_cfg is None:
                    image_cfg = ImageConfig()
            else:
                plan = lambda_zip.ZipPlan(runtime.python, arch, t.memory_mb, cfg.zip.layers)
                self._zip(plan, function_dir, deps, slimmed, fn_bytes, samples, answers, out)
        if image_cfg is not None:
            out.records += image.build(self.recipe, image_cfg, self.deps, self.ran, function_dir,
                                       kind, samples, answers, work, out.files)
        for rec in out.records:
            rec.update(model=art.name, model_runtime=kind)
        if cfg.tune is not None:
            # batch 1, like every latency in the report
            self._tune(out, work, sample_event([samples[0].png]), [x.png for x in samples])
        self._template(art.name, out, work)
        return out

    def _template(self, model: str, out: Packages, work: Path) -> None:
        t = self.recipe.target
        best = (out.tune or {}).get("recommended_memory_mb")
        memory, source = ((best, "the memory sweep's recommendation") if best
                          else (t.memory_mb, "the recipe's target.memory_mb"))
        text, notes = sam.render(self.recipe.name, model, out.records, t.runtime, memory,
                                 self.recipe.package.deploy, source)
        if "Function:" not in text:
            return  # every package was refused
        (work / sam.TEMPLATE).write_text(text)
        out.files.append(work / sam.TEMPLATE)
        out.notes.extend(notes)

    def _tune(self, out: Packages, work: Path, event: dict, images: list[bytes]) -> None:
        """The memory sweep of `optimizer tune`, on the zip if there is one, else the image;
        with batch sizes, the sweep of `optimizer tune --batch` over `images`."""
        from optimizer.lambda_local import batch_tune
        from optimizer.lambda_local import tune as tuning
        from optimizer.lambda_local.deployable import open_deployable
        from optimizer.report.tune_plot import render

        cfg = self.recipe.package.tune
        assert cfg is not None
        zips = [f for f in out.files if f.suffix == ".zip"]
        refs = [r["ref"] for r in out.records if r["kind"] == "image"]
        if zips:
            pkg = work / "tune-package"
            pkg.mkdir()
            for f in zips:
                shutil.copyfile(f, pkg / f.name)
            target = str(pkg)
        elif refs:
            target = f"docker://{refs[0]}"
        else:
            out.notes.append("tune: nothing to run (no zip, and no image in an engine)")
            return
        self.progress.log(f"[cyan]tune[/]   {target.rsplit('/', 1)[-1]} at "
                          f"{', '.join(map(str, cfg.memory))} MB")
        dep = open_deployable(target, work / "tune-run")
        cold = self.recipe.gates.cold_starts_per_1000
        out.tune = batch_tune.run(
            dep, images, cfg.memory, sorted(set(cfg.batch)), cfg.invocations, cfg.strategy,
            cfg.timeout_s, cold, self.progress.log) if cfg.batch != [1] else tuning.run(
            dep, event, cfg.memory, cfg.invocations, cfg.strategy, cfg.timeout_s,
            progress=self.progress.log, cold_starts_per_1000=cold)
        (work / "tune.html").write_text(render(out.tune))
        out.files.append(work / "tune.html")

    def _zip(self, plan: lambda_zip.ZipPlan, function_dir: Path, deps: Path, slimmed: dict,
             fn_bytes: int, samples: list[Sample], answers: Answers, out: Packages) -> None:
        target = self.recipe.target.name
        key = make_key({"zip": deps.name, "function": sha256_tree(function_dir),
                        "plan": plan.__dict__, "code": code_of(lambda_zip.make_and_prove),
                        "provers": qemu.provers(target),
                        # a proof skipped for want of the runtime's Python is made again
                        # once one is installed
                        "python_here": str(interpreters.find_python(plan.python))})

        def produce(tmp: Path) -> None:
            result = lambda_zip.make_and_prove(plan, function_dir, deps / "deps", samples,
                                               answers, self.recipe.package.max_images, target,
                                               tmp, self.progress.log)
            (tmp / "result.json").write_text(json.dumps(result, indent=1))

        entry, _ = self.cached(key, f"zip package ({plan.layers} layer(s), Python "
                                    f"{plan.python}, {plan.arch})", produce)
        result = json.loads((entry / "result.json").read_text())
        for rec in result["records"]:
            if rec["kind"] == "zip":
                rec["slim"] = {"function_bytes": fn_bytes,
                               "dependencies_before": slimmed["bytes_before"],
                               "dependencies_after": slimmed["bytes_after"],
                               "removed_by_rule": slimmed["removed_by_rule"],
                               "by_distribution": slimmed["by_distribution"]}
                rec["proof"] = result["proof"]
                rec["bytecode"] = result.get("bytecode")
                rec["handler"] = HANDLER_NAME
                rec["runtime"] = self.recipe.target.runtime
                rec["architecture"] = plan.arch
            rec["limits"] = [lim for lim in result["limits"]
                             if lim["what"] == f"{rec['file']} zipped"
                             or (rec["kind"] == "zip" and not lim["what"].endswith(" zipped"))]
            out.records.append(rec)
            out.files.append(entry / rec["file"])
