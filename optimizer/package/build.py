"""Turning the chosen model into the packages a recipe asks for, each proved to run.

Dependencies are resolved once per (requirements, Python, architecture, glibc) and cached
slimmed; zips are cached by the dependency entry, the function folder's digest and the
layer count, so an unchanged rebuild reuses everything.
"""

from __future__ import annotations

import base64
import io
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from optimizer import targets, wheels
from optimizer.cache import code_digest, make_key
from optimizer.data.dataset import Dataset, prepared
from optimizer.emulation import interpreters
from optimizer.emulation import qemu as isa
from optimizer.errors import PackageFailed, PackageTooLarge
from optimizer.handler.engines import top_k
from optimizer.inference.predict import predict
from optimizer.model import ModelRef, sha256_tree, size_bytes
from optimizer.package import bytecode, elfcheck, image, lambda_zip, sam, slim
from optimizer.package.function import HANDLER_NAME, assemble
from optimizer.package.sizes import mib
from optimizer.preprocess_spec import apply
from optimizer.progress import Progress
from optimizer.recipe.schema import ImageConfig, Recipe

if TYPE_CHECKING:
    from optimizer.pipeline import Artifact

_HERE = Path(__file__).parent
DEPS_CODE = tuple(str(_HERE / f) for f in ("wheels.py", "slim.py", "slim_rules.py",
                                           "elfcheck.py", "sizes.py"))
ZIP_CODE = (*(str(_HERE / f) for f in ("build.py", "lambda_zip.py", "archive.py", "smoke.py",
                                        "layers.py", "bytecode.py")),
            *sorted(str(p) for p in (_HERE.parent / "handler").glob("*.py")),
            str(_HERE.parent / "validate" / "isa.py"))


SAMPLE_EVENT = "sample-event.json"  # test images the build got right, one per class
SAMPLE_EVENT_IMAGES = 8  # classes in sample-event.json (at most package.max_images)
EMULATED_SAMPLES = 10  # classes proved under qemu, 15-90x slower than native
# the handler rounds scores to 6 places; threads and CPU may move the last digits
SCORE_TOLERANCE = 1e-3


@dataclass
class Sample:
    """A test image the shipped model gets right at build time, and what to expect."""

    png: bytes
    label: str
    index: int
    score: float  # the model's top score for it at build time


@dataclass
class Packages:
    records: list[dict[str, Any]] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)  # published under package/
    notes: list[str] = field(default_factory=list)
    tune: dict[str, Any] | None = None


def _png(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.asarray(img, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def pick_samples(art: Artifact, dataset: Dataset, reference: list[int],
                 engine: str | None = None) -> list[Sample]:
    """One test image per class that the artifact answers right: as labelled, or (no
    labels) as the source answered it (`reference`, the source's test top-1). A proof on
    one image cannot tell a correct function from one whose class names are shifted."""
    idx = dataset.indices("test")
    expected = ([int(dataset.labels[i]) for i in idx[:len(reference)]] if dataset.labeled
                else list(reference))
    first: dict[int, int] = {}
    for i, predicted in enumerate(art.validation.get("top1", [])):
        if predicted == expected[i] and predicted not in first:
            first[predicted] = int(idx[i])
    if not first:
        raise PackageFailed(f"{art.name} gets no test image right; nothing to prove the "
                            "package with")
    chosen = [first[c] for c in sorted(first)]
    images = [dataset.images[i] for i in chosen]
    scores = predict(art.model, apply(images, art.model.preprocess), engine)
    # in the handler's terms: its labels, and softmax applied to logits
    logits = output_kind(art.model, dataset) == "logits"
    tops = top_k(scores, art.model.classes, 1, logits)
    return [Sample(_png(img), top[0]["label"], i, top[0]["score"])
            for img, i, top in zip(images, chosen, tops, strict=True)]


def output_kind(model: ModelRef, dataset: Dataset) -> str:
    """'probabilities' when rows are non-negative and sum to one, else 'logits'."""
    scores = predict(model, prepared(dataset, "test", model.preprocess, limit=8))
    # quantized softmax outputs sum to one only within a few percent
    probs = bool((scores >= 0).all() and np.allclose(scores.sum(axis=1), 1.0, atol=0.05))
    return "probabilities" if probs else "logits"


def _chunks(samples: list[Sample], size: int) -> list[list[Sample]]:
    return [samples[i:i + size] for i in range(0, len(samples), size)]


def proof_events(samples: list[Sample], max_images: int) -> list:
    """The first sample as a binary Function URL body, a body that is not an image, then
    every sample in JSON requests of at most `max_images` images."""
    first = lambda_zip.sample_event([samples[0].png])
    bad = {**first, "body": base64.b64encode(b"not an image").decode()}
    return [first, bad, *({"images": [base64.b64encode(s.png).decode() for s in chunk]}
                          for chunk in _chunks(samples, max(2, max_images)))]


def check_proof(responses: list[dict], samples: list[Sample], max_images: int,
                where: str) -> dict:
    """The handler's answers to proof_events: every class named as the build names it,
    with the build's score, and a 4xx for the bad request."""
    def body(r: dict) -> dict:
        return json.loads(r["body"])

    first, bad, *batches = responses
    answers = [(first, 0)]
    for r, chunk in zip(batches, _chunks(samples, max(2, max_images)), strict=True):
        answers += [(r, k) for k in range(len(chunk))]
    got = []
    for (r, k), sample in zip(answers, [samples[0], *samples], strict=True):
        if r.get("statusCode") != 200:
            raise PackageFailed(f"{where}: a request with test images got "
                                f"{r.get('statusCode')}: {str(r.get('body'))[:300]}")
        top = body(r)["predictions"][k]["top"][0]
        if top["label"] != sample.label:
            raise PackageFailed(f"{where}: the handler said '{top['label']}' for a test image "
                                f"the build classified as '{sample.label}'")
        if abs(top["score"] - sample.score) > SCORE_TOLERANCE:
            raise PackageFailed(f"{where}: the handler scored a '{sample.label}' test image "
                                f"{top['score']:.6f}, the build {sample.score:.6f}; "
                                "preprocessing or runtime differs")
        got.append(top)
    if not 400 <= bad.get("statusCode", 0) < 500 or "error" not in body(bad):
        raise PackageFailed(f"{where}: a request that is not an image got {bad}")
    return {"label": got[0]["label"], "score": got[0]["score"], "expected": samples[0].label,
            "build_score": round(samples[0].score, 6),
            "classes_checked": len(samples), "labels_checked": [s.label for s in samples],
            "bad_request_status": bad["statusCode"], "threads": body(first)["threads"]}


# (key, label, produce, remember_failure=False) -> (cache entry, reused): the build's
# counted, logged cache
CachedDir = Callable[..., tuple[Path, bool]]


class Packager:
    def __init__(self, recipe: Recipe, cached: CachedDir, progress: Progress,
                 ran: Callable[[str], None] | None = None) -> None:
        self.recipe, self.cached, self.progress = recipe, cached, progress
        # work with no cache entry (a Docker build) is announced and counted through this
        self.ran = ran or (lambda label: progress.log(f"[cyan]run[/]    {label}"))

    def dependencies(self, runtime: str, python: str, arch: str, glibc: str,
                     extra: tuple[str, ...] = ()) -> Path:
        """Cache entry with deps/ (slimmed, ELF-checked) and slim.json."""
        reqs = wheels.pinned(wheels.requirements(runtime) + extra, arch)
        key = make_key({"deps": reqs, "python": python, "arch": arch, "glibc": glibc,
                        "code": code_digest(*DEPS_CODE)})

        def produce(tmp: Path) -> None:
            deps = tmp / "deps"
            wheels.resolve(reqs, python, arch, glibc, deps)
            report = slim.slim(deps, runtime)
            count, problems = elfcheck.check_tree(deps, arch, glibc)
            if problems:
                shown = "\n  ".join(str(p) for p in problems[:10])
                raise PackageFailed(f"{len(problems)} shared object(s) cannot run on {arch} "
                                    f"with glibc {glibc}:\n  {shown}")
            # zipped sizes decide layer fit; past the unzipped limit no zip can fit anyway
            fits_unzipped = report["bytes_after"] <= targets.LIMITS.unzipped_bytes
            report.update(requirements=reqs, elf_files_checked=count, python=python,
                          arch=arch, glibc=glibc, zipped_by_distribution=(
                              slim.zipped_by_distribution(deps) if fits_unzipped else {}))
            (tmp / "slim.json").write_text(json.dumps(report, indent=1))

        return self.cached(key, f"dependencies {' '.join(reqs)} for Python {python} {arch}",
                           produce, remember_failure=True)[0]

    def wheel_sizes(self, runtime: str, python: str, arch: str, glibc: str) -> dict[str, int]:
        """The compressed size of each wheel a runtime needs on the target (no download)."""
        reqs = wheels.pinned(wheels.requirements(runtime), arch)
        key = make_key({"wheel_sizes": reqs, "python": python, "arch": arch, "glibc": glibc,
                        "code": code_digest(*DEPS_CODE)})

        def produce(tmp: Path) -> None:
            (tmp / "sizes.json").write_text(json.dumps(
                wheels.wheel_sizes(reqs, python, arch, glibc, tmp / "work"), indent=1))
            shutil.rmtree(tmp / "work", ignore_errors=True)

        entry = self.cached(key, f"wheel sizes of {' '.join(reqs)} for Python {python} {arch}",
                            produce, remember_failure=True)[0]
        return json.loads((entry / "sizes.json").read_text())

    def run(self, art: Artifact, dataset: Dataset, work: Path, reference: list[int],
            engine: str | None = None) -> Packages:
        """`engine`: the inference runtime to ship (default: the model kind's own);
        `reference`: the source's top-1 on the test split (what 'right' means without
        labels)."""
        cfg, t = self.recipe.package, self.recipe.target
        out = Packages()
        runtime = targets.RUNTIMES[t.runtime]
        arch = targets.TARGETS[t.name].arch
        kind = engine or targets.default_runtime(art.model.kind)
        samples = pick_samples(art, dataset, reference, kind)
        if missing := [c for c in art.model.classes if c not in {s.label for s in samples}]:
            out.notes.append(f"the proof covers {len(samples)} of {len(art.model.classes)} "
                             f"classes; no test image of {', '.join(missing[:8])}"
                             f"{', ...' if len(missing) > 8 else ''} was answered right")
        function_dir = work / "function"
        assemble(function_dir, art.model, self.recipe.name, t.memory_mb, cfg.top_k,
                 cfg.max_images, output_kind(art.model, dataset), t.runtime, arch, kind)
        shown = samples[:min(SAMPLE_EVENT_IMAGES, cfg.max_images)]
        (work / SAMPLE_EVENT).write_text(json.dumps(
            lambda_zip.sample_event([x.png for x in shown])))
        out.files.append(work / SAMPLE_EVENT)
        fn_bytes = size_bytes(function_dir)
        image_cfg = cfg.image
        if cfg.zip is not None:
            deps = self.dependencies(kind, runtime.python, arch, runtime.glibc)
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
                self._zip(plan, function_dir, deps, slimmed, fn_bytes, samples, out)
        if image_cfg is not None:
            image.build(self, image_cfg, function_dir, kind, samples, work, out)
        for rec in out.records:
            rec.update(model=art.name, model_runtime=kind)
        if cfg.tune is not None:
            # batch 1, like every latency in the report
            self._tune(out, work, lambda_zip.sample_event([samples[0].png]))
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

    def _tune(self, out: Packages, work: Path, event: dict) -> None:
        """The memory sweep of `optimizer tune`, on the zip if there is one, else the image."""
        from optimizer.lambda_local import tune as tuning
        from optimizer.lambda_local.deployable import open_deployable
        from optimizer.report.tune_plot import render

        cfg = self.recipe.package.tune
        assert cfg is not None
        zips = [f for f in out.files if f.suffix == ".zip"]
        images = [r["ref"] for r in out.records if r["kind"] == "image"]
        if zips:
            pkg = work / "tune-package"
            pkg.mkdir()
            for f in zips:
                shutil.copyfile(f, pkg / f.name)
            target = str(pkg)
        elif images:
            target = f"docker://{images[0]}"
        else:
            out.notes.append("tune: nothing to run (no zip, and no image in an engine)")
            return
        self.progress.log(f"[cyan]tune[/]   {target.rsplit('/', 1)[-1]} at "
                          f"{', '.join(map(str, cfg.memory))} MB")
        dep = open_deployable(target, work / "tune-run")
        out.tune = tuning.run(dep, event, cfg.memory, cfg.invocations, cfg.strategy,
                              cfg.timeout_s, progress=self.progress.log,
                              cold_starts_per_1000=self.recipe.gates.cold_starts_per_1000)
        (work / "tune.html").write_text(render(out.tune))
        out.files.append(work / "tune.html")

    def _prove_isa(self, zips: list[Path], plan: lambda_zip.ZipPlan,
                   samples: list[Sample]) -> tuple[dict, dict | None]:
        """The same proof with the CPU the target promises, not the one this host has:
        (what to record under proof.isa, the full checked proof with its Python, or None)."""
        target = self.recipe.target.name
        try:
            emu = isa.emulator(target, plan.python, log=self.progress.log)
        except PackageFailed as exc:  # no debootstrap or no mirror: say so, do not fail
            return {"skipped": str(exc)}, None
        if emu is None:
            return {"skipped": isa.why_not(target, plan.python)}, None
        self.progress.log(f"prove  zip under {emu.describe()} (the {target} target's ISA)")
        samples = samples[:EMULATED_SAMPLES]
        max_images = self.recipe.package.max_images
        result = lambda_zip.prove(zips, plan, proof_events(samples, max_images), emulate=emu,
                                  target=target)
        checked = check_proof(result["responses"], samples, max_images,
                              f"zip under {emu.describe()}")
        return ({"emulator": emu.describe(), "label": checked["label"],
                 "score": checked["score"], "seconds": result["seconds"]},
                {**checked, "python": result["python"]})

    @staticmethod
    def _write_zips(function_dir: Path, deps: Path, plan: lambda_zip.ZipPlan,
                    out: Path) -> tuple[list[Path], dict]:
        """The zips, with bytecode for what a cold start imports compiled by the runtime's
        Python (see bytecode.py); without that Python, without."""
        python = interpreters.find_python(plan.python)
        if python is None:
            return (lambda_zip.write(function_dir, deps, plan, out),
                    {"skipped": f"no Python {plan.python} here to compile bytecode with"})
        fn_stage, deps_stage = out / ".stage-function", out / ".stage-deps"
        bytecode.stage(function_dir, fn_stage)
        bytecode.stage(deps, deps_stage)
        try:
            pyc = bytecode.compile_tree(
                python, plan.python, {fn_stage: "/var/task",
                         deps_stage: "/opt/python" if plan.layers else "/var/task"},
                native=interpreters.can_run(plan.arch))
            return lambda_zip.write(fn_stage, deps_stage, plan, out), pyc
        finally:
            shutil.rmtree(fn_stage, ignore_errors=True)
            shutil.rmtree(deps_stage, ignore_errors=True)

    def _zip(self, plan: lambda_zip.ZipPlan, function_dir: Path, deps: Path, slimmed: dict,
             fn_bytes: int, samples: list[Sample], out: Packages) -> None:
        max_images = self.recipe.package.max_images
        key = make_key({"zip": deps.name, "function": sha256_tree(function_dir),
                        "plan": plan.__dict__, "code": code_digest(*ZIP_CODE),
                        "provers": isa.provers(self.recipe.target.name)})

        def produce(tmp: Path) -> None:
            zips, pyc = self._write_zips(function_dir, deps / "deps", plan, tmp)
            records, limits = lambda_zip.describe(zips)
            over = [lim for lim in limits if not lim.ok]
            if over:
                hint = (" (spread the dependencies over more layers with package.zip.layers)"
                        if plan.layers < targets.LIMITS.max_layers
                        and any(lim.what.endswith(" zipped") for lim in over) else "")
                raise PackageTooLarge("; ".join(
                    f"{lim.what}: {mib(lim.size)} ({lim.size:,} B) over the "
                    f"{mib(lim.limit)} limit" for lim in over) + hint)
            if native := interpreters.can_run(plan.arch):
                result = lambda_zip.prove(zips, plan, proof_events(samples, max_images))
                proof = {**check_proof(result["responses"], samples, max_images, "zip"),
                         "python": result["python"], "init_ms": round(result["init_ms"], 1),
                         "init_breakdown": result["init_breakdown"]}
            emulated, checked = self._prove_isa(zips, plan, samples)
            if native:
                proof["isa"] = emulated
            elif checked:  # a foreign CPU: the emulated run is the proof
                proof = {**checked, "isa": emulated}
            else:
                proof = {"skipped": f"the package is for {plan.arch} and this machine cannot "
                                    f"run it natively; {emulated['skipped']}"}
            smoke_ok = native or checked is not None
            (tmp / "result.json").write_text(json.dumps({
                "records": records, "limits": [lim.__dict__ for lim in limits],
                "proof": proof, "proved": smoke_ok, "bytecode": pyc}, indent=1))

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
