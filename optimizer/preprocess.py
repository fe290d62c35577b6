"""The one definition of how pixels become model input.

Validation, calibration and the Lambda handler all run `handler.preprocess.to_batch`, and
the spec is saved beside every model as preprocess.json, so the deployed function cannot
drift from what was measured at build time.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from optimizer.handler.preprocess import to_batch


class Preprocess(BaseModel):
    """Resize, colour, scale and normalise: x = (pixel * scale - mean) / std."""

    model_config = ConfigDict(extra="forbid")

    size: tuple[int, int] | None = Field(
        default=None, description="model input (height, width); read from the model if omitted"
    )
    channels: Literal[1, 3] = 3
    scale: float = 1.0
    mean: list[float] = Field(default_factory=lambda: [0.0])
    std: list[float] = Field(default_factory=lambda: [1.0])
    layout: Literal["NHWC", "NCHW"] = "NHWC"
    resize: Literal["nearest", "bilinear", "bicubic"] = "bilinear"

    @model_validator(mode="after")
    def _check(self) -> Preprocess:
        for name in ("mean", "std"):
            values = getattr(self, name)
            if len(values) not in (1, self.channels):
                raise ValueError(f"{name} needs 1 or {self.channels} values, got {len(values)}")
        if any(s == 0 for s in self.std):
            raise ValueError("std values must be non-zero")
        if self.size is not None and min(self.size) < 1:
            raise ValueError("size must be positive")
        return self

    def input_shape(self) -> tuple[int, int, int, int]:
        assert self.size is not None, "size is resolved when the source is loaded"
        h, w = self.size
        c = self.channels
        return (1, h, w, c) if self.layout == "NHWC" else (1, c, h, w)


def apply(images: list[np.ndarray] | np.ndarray, spec: Preprocess) -> np.ndarray:
    """uint8 images (HxW, HxWx1 or HxWx3, any size) to one float32 batch for the model."""
    return to_batch(images, spec.model_dump(mode="json"))
