"""An image folder: one subfolder per class, named for the class."""

from __future__ import annotations

import numpy as np
from PIL import Image, UnidentifiedImageError

from optimizer.data import Dataset, make
from optimizer.errors import BadInput

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
MAX_PIXELS = 50_000_000


def load(cfg) -> Dataset:
    root = cfg.path
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if len(classes) < 2:
        raise BadInput(f"{root}: an image folder needs at least two class subfolders")
    images: list[np.ndarray] = []
    labels: list[int] = []
    for label, cls in enumerate(classes):
        files = sorted(
            p for p in (root / cls).rglob("*")
            if p.is_file() and p.suffix.lower() in EXTENSIONS
        )
        if not files:
            raise BadInput(f"{root / cls}: class folder has no images")
        for f in files:
            try:
                with Image.open(f) as im:
                    if im.width * im.height > MAX_PIXELS:
                        raise BadInput(f"{f}: {im.width}x{im.height} is larger than "
                                       f"{MAX_PIXELS} pixels")
                    images.append(np.asarray(im.convert("RGB"), dtype=np.uint8))
            except (UnidentifiedImageError, OSError) as exc:
                raise BadInput(f"{f}: not a readable image ({exc})") from None
            labels.append(label)
    return make(f"folder:{root.name}", images, np.asarray(labels), classes, cfg.split)
