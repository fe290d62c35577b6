"""An image folder: one subfolder per class, named for the class."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from optimizer.data import Dataset, make
from optimizer.errors import BadInput

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
MAX_PIXELS = 50_000_000


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*")
                  if p.is_file() and p.suffix.lower() in EXTENSIONS)


def read_image(path: Path) -> np.ndarray:
    """RGB uint8, or a BadInput naming the file."""
    try:
        with Image.open(path) as im:
            if im.width * im.height > MAX_PIXELS:
                raise BadInput(f"{path}: {im.width}x{im.height} is larger than "
                               f"{MAX_PIXELS} pixels")
            return np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError) as exc:
        raise BadInput(f"{path}: not a readable image ({exc})") from None


def read_images(folder: Path) -> list[np.ndarray]:
    """Every image under `folder`, in path order (labels, if any, are ignored)."""
    files = image_files(folder)
    if not files:
        raise BadInput(f"{folder}: holds no images ({', '.join(sorted(EXTENSIONS))})")
    return [read_image(f) for f in files]


def load(cfg) -> Dataset:
    root = cfg.path
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise BadInput(f"{root}: an image folder needs at least two class subfolders")
    images: list[np.ndarray] = []
    labels: list[int] = []
    for label, cls in enumerate(classes):
        files = image_files(root / cls)
        if not files:
            raise BadInput(f"{root / cls}: class folder has no images")
        images.extend(read_image(f) for f in files)
        labels.extend([label] * len(files))
    return make(f"folder:{root.name}", images, np.asarray(labels), classes, cfg.split)
