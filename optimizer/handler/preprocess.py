"""Pixels to model input, shared by the build (validation, calibration) and the function.

One implementation for both sides is the point: the deployed function cannot drift from
the preprocessing that was measured at build time. The spec is a plain dict (the JSON in
preprocess.json) so this module needs no pydantic on Lambda.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image

RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
}
# decompression-bomb guard for images sent to the function (about 40 megapixels)
MAX_PIXELS = 40_000_000


class NotAnImage(ValueError):
    """The bytes are not an image Pillow can decode (or decoding them would be abusive)."""


def decode(data: bytes, channels: int) -> np.ndarray:
    """Encoded image bytes (PNG, JPEG, ...) to a uint8 HxW or HxWx3 array."""
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.width * img.height > MAX_PIXELS:
                raise NotAnImage(f"image is {img.width}x{img.height}; at most {MAX_PIXELS:,} "
                                 "pixels are accepted")
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
                img = Image.fromarray(_to_uint8(np.asarray(img)))
            return np.asarray(img.convert("RGB" if channels == 3 else "L"))
    except NotAnImage:
        raise
    except (Image.DecompressionBombError, OSError, ValueError, SyntaxError) as exc:
        raise NotAnImage(f"not a decodable image ({type(exc).__name__}: {exc})") from None


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    arr = arr.astype(np.float64)
    lo, hi = float(arr.min()), float(arr.max())
    return np.zeros(arr.shape, np.uint8) if hi <= lo else ((arr - lo) * 255 / (hi - lo)).astype(
        np.uint8)


def to_batch(images: list[np.ndarray] | np.ndarray, spec: dict[str, Any]) -> np.ndarray:
    """uint8 images (HxW, HxWx1 or HxWx3, any size) to one float32 batch for the model.

    x = (pixel * scale - mean) / std, after resizing and converting to the model's channels.
    """
    if spec.get("size") is None:
        raise ValueError("preprocess size is not resolved")
    h, w = spec["size"]
    channels = spec.get("channels", 3)
    mode = "RGB" if channels == 3 else "L"
    out = np.empty((len(images), h, w, channels), dtype=np.float32)
    for i, img in enumerate(images):
        arr = np.asarray(img)
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[:, :, 0]
        pil = Image.fromarray(arr.astype(np.uint8, copy=False)).convert(mode)
        if pil.size != (w, h):
            pil = pil.resize((w, h), RESAMPLE[spec.get("resize", "bilinear")])
        out[i] = np.asarray(pil, dtype=np.float32).reshape(h, w, channels)
    mean = np.asarray(spec.get("mean", [0.0]), dtype=np.float32)
    std = np.asarray(spec.get("std", [1.0]), dtype=np.float32)
    out = (out * np.float32(spec.get("scale", 1.0)) - mean) / std
    if spec.get("layout", "NHWC") == "NCHW":
        out = np.ascontiguousarray(out.transpose(0, 3, 1, 2))
    return out
