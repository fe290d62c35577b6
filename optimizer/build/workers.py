"""Where a build's work runs: here (several candidates in worker processes), or on Ray.

One narrow interface for the stages: `offload` a pure function, map one over items with
`each`, `fan_out` the artifacts of one step, time on the target's `target_node` (`on_node`), and
`summary` for
the report. The stages never ask which kind they have.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from optimizer.artifact import Artifact
from optimizer.build import local
from optimizer.build.ledger import Ledger
from optimizer.build.ray import portable
from optimizer.model import ModelRef
from optimizer.progress import Progress
from optimizer.steps import Step
from optimizer.steps.base import StepConfig, StepContext

# (model, config, ctx) -> model: a step's run, here or elsewhere
StepRun = Callable[[ModelRef, StepConfig, StepContext], ModelRef]


@dataclass(frozen=True)
class Task:
    """One artifact a step makes: from `parent`, for candidate `label`, with `config`."""

    parent: Artifact
    label: str
    config: StepConfig

    def full_name(self, step_name: str) -> str:
        variant = self.variant
        return f"{step_name}@{variant}" if variant else step_name

    @property
    def variant(self) -> str:
        return "+".join(v for v in (self.parent.variant, self.label) if v)


class Workers(Protocol):
    """What the stages may ask of where work runs."""

    def offload(self, what: str, fn: Callable[..., Any], *args: Any) -> Any: ...
    def each(self, fn: Callable[[Any], Any], items: list) -> list: ...
    def target_node(self, target: str) -> dict[str, Any] | None: ...
    def on_node(self, what: str, node: dict[str, Any], fn: Callable[..., Any],
                *args: Any, cpus: int = 1) -> tuple[Any, str]: ...
    def fan_out(self, name: str, spec: Step, tasks: list[Task],
                one: Callable[[Task, StepRun], Artifact],
                prepare: Callable[[list[Task]], None]) -> list[Artifact]: ...
    def summary(self) -> dict[str, Any]: ...


def _threads(fn: Callable[[Any], Any], items: list) -> list:
    with ThreadPoolExecutor(min(len(items), 32)) as threads:
        return list(threads.map(fn, items))


class LocalWorkers:
    """This machine: work runs in this process, except candidates' training, which runs in
    worker processes, as many at once as cores and memory allow."""

    def __init__(self, progress: Progress, cache_root: Path) -> None:
        self.progress, self.cache_root = progress, cache_root
        self.candidates: dict[str, Any] = {}  # how candidates were trained, per step

    def offload(self, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        return fn(*args)

    def each(self, fn: Callable[[Any], Any], items: list) -> list:
        return [fn(i) for i in items]

    def target_node(self, target: str) -> dict[str, Any] | None:
        return None

    def on_node(self, what: str, node: dict[str, Any], fn: Callable[..., Any],
                *args: Any, cpus: int = 1) -> tuple[Any, str]:
        raise AssertionError("this machine has no cluster nodes")

    def fan_out(self, name: str, spec: Step, tasks: list[Task],
                one: Callable[[Task, StepRun], Artifact],
                prepare: Callable[[list[Task]], None]) -> list[Artifact]:
        """`one(task, run)` per task: in turn, or for several trainings in worker processes
        (after `prepare` made what they share, once)."""
        if spec.produces != "tf" or len(tasks) < 2:
            return [one(t, spec.run) for t in tasks]
        plan = local.plan(len(tasks))
        self.progress.log(f"train {len(tasks)} candidates of '{name}': {plan.reason}")
        self.candidates[name] = {"processes": plan.jobs, "threads": plan.threads,
                                 "reason": plan.reason}
        if plan.jobs == 1:
            return [one(t, spec.run) for t in tasks]
        prepare(tasks)
        pool = local.pool(plan.jobs)
        threads = ThreadPoolExecutor(plan.jobs)

        def remote(model: ModelRef, cfg: StepConfig, ctx: StepContext) -> ModelRef:
            return pool.submit(local.run_step, {
                "model": model, "config": cfg, "target": ctx.target,
                "out_dir": str(ctx.out_dir), "checkpoints": str(ctx.checkpoints),
                "dataset": ctx.dataset, "cache_root": str(self.cache_root),
                "threads": plan.threads}).result()

        try:
            futures = [threads.submit(one, t, remote) for t in tasks]
            return [f.result() for f in futures]
        finally:
            local.stop(pool)  # on an interrupt too: checkpoints let a rerun resume
            threads.shutdown(wait=False, cancel_futures=True)

    def summary(self) -> dict[str, Any]:
        return {"kind": "local", "candidates": self.candidates}


class RayWorkers:
    """A Ray cluster: every piece of parallel work is a task; this driver keeps the cache,
    so what a task made comes back and is stored here."""

    def __init__(self, executor: Any, ledger: Ledger) -> None:
        self.executor, self.ledger = executor, ledger

    def offload(self, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        return self.executor.call(what, fn, *args)[0]

    def each(self, fn: Callable[[Any], Any], items: list) -> list:
        return [fn(i) for i in items] if len(items) < 2 else _threads(fn, items)

    def target_node(self, target: str) -> dict[str, Any] | None:
        return self.executor.target_node(target)

    def on_node(self, what: str, node: dict[str, Any], fn: Callable[..., Any],
                *args: Any, cpus: int = 1) -> tuple[Any, str]:
        """(fn(*args), where it ran) on `node`, one that target_node found."""
        value, ran = self.executor.call(what, fn, *args, cpus=cpus, node=node)
        return value, (f"Ray node {ran['ip']} ({ran['node_id'][:8]}, declares "
                       f"{node['resource']})")

    def fan_out(self, name: str, spec: Step, tasks: list[Task],
                one: Callable[[Task, StepRun], Artifact],
                prepare: Callable[[list[Task]], None]) -> list[Artifact]:
        """Every artifact of a step as its own task, all at once; the cluster queues them."""
        prepare(tasks)
        return self.each(lambda t: one(t, self._remote(t.full_name(name), spec)), tasks)

    def _remote(self, full: str, spec: Step) -> StepRun:
        """A step's run that sends the work to the cluster and writes what comes back."""
        training = spec.produces == "tf"

        def run(model: ModelRef, cfg: StepConfig, ctx: StepContext) -> ModelRef:
            payload = {"config": cfg, "target": ctx.target, "files": portable.files_of(cfg),
                       "checkpoint_key": ctx.checkpoints.name}
            result = self.executor.run_step(full, payload, model, ctx.dataset, training)
            for key, label, blob in result["entries"]:  # made there, stored here
                self.ledger.cached_dir(key, label, lambda tmp, b=blob: portable.unpack(b, tmp))
            for line in result["log"]:
                if "resume" in line or "restart" in line:
                    self.ledger.progress.log(line)
            return portable.adopt(result, ctx.out_dir)

        return run

    def summary(self) -> dict[str, Any]:
        return self.executor.summary()
