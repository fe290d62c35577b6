"""An image folder: one subfolder per class, or images without labels.

Files are decoded by the function's own `decode`, so a phone photo (EXIF orientation, CMYK,
alpha, 16-bit) becomes the same pixels here as in the deployed handler.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from optimizer.data.classes import FROM_RECIPE, ordered
from optimizer.data.dataset import Dataset, make
from optimizer.errors import BadInput
from optimizer.handler.pixels import NotAnImage, decode

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}
# the rule when a recipe gives no `classes`: as Keras' image_dataset_from_directory and
# torchvision's ImageFolder number them
DEFAULT_ORDER = "folder names, sorted by Unicode code point"


def image_files(folder: Path, recursive: bool = True) -> list[Path]:
    found = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in found
                  if p.is_file() and p.suffix.lower() in EXTENSIONS
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def read_image(path: Path) -> np.ndarray:
    """uint8 grey, RGB or RGBA, or a BadInput naming the file."""
    try:
        return decode(path.read_bytes())
    except NotAnImage as exc:
        raise BadInput(f"{path}: not a readable image ({exc})") from None
    except OSError as exc:
        raise BadInput(f"{path}: cannot read ({exc.strerror or exc})") from None


def read_images(folder: Path) -> list[np.ndarray]:
    """Every image under `folder`, in path order (labels, if any, are ignored)."""
    files = image_files(folder)
    if not files:
        raise BadInput(f"{folder}: holds no images ({', '.join(sorted(EXTENSIONS))})")
    return [read_image(f) for f in files]


def class_folders(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def layout(root: Path, labels: str) -> str:
    """'classes' (one subfolder per class) or 'unlabeled'; refuses a mix of the two."""
    if labels == "none":
        return "unlabeled"
    folders = class_folders(root)
    loose = image_files(root, recursive=False)
    if not folders:
        return "unlabeled"
    if loose:
        raise BadInput(f"{root}: holds class subfolders and also images outside them "
                       f"({loose[0].name}, ...); move those into a class folder, or set "
                       "dataset.labels: none to use every image without labels")
    if len(folders) < 2:
        raise BadInput(f"{root}: an image folder needs at least two class subfolders (or "
                       "images without subfolders, used without labels)")
    return "classes"


def load(cfg) -> Dataset:
    root = cfg.path
    if layout(root, cfg.labels) == "unlabeled":
        images = read_images(root)
        return make(f"folder:{root.name}", images, None, list(cfg.classes or []), cfg.split,
                    classes_from=FROM_RECIPE if cfg.classes else "the model's outputs")
    folders = class_folders(root)
    images: list[np.ndarray] = []
    labels: list[int] = []
    for label, cls in enumerate(folders):
        files = image_files(root / cls)
        if not files:
            raise BadInput(f"{root / cls}: class folder has no images")
        images.extend(read_image(f) for f in files)
        labels.extend([label] * len(files))
    return ordered(f"folder:{root.name}", images, np.asarray(labels), folders, cfg,
                   numbered=False, default_order=DEFAULT_ORDER)
