"""The engine comparison: every (artifact, engine) pairing on every target the recipe names.

The measure stage has already measured each artifact with its own engine and each second
engine on this host; this adds what depends on the target: package size from the target's
wheels, emulated timing where this host cannot run the target natively, and the winner.
See optimizer.select.engines for the rules. report.json calls engines `runtimes`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from optimizer import targets
from optimizer.artifact import Artifact
from optimizer.build.ledger import Ledger
from optimizer.cache import make_key
from optimizer.codekey import code_of
from optimizer.data.dataset import Dataset, prepared
from optimizer.emulation import debian, qemu
from optimizer.errors import OptimizerError
from optimizer.measure.latency import cap_note, measure
from optimizer.package import function
from optimizer.package.dependencies import Dependencies
from optimizer.recipe.schema import Recipe
from optimizer.report import runtimes as report_engines
from optimizer.select import engines
from optimizer.select.gates import check, insists

EMULATED_WARMUP = 3
EMULATED_PER_ROUND = 5  # runs per round under qemu, where a run takes milliseconds


class Comparison:
    def __init__(self, recipe: Recipe, artifacts: list[Artifact], dataset: Dataset,
                 ledger: Ledger, prefer: str) -> None:
        assert recipe.engines is not None
        self.recipe, self.cfg, self.dataset = recipe, recipe.engines, dataset
        self.ledger, self.prefer = ledger, prefer
        self.arts = {a.name: a for a in artifacts}
        self.source = artifacts[0]
        self.deps = Dependencies(ledger.cached_dir)
        pkg = recipe.package
        # the package type the winner must fit: a zip when the recipe makes one (or none)
        self.layers: int | None = (pkg.zip.layers if pkg.zip else 1 if pkg.image is None
                                   else None)
        self._deps: dict[tuple, tuple[dict | None, str]] = {}
        self.handler_bytes = function.handler_bytes()

    def run(self) -> dict[str, Any]:
        kinds = {n: a.model.kind for n, a in self.arts.items()}
        pairs = engines.pairs(kinds, self.cfg.candidates)
        out: dict[str, Any] = {
            "candidates": self.cfg.candidates, "prefer": self.prefer,
            "package_type": "image" if self.layers is None else
                            f"zip with {self.layers} layer(s)",
            "versions": {e: engines.installed(e) for e in self.cfg.candidates},
            "targets": {},
        }
        for target in self.recipe.compared_targets():
            native = engines.native(target)
            rows = [self._row(p, target, self._failed_gates(p, target), native)
                    for p in pairs]
            how = "native" if native else self._emulate(target, rows)
            winner = engines.choose(rows, self.prefer)
            best = engines.best_per_engine(rows, self.prefer)
            for r in best:
                r["why_not"] = engines.why_not(r)
            out["targets"][target] = {
                "isa": targets.TARGETS[target].isa, "timing": how, "rows": rows,
                "best_per_runtime": best, "winner": winner}
            self.ledger.progress.log(report_engines.winner_line(target, winner, how))
        return out

    # --- per pairing ----------------------------------------------------------------

    def _failed_gates(self, p: engines.Pair, target: str) -> list[str]:
        """The recipe's gates on what this engine measured, judged for this target."""
        art = self.arts[p.artifact]
        if not p.default:
            alt = art.engines.get(p.engine)
            if alt is None or alt.latency is None:
                return ["not measured"]
            art = art.run_by(p.engine)
        return [g.gate for g in check(art, self.source, self.recipe.gates, target,
                                      insists(self.recipe, art)) if not g.passed]

    def _row(self, p: engines.Pair, target: str, failed: list[str],
             native: bool) -> dict[str, Any]:
        art = self.arts[p.artifact]
        m = art.measured if p.default else art.engines.get(p.engine)
        lat = m.latency if m is not None else None
        row: dict[str, Any] = {
            "key": p.key, "artifact": p.artifact, "runtime": p.engine, "kind": art.model.kind,
            "accuracy": m.accuracy.accuracy if m is not None and m.accuracy else None,
            "passed": not failed, "failed_gates": failed, "model_bytes": art.size_bytes,
            # this host's time: what ranks pairings on a target nothing could time
            "host_p50_ms": lat.p50_ms if lat else None}
        deps, reason = self._dependencies(p.engine, target)
        if deps is None:
            return {**row, "available": False, "reason": reason}
        if engines.installed(p.engine) is None:
            return {**row, "available": False, "reason": f"{p.engine} exists for this target "
                    "but is not installed in the build's environment, so nothing was measured"}
        size = deps["bytes"] + row["model_bytes"] + self.handler_bytes
        # the model barely deflates; the handler is a few kB
        why = deps.get("note") or engines.fits(size, self.layers, deps["unzipped"],
                                               deps["zipped"],
                                               row["model_bytes"] + self.handler_bytes)
        if deps.get("lower_bound"):
            row["package_bytes_lower_bound"] = True
        row.update(available=True, package_bytes=size, dependency_bytes=deps["bytes"],
                   requirements=deps["requirements"], fits=not why, fit_note=why)
        if native:
            row.update(p50_ms=lat.p50_ms if lat else None, p95_ms=lat.p95_ms if lat else None,
                       timing="native", isa_cap=cap_note(p.engine, target))
        return row

    def _dependencies(self, engine: str, target: str,
                      python: str | None = None) -> tuple[dict | None, str]:
        """({bytes, requirements, path}, "") or (None, why): the engine's slimmed wheels."""
        t, e = targets.TARGETS[target], targets.ENGINES[engine]
        lam = targets.RUNTIMES[self.recipe.target.runtime]
        python = python or lam.python
        memo = (engine, t.arch, python)
        if memo not in self._deps:
            if t.arch not in e.arches:
                self._deps[memo] = (None, f"{engine} is built for {', '.join(e.arches)} only")
            elif (too_big := self._over_zip(engine, python, t.arch, lam.glibc)) is not None:
                self._deps[memo] = too_big
            else:
                try:
                    entry = self.deps.resolve(engine, python, t.arch, lam.glibc)
                    slim = json.loads((entry / "slim.json").read_text())
                    self._deps[memo] = ({
                        "bytes": slim["bytes_after"], "path": entry / "deps",
                        "requirements": slim["requirements"],
                        "unzipped": {d: v["after"] for d, v in slim["by_distribution"].items()},
                        "zipped": slim["zipped_by_distribution"]}, "")
                except OptimizerError as exc:
                    self._deps[memo] = (None, "no wheels for Python "
                                        f"{python} {t.arch}: {engines.first_line(exc)}")
        return self._deps[memo]

    def _over_zip(self, engine: str, python: str, arch: str,
                  glibc: str) -> tuple[dict | None, str] | None:
        """For a zip: (lower-bound entry, "") when the engine's wheels alone, compressed, are
        over the unzipped limit, so it is ruled out without downloading them; else None."""
        if self.layers is None:
            return None
        try:
            sizes = self.deps.wheel_sizes(engine, python, arch, glibc)
        except OptimizerError as exc:
            return None, f"no wheels for Python {python} {arch}: {engines.first_line(exc)}"
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

    def _emulator(self, target: str, python: str) -> tuple[qemu.Emulator | None, str]:
        try:
            emu = qemu.emulator(target, python, log=self.ledger.progress.log)
            return emu, "" if emu else qemu.why_not(target, python)
        except OptimizerError as exc:  # no debootstrap or no mirror
            return None, str(exc)

    def _emulate(self, target: str, rows: list[dict]) -> str:
        """Times the rows that could win under qemu; returns how the target was timed."""
        lam = targets.RUNTIMES[self.recipe.target.runtime]
        python = (lam.python if lam.python in debian.SUITE_FOR_PYTHON
                  else engines.EMULATION_PYTHON)
        emu, why = self._emulator(target, python)
        if emu is None:
            for r in rows:
                r["latency_note"] = f"not timed: {why}"
            return f"not timed: {why}"
        todo, deps = self._emulated_deps(target, python, rows)
        hit = self.ledger.measured(
            self._emulated_key(target, emu, python, todo, deps),
            f"latency of {len(todo)} pairing(s) under {emu.describe()} (Python {python})",
            lambda: self._time_emulated(target, emu, todo, deps)) if todo else {}
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

    def _emulated_deps(self, target: str, python: str,
                       rows: list[dict]) -> tuple[list[dict], dict[str, Path]]:
        """The rows that could win, and the target's wheels for each of their engines."""
        todo = [r for r in rows if r.get("available") and r["passed"] and r["fits"]]
        deps = {}
        for r in todo:
            got, reason = self._dependencies(r["runtime"], target, python)
            if got is None:
                r["latency_note"] = f"not timed under emulation: {reason}"
            else:
                deps[r["runtime"]] = got["path"]
        return [r for r in todo if r["runtime"] in deps], deps

    def _emulated_key(self, target: str, emu: qemu.Emulator, python: str, todo: list[dict],
                      deps: dict[str, Path]) -> str:
        return make_key({"emulated": target, "cpu": emu.cpu, "python": python,
                         "models": [(r["key"], self.arts[r["artifact"]].model.digest)
                                    for r in todo],
                         "deps": sorted(str(p) for p in deps.values()),
                         "runs": self.cfg.emulated_runs,
                         # the worker runs the handler's engine loaders from the package
                         "code": code_of(measure, prepared, "optimizer.handler.engines")})

    def _time_emulated(self, target: str, emu: qemu.Emulator, todo: list[dict],
                       deps: dict[str, Path]) -> dict[str, Any]:
        models = {r["key"]: self.arts[r["artifact"]].model for r in todo}
        x = {k: prepared(self.dataset, "test", m.preprocess, limit=1) for k, m in models.items()}
        return measure(models, x, 1, EMULATED_WARMUP, self.cfg.emulated_runs,
                       targets.TARGETS[target].isa,
                       runtimes={r["key"]: r["runtime"] for r in todo}, emulate=emu,
                       deps=tuple(deps.values()), target=target,
                       per_round=EMULATED_PER_ROUND)
