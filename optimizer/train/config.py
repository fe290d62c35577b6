"""Training and student configs, shared by the architecture source and the student steps."""

from __future__ import annotations

import itertools
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from optimizer.recipe_paths import ExistingFile

Architecture = Literal[
    "MobileNetV2", "MobileNetV3Small", "MobileNetV3Large", "EfficientNetB0",
    "EfficientNetV2B0", "NASNetMobile", "ResNet50", "Xception",
]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TrainConfig(_Strict):
    epochs: int = Field(default=10, ge=1, le=1000, description="upper bound; see patience")
    batch_size: int = Field(default=32, ge=1, le=4096)
    learning_rate: float = Field(default=2e-3, gt=0, le=1, description="peak learning rate")
    schedule: Literal["cosine", "constant"] = Field(
        default="cosine", description="decay from the peak to zero over all epochs")
    warmup_epochs: int = Field(default=0, ge=0, le=100,
                               description="linear ramp to the peak learning rate")
    augment: float = Field(
        default=0.1, ge=0, le=0.5, description="max random shift and zoom (fraction); 0 = off")
    patience: int | None = Field(
        default=None, ge=1, le=1000, description="stop after this many epochs without a better "
        "validation accuracy and keep the best epoch's weights; null = run every epoch")
    seed: int = 0

    @model_validator(mode="after")
    def _warmup(self) -> TrainConfig:
        if self.warmup_epochs >= self.epochs:
            raise ValueError(f"warmup_epochs ({self.warmup_epochs}) must be fewer than epochs "
                             f"({self.epochs})")
        return self


class StudentSpec(_Strict):
    """One network: a Keras application with a width multiplier and an input resolution."""

    architecture: Architecture = "MobileNetV2"
    alpha: float = Field(default=1.0, ge=0.1, le=2.0,
                         description="width multiplier (MobileNetV2/V3 only)")
    input_size: int = Field(default=96, ge=32, le=512)
    weights: ExistingFile | None = Field(
        default=None, description="Keras weights file for the backbone without its top (for "
        "example ImageNet weights you downloaded); default: fresh weights")

    @model_validator(mode="after")
    def _size(self) -> StudentSpec:
        from optimizer.train.nets import check_size

        check_size(self.architecture, self.input_size)
        return self

    @property
    def label(self) -> str:
        """Short, file-name-safe name of this candidate, e.g. MobileNetV2-a0.35-r32."""
        from optimizer.train.nets import ARCHITECTURES

        width = f"-a{self.alpha:g}" if ARCHITECTURES[self.architecture].alpha else ""
        return f"{self.architecture}{width}-r{self.input_size}"


class StudentGrid(_Strict):
    """Every combination of the listed values is a candidate."""

    architecture: list[Architecture] = Field(min_length=1)
    alpha: list[Annotated[float, Field(ge=0.1, le=2.0)]] = Field(
        default_factory=lambda: [1.0], min_length=1)
    input_size: list[Annotated[int, Field(ge=32, le=512)]] = Field(min_length=1)
    weights: ExistingFile | None = None

    @model_validator(mode="after")
    def _sizes(self) -> StudentGrid:
        self.expand()  # every combination must be buildable, now rather than mid-build
        return self

    def expand(self) -> list[StudentSpec]:
        from optimizer.train.nets import ARCHITECTURES

        return unique([
            StudentSpec(architecture=arch, input_size=size, weights=self.weights,
                        # a width grid does not multiply fixed-width networks
                        alpha=alpha if ARCHITECTURES[arch].alpha else 1.0)
            for arch, alpha, size in itertools.product(self.architecture, self.alpha,
                                                       self.input_size)])


def unique(specs: list[StudentSpec]) -> list[StudentSpec]:
    """One student per label, in first-seen order."""
    out: dict[str, StudentSpec] = {}
    for spec in specs:
        out.setdefault(spec.label, spec)
    return list(out.values())
