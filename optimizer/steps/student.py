"""`swap` and `distill`: train a mobile student with the source's classes and preprocessing.

`swap` trains the student on the labels alone. `distill` also learns the teacher's (the
step's input) softened outputs, and can learn from images without labels: the rest of the
training split when `labeled_fraction` < 1, and any folder of `unlabeled` images. Both may
list several `candidates`; the build trains, converts and measures each.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import Discriminator, Field, Tag, model_validator

from optimizer.errors import StepFailed
from optimizer.model import FILE_NAMES, ModelRef, file_digests
from optimizer.preprocess_spec import Preprocess, apply
from optimizer.recipe_paths import ExistingDir
from optimizer.steps.base import StepConfig, StepContext
from optimizer.train.config import StudentGrid, StudentSpec, TrainConfig, unique

# a list of students, or a grid; told apart by shape so errors name the right fields
Candidates = Annotated[
    Annotated[list[StudentSpec], Tag("list")] | Annotated[StudentGrid, Tag("grid")],
    Discriminator(lambda v: "list" if isinstance(v, list) else "grid"),
]


def _default_train() -> TrainConfig:
    return TrainConfig(epochs=30, patience=8)


class StudentStepConfig(StepConfig):
    student: StudentSpec | None = Field(default=None, description="the one student")
    candidates: Candidates | None = Field(
        default=None, description="several students (a list, or a grid of architecture x "
        "alpha x input_size); each is trained, converted and measured")
    train: TrainConfig = Field(default_factory=_default_train)
    labeled_fraction: float = Field(
        default=1.0, gt=0, le=1, description="share of the training labels used (class-"
        "balanced, seeded by train.seed); distill uses the other images unlabeled")

    @model_validator(mode="after")
    def _one_way(self) -> StudentStepConfig:
        if (self.student is None) == (self.candidates is None):
            raise ValueError("give either `student` or `candidates`")
        return self

    def students(self) -> list[StudentSpec]:
        if self.student is not None:
            return [self.student]
        if isinstance(self.candidates, StudentGrid):
            return self.candidates.expand()
        return unique(self.candidates or [])

    def variants(self) -> list[tuple[str, StudentStepConfig]]:
        """(label, config with one student); the label is empty when there is no choice."""
        specs = self.students()
        return [(s.label if len(specs) > 1 else "",
                 self.model_copy(update={"student": s, "candidates": None})) for s in specs]

    def input_files(self) -> list[Path]:
        return [p for p in (self.student.weights if self.student else None,) if p]


class SwapConfig(StudentStepConfig):
    step: Literal["swap"] = "swap"


class DistillConfig(StudentStepConfig):
    step: Literal["distill"] = "distill"
    temperature: float = Field(default=4.0, gt=0, le=100,
                               description="softens teacher and student outputs")
    soft_weight: float = Field(
        default=0.9, ge=0, le=1, description="weight of the soft (teacher) term against the "
        "hard labels: Hinton et al.'s alpha")
    unlabeled: ExistingDir | None = Field(
        default=None, description="folder of extra images without labels; the teacher labels "
        "them")

    def input_files(self) -> list[Path]:
        return [*super().input_files(), *([self.unlabeled] if self.unlabeled else [])]


def labeled_mask(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A seeded, class-balanced share of the labels (at least one per class)."""
    if fraction >= 1:
        return np.ones(len(labels), dtype=bool)
    rng = np.random.default_rng([seed, 7])
    keep = np.zeros(len(labels), dtype=bool)
    for cls in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == cls))
        keep[idx[: max(1, round(len(idx) * fraction))]] = True
    return keep


# what computes a teacher's outputs: any source kind, any engine
TEACHER_TOOLS = ("tensorflow", "tensorflow-cpu", "keras", "numpy", "onnxruntime",
                 "ai-edge-litert")


def student_preprocess(teacher: Preprocess, size: int) -> Preprocess:
    """The teacher's pixel contract at the student's resolution (NHWC, as Keras builds it)."""
    return teacher.model_copy(update={"size": (size, size), "layout": "NHWC"})


def _teacher_logits(teacher: ModelRef, cfg: DistillConfig, ctx: StepContext,
                    extra: list[np.ndarray]) -> np.ndarray:
    """Computed once per (teacher, data) and cached: every candidate and rerun shares it."""
    from optimizer.cache import versions
    from optimizer.codekey import code_of
    from optimizer.train import teacher as teacher_outputs

    ds = ctx.dataset
    images = [ds.images[i] for i in ds.indices("train")] + extra

    def produce(folder: Path) -> None:
        np.save(folder / "logits.npy", ctx.offload(
            f"teacher outputs of {teacher.info.get('student') or teacher.kind}",
            teacher_outputs.logits, teacher, images))

    parts = {"teacher_outputs": teacher.digest, "dataset": ds.digest,
             "unlabeled": file_digests([cfg.unlabeled] if cfg.unlabeled else []),
             "versions": versions(TEACHER_TOOLS), "code": code_of(teacher_outputs.logits)}
    folder = ctx.cached(parts, f"teacher outputs on {len(images)} images", produce)
    return np.load(folder / "logits.npy")


def _unlabeled_images(cfg: StudentStepConfig) -> list[np.ndarray]:
    from optimizer.data.folder import read_images

    unlabeled = getattr(cfg, "unlabeled", None)
    return read_images(unlabeled) if unlabeled else []


def prepare(teacher: ModelRef, cfg: DistillConfig, ctx: StepContext) -> None:
    """The teacher's outputs, cached before candidates train in separate processes."""
    _teacher_logits(teacher, cfg, ctx, _unlabeled_images(cfg))


def run(teacher: ModelRef, cfg: StudentStepConfig, ctx: StepContext) -> ModelRef:
    from optimizer.data.dataset import prepared
    from optimizer.inference.predict import predict
    from optimizer.train import loop

    spec = cfg.student
    assert spec is not None, "the build runs one student per variant"
    name = cfg.name or cfg.step
    ds = ctx.dataset
    if not ds.labeled and not isinstance(cfg, DistillConfig):
        raise StepFailed(name, "swap trains on labels and this dataset has none; distill "
                         "learns from the teacher's answers instead")
    pre = student_preprocess(teacher.preprocess, spec.input_size)
    x = prepared(ds, "train", pre)
    y = ds.labels_of("train")
    keep = labeled_mask(y, cfg.labeled_fraction, cfg.train.seed)
    labels = np.where(keep, y, -1)
    soft = None
    unlabeled = 0
    if isinstance(cfg, DistillConfig):
        extra = _unlabeled_images(cfg)
        soft = _teacher_logits(teacher, cfg, ctx, extra)
        if extra:
            x = np.concatenate([x, apply(extra, pre)])
            labels = np.concatenate([labels, np.full(len(extra), -1)])
        unlabeled = int((labels < 0).sum())
        objective = loop.Objective(cfg.temperature, cfg.soft_weight)
    else:
        x, labels = x[keep], labels[keep]
        objective = loop.Objective()
    data = loop.data_for(ds, pre, x, labels, soft)
    if not ds.labeled and data.val_x is not None:
        # no labels to stop on: the teacher's answers on the validation images stand in
        data.val_y = predict(teacher, prepared(ds, "val", teacher.preprocess)).argmax(axis=1)
    out = ctx.out_dir / FILE_NAMES["keras"]
    model, result = loop.train(spec, pre, len(teacher.classes), data, cfg.train, objective,
                               ctx, name, out)
    info = {"student": spec.label, "architecture": spec.architecture, "alpha": spec.alpha,
            "input_size": spec.input_size, "params": int(model.count_params()),
            "labeled": int((labels >= 0).sum()), "unlabeled": unlabeled,
            "method": cfg.step, "training": result}
    if isinstance(cfg, DistillConfig):
        info.update(temperature=cfg.temperature, soft_weight=cfg.soft_weight)
    return ModelRef(kind="keras", path=out, preprocess=pre, classes=teacher.classes, info=info)
