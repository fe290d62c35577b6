"""The one definition of how pixels become model input.

Validation, calibration and the Lambda handler all run `handler.pixels.to_batch`, and
the spec is saved beside every model as preprocess.json, so the deployed function cannot
drift from what was measured at build time.
"""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from optimizer.handler.pixels import to_batch

Color = Annotated[list[Annotated[int, Field(ge=0, le=255)]], Field(min_length=3, max_length=3)]


class Preprocess(BaseModel):
    """Colour, geometry, order, scale and normalise: x = (pixel * scale - mean) / std.

    The defaults are what a model trained by this tool expects; models published elsewhere
    were trained with their own conventions (ImageNet's resize-and-crop, Caffe's BGR with
    means), and getting one wrong costs accuracy without any error.
    """

    model_config = ConfigDict(extra="forbid")

    size: tuple[int, int] | None = Field(
        default=None, description="model input (height, width); read from the model if omitted"
    )
    channels: Literal[1, 3] = 3
    scale: float = 1.0
    mean: list[float] = Field(default_factory=lambda: [0.0])
    std: list[float] = Field(default_factory=lambda: [1.0])
    layout: Literal["NHWC", "NCHW"] = "NHWC"
    resize: Literal["nearest", "bilinear", "bicubic", "bicubic-opencv"] = Field(
        default="bilinear", description="resampling filter; bicubic-opencv: OpenCV's (a "
        "sharper kernel than PIL's), as MXNet's imresize and so MXNet Model Server's stock "
        "vision services resized")
    fit: Literal["stretch", "crop", "letterbox"] = Field(
        default="stretch", description="stretch to the input size; crop: resize (the shorter "
        "side to resize_to, or both sides to [h, w]) then crop the center; letterbox: fit "
        "inside and pad with pad_color")
    resize_to: int | tuple[int, int] | None = Field(
        default=None, description="crop only: the shorter side's length (ImageNet: 256 for "
        "224), or [height, width]; default: the input size, the largest centered crop")
    pad_color: Color = Field(default_factory=lambda: [0, 0, 0], description="letterbox fill")
    background: Color = Field(default_factory=lambda: [255, 255, 255],
                              description="what transparent pixels are composited onto")
    channel_order: Literal["RGB", "BGR"] = Field(
        default="RGB", description="BGR for models converted from Caffe (mean/std are given "
        "in the model's channel order)")

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
        if self.resize_to is not None:
            if self.fit != "crop":
                raise ValueError("resize_to applies to fit: crop only")
            sizes = self.resize_to if isinstance(self.resize_to, tuple) else (self.resize_to,)
            if min(sizes) < 1:
                raise ValueError("resize_to must be positive")
            if self.size is not None and (
                    (len(sizes) == 1 and sizes[0] < min(self.size))
                    or (len(sizes) == 2 and (sizes[0] < self.size[0] or sizes[1] < self.size[1]))):
                raise ValueError(f"resize_to {self.resize_to} is smaller than the input size "
                                 f"{tuple(self.size)}; nothing would be left to crop")
        if self.channel_order == "BGR" and self.channels != 3:
            raise ValueError("channel_order BGR needs 3 channels")
        return self

    def input_shape(self) -> tuple[int, int, int, int]:
        assert self.size is not None, "size is resolved when the source is loaded"
        h, w = self.size
        c = self.channels
        return (1, h, w, c) if self.layout == "NHWC" else (1, c, h, w)


def apply(images: list[np.ndarray] | np.ndarray, spec: Preprocess) -> np.ndarray:
    """uint8 images (HxW, HxWx1 or HxWx3, any size) to one float32 batch for the model."""
    return to_batch(images, spec.model_dump(mode="json"))
