"""The steps stage: each recipe step once per artifact of its input and per candidate it
lists, every result cached under a key that covers its input, config, data and code."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from optimizer.artifact import Artifact
from optimizer.build.ledger import Ledger
from optimizer.build.workers import StepRun, Task, Workers
from optimizer.cache import make_key, versions
from optimizer.codekey import code_of
from optimizer.data.dataset import Dataset
from optimizer.model import file_digests
from optimizer.progress import Progress
from optimizer.steps import STEPS
from optimizer.steps.base import StepContext


@dataclass
class Stage:
    """What every step of one build shares."""

    target: str
    dataset: Dataset
    ledger: Ledger
    workers: Workers
    progress: Progress

    def context(self, out_dir: Path, checkpoints: Path) -> StepContext:
        return StepContext(out_dir=out_dir, target=self.target, dataset=self.dataset,
                           progress=self.progress, checkpoints=checkpoints,
                           cached=self.ledger.cached_parts, offload=self.workers.offload)

    def run(self, steps: list, source: Artifact) -> list[Artifact]:
        """Every artifact the steps make, in recipe order."""
        made: dict[str, list[Artifact]] = {"source": [source]}
        out = []
        for cfg in steps:
            tasks = [Task(parent, label, one) for parent in made[cfg.input]
                     for label, one in cfg.variants()]
            made[cfg.name] = self.workers.fan_out(
                cfg.name, STEPS[cfg.step], tasks,
                lambda task, run, name=cfg.name: self.one(name, task, run), self.prepare)
            out += made[cfg.name]
        return out

    def prepare(self, tasks: list[Task]) -> None:
        """What candidates share (teacher outputs), once per input, not once per worker;
        prepare writes only through ctx.cached, so it gets no output or checkpoint folder."""
        if prepare := STEPS[tasks[0].config.step].prepare:
            firsts = {id(t.parent): t for t in reversed(tasks)}
            for t in firsts.values():
                prepare(t.parent.model, t.config,
                        self.context(Path(os.devnull), Path(os.devnull)))

    def one(self, name: str, task: Task, run: StepRun) -> Artifact:
        cfg, parent = task.config, task.parent
        spec = STEPS[cfg.step]
        full = task.full_name(name)
        key = make_key({
            "step": cfg.step,
            "config": cfg.model_dump(mode="json", exclude={"name", "input"}),
            "files": file_digests(cfg.input_files()),
            "input": parent.model.digest,
            "dataset": self.dataset.digest if spec.uses_data else None,
            "target": self.target,
            "versions": versions(spec.tools),
            "code": code_of(spec.run, *((spec.prepare,) if spec.prepare else ())),
        })
        ref, cached, secs = self.ledger.cached_model(
            key, f"{full} ({cfg.step} <- {parent.name})",
            lambda tmp, ckpt: run(parent.model, cfg, self.context(tmp, ckpt)))
        return Artifact(full, cfg.step, ref, cached, secs, parent=parent.name,
                        variant=task.variant, step_name=name)
