"""Fashion-MNIST from Debian's `dataset-fashion-mnist` (idx files), so nothing downloads.

Digits are too easy to tell training methods apart; Fashion-MNIST's canonical 10,000-image
test set is kept as the test split unless the recipe asks for a pooled split.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from optimizer.data.classes import FROM_RECIPE, order_classes, ordered
from optimizer.data.dataset import Dataset, make, split_indices
from optimizer.errors import BadInput

CLASSES = ["t-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
           "sneaker", "bag", "ankle boot"]
FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
INSTALL_HINT = "install it with `apt-get install dataset-fashion-mnist`"


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """An idx file (optionally gzipped) of unsigned bytes with `ndim` dimensions."""
    if not path.is_file():
        raise BadInput(f"{path}: Fashion-MNIST file not found; {INSTALL_HINT}")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            magic = f.read(4)
            if len(magic) != 4 or magic[:3] != b"\0\0\x08" or magic[3] != ndim:
                raise BadInput(f"{path}: not an idx file of {ndim}-D unsigned bytes")
            dims = struct.unpack(f">{ndim}I", f.read(4 * ndim))
            data = np.frombuffer(f.read(), dtype=np.uint8)
    except (OSError, EOFError, struct.error) as exc:
        raise BadInput(f"{path}: unreadable idx file ({exc})") from None
    if data.size != int(np.prod(dims)):
        raise BadInput(f"{path}: header says {dims} but holds {data.size} bytes")
    return data.reshape(dims)


def _subsample(labels: np.ndarray, limit: int | None, seed: int) -> np.ndarray:
    """Seeded, class-balanced first `limit` indices (all when limit is None)."""
    if limit is None or limit >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    per_class = [rng.permutation(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    order = np.stack([p[: min(len(p) for p in per_class)] for p in per_class], axis=1).ravel()
    return np.sort(order[:limit])


def load(cfg) -> Dataset:
    root = Path(cfg.path)
    parts = {}
    for name, (img_file, lbl_file) in FILES.items():
        x = read_idx(root / img_file, 3)
        y = read_idx(root / lbl_file, 1).astype(np.int64)
        if len(x) != len(y):
            raise BadInput(f"{root}: {name} has {len(x)} images but {len(y)} labels")
        limit = cfg.train_limit if name == "train" else cfg.test_limit
        keep = _subsample(y, limit, cfg.split.seed)
        parts[name] = (x[keep], y[keep])
    (x_train, y_train), (x_test, y_test) = parts["train"], parts["test"]
    images = list(np.concatenate([x_train, x_test]))
    labels = np.concatenate([y_train, y_test])
    if not cfg.canonical_test:
        return ordered("fashion-mnist", images, labels, CLASSES, cfg, numbered=False)
    # canonical test set; val is a stratified share of the training images
    inner = split_indices(y_train, test=0.0, val=cfg.split.val, seed=cfg.split.seed)
    test = np.arange(len(y_train), len(labels), dtype=np.int64)
    splits = {"train": inner["train"], "val": inner["val"], "test": test}
    classes, mapping = order_classes(CLASSES, cfg.classes, False, "dataset.classes")
    return make("fashion-mnist", images, mapping[labels], classes, cfg.split, splits=splits,
                classes_from=FROM_RECIPE if cfg.classes else "the dataset")
