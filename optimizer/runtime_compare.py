"""The build's runtime comparison: every (artifact, runtime) pairing on every target.

The pipeline has already measured each artifact with its own runtime and each alternate
runtime on this host; this adds what depends on the target: package size from the target's
wheels, emulated timing where this host cannot run the target natively, and the winner.
See optimizer.validate.runtimes for the rules.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from optimizer import targets
from optimizer.cache import code_digest, make_key
from optimizer.data.dataset import Dataset, prepared
from optimizer.emulation import qemu as isa
from optimizer.errors import OptimizerError
from optimizer.measure import latency, latency_worker
from optimizer.measure.latency import cap_note, measure
from optimizer.model import size_bytes
from optimizer.package.build import Packager
from optimizer.package.function import HANDLER_SRC
from optimizer.report import runtimes as report_runtimes
from optimizer.select import engines as runtimes
from optimizer.select import gates as gate_checks

if TYPE_CHECKING:
    from optimizer.pipeline import Artifact, Builder

EMULATED_WARMUP = 3
EMULATED_PER_ROUND = 5  # runs per round under qemu, where a run takes milliseconds


class RuntimeComparison:
    def __init__(self, builder: Builder, artifacts: list[Artifact], source: Artifact,
                 dataset: Dataset) -> None:
        self.builder, self.source, self.dataset = builder, source, dataset
        self.recipe = builder.recipe
        assert self.recipe.runtimes is not None
        self.cfg = self.recipe.runtimes
        self.arts = {a.name: a for a in artifacts}
        self.packager = Packager(self.recipe, builder.cached_dir, builder.progress,
                                 builder.ran)
        pkg = self.recipe.package
        # the package type the winner must fit: a zip when the recipe makes one (or none)
        self.layers: int | None = (pkg.zip.layers if pkg.zip else 1 if pkg.image is None
                                   else None)
        self._deps: dict[tuple, tuple[Path | None, str]] = {}
        self.handler_bytes = sum(f.stat().st_size for f in HANDLER_SRC.glob("*.py"))

    def run(self) -> dict[str, Any]:
        kinds = {n: a.model.kind for n, a in self.arts.items()}
        pairs = runtimes.pairs(kinds, self.cfg.candidates)
        out: dict[str, Any] = {
            "candidates": self.cfg.candidates, "prefer": self.builder.prefer,
            "package_type": "image" if self.layers is None else
                            f"zip with {self.layers} layer(s)",
            "versions": {rt: runtimes.installed(rt) for rt in self.cfg.candidates},
            "targets": {},
        }
        for target in self.recipe.compared_targets():
            native = runtimes.native(target)
            rows = [self._row(p, target, self._failed_gates(p, target), native)
                    for p in pairs]
            how = "native" if native else self._emulate(target, rows)
            winner = runtimes.choose(rows, self.builder.prefer)
            best = runtimes.best_per_runtime(rows, self.builder.prefer)
            for r in best:
                r["why_not"] = runtimes.why_not(r)
            out["targets"][target] = {
                "isa": targets.TARGETS[target].isa, "timing": how, "rows": rows,
                "best_per_runtime": best, "winner": winner}
            self.builder.progress.log(report_runtimes.winner_line(target, winner, how))
        return out

    # --- per pairing ----------------------------------------------------------------

    def _failed_gates(self, p: runtimes.Pair, target: str) -> list[str]:
        """The recipe's gates on what this runtime measured, judged for this target."""
        art = self.arts[p.artifact]
        v = art.validation
        if not p.default:
            alt = v.get("runtimes", {}).get(p.runtime)
            if not alt or "latency" not in alt:
                return ["not measured"]
            v = {**v, **alt}
        copy = dataclasses.replace(art, validation=v)
        return [g["gate"] for g in gate_checks.check(copy, self.source, self.recipe, target)
                if not g["passed"]]

    def _row(self, p: runtimes.Pair, target: str, failed: list[str],
             native: bool) -> dict[str, Any]:
        art = self.arts[p.artifact]
        v = art.validation if p.default else art.validation.get("runtimes", {}).get(
            p.runtime, {})
        row: dict[str, Any] = {
            "key": p.key, "artifact": p.artifact, "runtime": p.runtime, "kind": art.model.kind,
            "accuracy": v.get("accuracy"), "passed": not failed, "failed_gates": failed,
            "model_bytes": size_bytes(art.model.path),
            # this host's time: what ranks pairings on a target nothing could time
            "host_p50_ms": v.get("latency", {}).get("p50_ms")}
        deps, reason = self._dependencies(p.runtime, target)
        if deps is None:
            return {**row, "available": False, "reason": reason}
        if runtimes.installed(p.runtime) is None:
            return {**row, "available": False, "reason": f"{p.runtime} exists for this target "
                    "but is not installed in the build's environment, so nothing was measured"}
        size = deps["bytes"] + row["model_bytes"] + self.handler_bytes
        # the model barely deflates; the handler is a few kB
        why = deps.get("note") or runtimes.fits(size, self.layers, deps["unzipped"],
                                                deps["zipped"],
                                                row["model_bytes"] + self.handler_bytes)
        if deps.get("lower_bound"):
            row["package_bytes_lower_bound"] = True
        row.update(available=True, package_bytes=size, dependency_bytes=deps["bytes"],
                   requirements=deps["requirements"], fits=not why, fit_note=why)
        if native:
            lat = v.get("latency", {})
            row.update(p50_ms=lat.get("p50_ms"), p95_ms=lat.get("p95_ms"), timing="native",
                       isa_cap=cap_note(p.runtime, target))
        return row

    def _dependencies(self, runtime: str, target: str,
                      python: str | None = None) -> tuple[dict | None, str]:
        """({bytes, requirements, path}, "") or (None, why): the runtime's slimmed wheels."""
        t, rt = targets.TARGETS[target], targets.INFERENCE_RUNTIMES[runtime]
        lam = targets.RUNTIMES[self.recipe.target.runtime]
        python = python or lam.python
        memo = (runtime, t.arch, python)
        if memo not in self._deps:
            if t.arch not in rt.arches:
                self._deps[memo] = (None, f"{runtime} is built for {', '.join(rt.arches)} only")
            elif (too_big := self._over_zip(runtime, python, t.arch, lam.glibc)) is not None:
                self._deps[memo] = too_big
            else:
                try:
                    entry = self.packager.dependencies(runtime, python, t.arch, lam.glibc)
                    slim = json.loads((entry / "slim.json").read_text())
                    self._deps[memo] = ({
                        "bytes": slim["bytes_after"], "path": entry / "deps",
                        "requirements": slim["requirements"],
                        "unzipped": {d: v["after"] for d, v in slim["by_distribution"].items()},
                        "zipped": slim["zipped_by_distribution"]}, "")
                except OptimizerError as exc:
                    self._deps[memo] = (None, "no wheels for Python "
                                        f"{python} {t.arch}: {runtimes.first_line(exc)}")
        return self._deps[memo]  # type: ignore[return-value]

    def _over_zip(self, runtime: str, python: str, arch: str,
                  glibc: str) -> tuple[dict | None, str] | None:
        """For a zip: (lower-bound entry, "") when the runtime's wheels alone, compressed, are
        over the unzipped limit, so it is ruled out without downloading them; else None."""
        if self.layers is None:
            return None
        try:
            sizes = self.packager.wheel_sizes(runtime, python, arch, glibc)
        except OptimizerError as exc:
            return None, f"no wheels for Python {python} {arch}: {runtimes.first_line(exc)}"
        total = sum(sizes.values())
        if total <= targets.LIMITS.unzipped_bytes:
            return None
        biggest = max(sizes, key=lambda d: sizes[d])
        return {"bytes": total, "path": None, "lower_bound": True,
                "requirements": sorted(sizes), "unzipped": sizes, "zipped": sizes,
                "note": f"its wheels alone are {total / 2**20:,.0f} MiB compressed ({biggest} "
                        f"{sizes[biggest] / 2**20:,.0f} MiB), more than Lambda's "
                        f"{targets.LIMITS.unzipped_bytes / 2**20:,.0f} MiB unzipped for a "
                        "function and its layers; not downloaded"}, ""

    # --- a target this host cannot run --------------------------------------------

    def _emulate(self, target: str, rows: list[dict]) -> str:
        """Times the rows that could win under qemu; returns how the target was timed."""
        lam = targets.RUNTIMES[self.recipe.target.runtime]
        python = (lam.python if lam.python in isa.SUITE_FOR_PYTHON
                  else runtimes.EMULATION_PYTHON)
        todo = [r for r in rows if r.get("available") and r["passed"] and r["fits"]]
        try:
            emu = isa.emulator(target, python, log=self.builder.progress.log)
            why = "" if emu else isa.why_not(target, python)
        except OptimizerError as exc:  # no debootstrap or no mirror
            emu, why = None, str(exc)
        if emu is None:
            for r in rows:
                r["latency_note"] = f"not timed: {why}"
            return f"not timed: {why}"
        deps = {}
        for r in todo:
            got, reason = self._dependencies(r["runtime"], target, python)
            if got is None:
                r["latency_note"] = f"not timed under emulation: {reason}"
            else:
                deps[r["runtime"]] = got["path"]
        todo = [r for r in todo if r["runtime"] in deps]
        key = make_key({"emulated": target, "cpu": emu.cpu, "python": python,
                        "models": [(r["key"], self.arts[r["artifact"]].model.digest)
                                   for r in todo],
                        "deps": sorted(str(p) for p in deps.values()),
                        "runs": self.cfg.emulated_runs,
                        "code": code_digest(runtimes.__file__, latency.__file__,
                                            latency_worker.__file__,
                                            *(str(f) for f in HANDLER_SRC.glob("*.py")))})

        def compute() -> dict[str, Any]:
            models = {r["key"]: self.arts[r["artifact"]].model for r in todo}
            x = {k: prepared(self.dataset, "test", m.preprocess, limit=1)
                 for k, m in models.items()}
            return measure(models, x, 1, EMULATED_WARMUP, self.cfg.emulated_runs,
                           targets.TARGETS[target].isa,
                           runtimes={r["key"]: r["runtime"] for r in todo}, emulate=emu,
                           deps=tuple(deps.values()), target=target,
                           per_round=EMULATED_PER_ROUND)

        hit = self.builder.measured(
            key, f"latency of {len(todo)} pairing(s) under {emu.describe()} "
                 f"(Python {python})", compute) if todo else {}
        for r in todo:
            r.update(p50_ms=hit[r["key"]]["p50_ms"], p95_ms=hit[r["key"]]["p95_ms"],
                     timing=f"emulated: {emu.describe()}, Python {python}",
                     isa_cap={"applied": True, "how": f"qemu -cpu {emu.cpu}", "needed": True,
                              "note": f"the emulated CPU is the target's ({emu.cpu})"})
        for r in rows:
            if r.get("available") and r.get("p50_ms") is None and "latency_note" not in r:
                r["latency_note"] = ("not timed under emulation: it failed the gates"
                                     if not r["passed"] else "not timed under emulation: "
                                     "it does not fit the package")
        return f"emulated ({emu.describe()}, Python {python}; ranks, not Graviton speed)"
