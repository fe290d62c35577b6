"""Image bytes to model input, shared by the build (datasets, validation, calibration) and
the function.

One implementation for both sides is the point: the deployed function cannot drift from
the preprocessing that was measured at build time. `decode` turns any file Pillow reads into
one of three array shapes (grey HxW, RGB HxWx3, RGBA HxWx4) with the camera's orientation
applied; `to_batch` does everything that depends on the model (alpha background, colour,
geometry, channel order, scaling). The spec is a plain dict (the JSON in preprocess.json) so
this module needs no pydantic on Lambda.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image, ImageOps

RESAMPLE = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
}
CV_CUBIC_A = -0.75  # OpenCV's bicubic kernel; PIL's is -0.5
CV_COEF_BITS = 11  # OpenCV's fixed-point weights for 8-bit images
# decompression-bomb guard for every decoded image (about 40 megapixels)
MAX_PIXELS = 40_000_000
_HIGH_DEPTH = ("I;16", "I;16B", "I;16L", "I;16N", "I")
_ALPHA = ("RGBA", "LA", "PA", "RGBa", "La")


class NotAnImage(ValueError):
    """The bytes are not an image Pillow can decode (or decoding them would be abusive)."""


def decode(data: bytes) -> np.ndarray:
    """Encoded image bytes (PNG, JPEG, GIF, WebP, TIFF, BMP...) to uint8 HxW, HxWx3 or HxWx4.

    EXIF orientation is applied (phones store photos sideways and say so in a tag); CMYK,
    palette, 16-bit and float images become 8-bit RGB or grey; alpha is kept for to_batch.
    """
    Image.MAX_IMAGE_PIXELS = MAX_PIXELS
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.width * img.height > MAX_PIXELS:
                raise NotAnImage(f"image is {img.width}x{img.height}; at most {MAX_PIXELS:,} "
                                 "pixels are accepted")
            img.load()
            return _canonical(ImageOps.exif_transpose(img))
    except NotAnImage:
        raise
    except (Image.DecompressionBombError, OSError, ValueError, SyntaxError, KeyError,
            TypeError, ZeroDivisionError) as exc:
        raise NotAnImage(_undecodable(data, exc)) from None


# ISO BMFF brands of the formats Pillow cannot open here (the package drops AVIF's codec)
_UNREADABLE_BRANDS = {b"heic": "HEIC", b"heix": "HEIC", b"hevc": "HEIC", b"mif1": "HEIF",
                      b"msf1": "HEIF", b"avif": "AVIF", b"avis": "AVIF"}


def _undecodable(data: bytes, exc: Exception) -> str:
    """Names the format where it is one a phone sends (an iPhone's default is HEIC), so the
    fix (send JPEG) is in the message; Pillow's own text names a BytesIO, not the image."""
    if data[4:8] == b"ftyp" and (name := _UNREADABLE_BRANDS.get(data[8:12])):
        return f"not a decodable image ({name} is not supported; send JPEG, PNG or WebP)"
    text = str(exc).replace(" <_io.BytesIO object", "").split(" at 0x")[0]
    return f"not a decodable image ({type(exc).__name__}: {text})"


def _canonical(img: Image.Image) -> np.ndarray:
    mode = img.mode
    if mode in _HIGH_DEPTH:  # 16-bit PNG/TIFF grey: 0..65535 onto 0..255, rounded
        wide = np.asarray(img, dtype=np.int64)
        return ((np.clip(wide, 0, 65535) * 255 + 32767) // 65535).astype(np.uint8)
    if mode == "F":  # float TIFF: 0..1 if it fits, else already 0..255
        arr = np.asarray(img, dtype=np.float64)
        top = 1.0 if arr.size and np.nanmax(arr) <= 1.0 else 255.0
        return np.rint(np.clip(np.nan_to_num(arr) * (255.0 / top), 0, 255)).astype(np.uint8)
    if mode in ("1", "L"):
        return np.asarray(img.convert("L"))
    if mode == "P":
        has_alpha = "transparency" in img.info
        return np.asarray(img.convert("RGBA" if has_alpha else "RGB"))
    if mode in _ALPHA:
        return np.asarray(img.convert("RGBA"))
    return np.asarray(img.convert("RGB"))  # RGB, RGBX, CMYK (incl. Adobe's inverted), YCbCr...


def _composite(arr: np.ndarray, background: list[int]) -> np.ndarray:
    """RGBA over an opaque background, in integers so every machine gets the same bytes."""
    rgb = arr[:, :, :3].astype(np.int32)
    alpha = arr[:, :, 3:4].astype(np.int32)
    bg = np.asarray(background, dtype=np.int32).reshape(1, 1, 3)
    return ((rgb * alpha + bg * (255 - alpha) + 127) // 255).astype(np.uint8)


def _pil(arr: np.ndarray, spec: dict[str, Any]) -> Image.Image:
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    elif arr.ndim == 3 and arr.shape[2] == 2:  # grey + alpha
        arr = np.concatenate([np.repeat(arr[:, :, :1], 3, axis=2), arr[:, :, 1:]], axis=2)
    if arr.ndim == 3 and arr.shape[2] == 4:
        arr = _composite(arr, spec.get("background", [255, 255, 255]))
    mode = "RGB" if spec.get("channels", 3) == 3 else "L"
    return Image.fromarray(arr.astype(np.uint8, copy=False)).convert(mode)


def _fill(color: list[int], mode: str) -> int | tuple[int, ...]:
    rgb = tuple(int(c) for c in color)
    return rgb if mode == "RGB" else Image.new("RGB", (1, 1), rgb).convert("L").getpixel((0, 0))


def _cv_weights(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    fx = (np.arange(n_out) + 0.5) * (n_in / n_out) - 0.5
    sx = np.floor(fx).astype(np.int64)
    f = (fx - sx).astype(np.float32)
    a = CV_CUBIC_A
    w0 = ((a * (f + 1) - 5 * a) * (f + 1) + 8 * a) * (f + 1) - 4 * a
    w1 = ((a + 2) * f - (a + 3)) * f * f + 1
    w2 = ((a + 2) * (1 - f) - (a + 3)) * (1 - f) * (1 - f) + 1
    w = np.stack([w0, w1, w2, 1 - w0 - w1 - w2], axis=1)
    index = np.clip(sx[:, None] + np.arange(-1, 3)[None, :], 0, n_in - 1)
    return index, np.round(w * (1 << CV_COEF_BITS)).astype(np.int64)


def cv_bicubic(pil: Image.Image, size: tuple[int, int]) -> Image.Image:
    """OpenCV's 8-bit bicubic resize, as MXNet's imresize (and so MMS's stock vision
    services) did it: the same 8-bit pixels but for a rare one-level rounding difference."""
    arr = np.asarray(pil).astype(np.int64)
    arr = arr[:, :, None] if arr.ndim == 2 else arr
    (yi, yw), (xi, xw) = _cv_weights(arr.shape[0], size[1]), _cv_weights(arr.shape[1], size[0])
    rows = (arr[:, xi] * xw[None, :, :, None]).sum(axis=2)
    out = (rows[yi] * yw[:, :, None, None]).sum(axis=1)
    out = np.clip((out + (1 << (2 * CV_COEF_BITS - 1))) >> (2 * CV_COEF_BITS), 0, 255)
    return Image.fromarray(out.astype(np.uint8).squeeze(axis=2) if pil.mode == "L"
                           else out.astype(np.uint8), pil.mode)


def _resized(pil: Image.Image, size: tuple[int, int], spec: dict[str, Any]) -> Image.Image:
    if spec.get("resize") == "bicubic-opencv":
        return cv_bicubic(pil, size)
    return pil.resize(size, RESAMPLE[spec.get("resize", "bilinear")])


def _geometry(pil: Image.Image, spec: dict[str, Any]) -> Image.Image:
    """stretch (resize to the input size), crop (ImageNet's resize then center crop) or
    letterbox (fit inside, pad the rest)."""
    h, w = spec["size"]
    fit = spec.get("fit", "stretch")
    src_w, src_h = pil.size
    if fit == "crop":
        to = spec.get("resize_to")
        if isinstance(to, list | tuple):
            new_h, new_w = int(to[0]), int(to[1])
        else:  # the shorter side to S (default: the largest centered crop)
            short = int(to) if to else max(h, w)
            k = short / min(src_w, src_h)
            new_w, new_h = max(w, round(src_w * k)), max(h, round(src_h * k))
        if (new_w, new_h) != pil.size:
            pil = _resized(pil, (new_w, new_h), spec)
        left, top = (new_w - w) // 2, (new_h - h) // 2
        return pil.crop((left, top, left + w, top + h))
    if fit == "letterbox":
        k = min(w / src_w, h / src_h)
        new_w, new_h = max(1, min(w, round(src_w * k))), max(1, min(h, round(src_h * k)))
        if (new_w, new_h) != pil.size:
            pil = _resized(pil, (new_w, new_h), spec)
        canvas = Image.new(pil.mode, (w, h), _fill(spec.get("pad_color", [0, 0, 0]), pil.mode))
        canvas.paste(pil, ((w - new_w) // 2, (h - new_h) // 2))
        return canvas
    return pil if pil.size == (w, h) else _resized(pil, (w, h), spec)


def to_batch(images: list[np.ndarray] | np.ndarray, spec: dict[str, Any]) -> np.ndarray:
    """uint8 images (HxW, HxWx1, HxWx2, HxWx3 or HxWx4, any size) to one float32 batch.

    x = (pixel * scale - mean) / std, after compositing alpha, converting to the model's
    channels and order, and fitting to its size; mean and std are in the model's order.
    """
    if spec.get("size") is None:
        raise ValueError("preprocess size is not resolved")
    h, w = spec["size"]
    channels = spec.get("channels", 3)
    out = np.empty((len(images), h, w, channels), dtype=np.float32)
    for i, img in enumerate(images):
        pil = _geometry(_pil(img, spec), spec)
        out[i] = np.asarray(pil, dtype=np.float32).reshape(h, w, channels)
    if channels == 3 and spec.get("channel_order", "RGB") == "BGR":
        out = out[..., ::-1]
    mean = np.asarray(spec.get("mean", [0.0]), dtype=np.float32)
    std = np.asarray(spec.get("std", [1.0]), dtype=np.float32)
    out = (out * np.float32(spec.get("scale", 1.0)) - mean) / std
    if spec.get("layout", "NHWC") == "NCHW":
        return np.ascontiguousarray(out.transpose(0, 3, 1, 2))
    return np.ascontiguousarray(out)
