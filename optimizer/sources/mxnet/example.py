"""Archives like the ones Elastic Inference users hold, made here with AWS's real tools.

Nothing can be downloaded, so the model is a Gluon model zoo ResNet built with fresh
weights and trained briefly on the recipe's images, in the isolated environment. It is then
packed by model-archiver 1.0.3 (`.mar`, `.tar.gz` or a folder) or by MMS 0.4's
mxnet-model-export (the older `.model` layout). Tests, the migration recipe's archive and
the serving benchmark all come from here.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from optimizer.sources.mxnet import bridge, mms_service

SERVICE = Path(mms_service.__file__)


def pixels(dataset, split: str, size: int, channels: int) -> np.ndarray:
    """Raw 0..255 NCHW pixels, resized as the handler will: the model normalises after."""
    from optimizer.data.dataset import prepared
    from optimizer.preprocess_spec import Preprocess

    pre = Preprocess(size=(size, size), channels=channels, layout="NCHW")
    return prepared(dataset, split, pre)


def train_resnet(dataset, folder: Path, name: str, *, size: int = 32, channels: int = 3,
                 layers: tuple[int, ...] = (2, 2, 2, 2),
                 widths: tuple[int, ...] = (16, 16, 32, 64, 128), epochs: int = 8,
                 style: str = "gluon", seed: int = 0, raw_pixels: bool = False,
                 log=print) -> dict:
    """Train and save `<folder>/<name>-symbol.json` and `-0000.params`; returns the contract.
    `raw_pixels`: trained on 0..255 pixels (mean 0, std 1), as a model served by MMS's stock
    vision service had to be: it ignores the signature's mean and std."""
    folder.mkdir(parents=True, exist_ok=True)
    x = pixels(dataset, "train", size, channels)
    y = dataset.labels_of("train")
    mean = [0.0] * channels if raw_pixels else [round(float(v), 3) for v in x.mean(axis=(0, 2, 3))]
    std = [1.0] * channels if raw_pixels else [round(float(v), 3) for v in x.std(axis=(0, 2, 3))]
    data = folder / f"{name}-train.npz"
    np.savez(data, x=x, y=y)
    try:
        reply = bridge.call("train_example", {
            "data": str(data), "out_prefix": str(folder / name), "layers": list(layers),
            "channels": list(widths), "classes": len(dataset.classes), "epochs": epochs,
            "mean": mean, "std": std, "style": style, "seed": seed}, log=log)
    finally:
        data.unlink(missing_ok=True)
    return {"name": name, "input_name": "data", "shape": [0, channels, size, size],
            "mean": mean, "std": std, "labels": list(dataset.classes), "losses": reply["losses"]}


def write_extras(folder: Path, contract: dict, *, signature: bool = True,
                 synset: bool = True, service: bool = True,
                 normalise_in: str = "signature") -> None:
    """signature.json and synset.txt as MMS archives carry them, plus the 1.x handler
    (MMS 0.4's exporter adds its own vision service instead). `normalise_in="handler"`
    writes mean and std into the handler's code and leaves them out of the signature."""
    if signature:
        norm = {"mean": contract["mean"], "std": contract["std"]}
        (folder / "signature.json").write_text(json.dumps({
            "inputs": [{"data_name": contract["input_name"], "data_shape": contract["shape"],
                        **(norm if normalise_in == "signature" else {})}],
            "input_type": "image/jpeg",  # all MMS 0.4's exporter accepts
            "outputs": [{"data_name": "softmax",
                         "data_shape": [0, len(contract["labels"])]}],
            "output_type": "application/json"}, indent=2))
    if synset:
        (folder / "synset.txt").write_text("\n".join(contract["labels"]) + "\n")
    if service:
        code = SERVICE.read_text()
        if normalise_in == "handler":
            code = code.replace("MEAN = None", f"MEAN = {contract['mean']}").replace(
                "STD = None", f"STD = {contract['std']}")
        (folder / SERVICE.name).write_text(code)


def model_archiver(folder: Path, name: str, export_dir: Path, archive_format: str = "default",
                   log=print) -> Path:
    """The real model-archiver 1.0.3 CLI, run in the isolated environment."""
    export_dir.mkdir(parents=True, exist_ok=True)
    bridge.tool(["-m", "model_archiver.model_packaging", "--model-name", name,
                 "--model-path", str(folder), "--handler", f"{SERVICE.stem}:handle",
                 "--export-path", str(export_dir), "--archive-format", archive_format, "-f"],
                cwd=export_dir, log=log)
    suffix = {"default": ".mar", "tgz": ".tar.gz", "no-archive": ""}[archive_format]
    return export_dir / f"{name}{suffix}"


def legacy_export(folder: Path, name: str, log=print) -> Path:
    """MMS 0.4's mxnet-model-export: a `.model` zip with the top-level 0.x manifest."""
    bridge.tool(["-c", "import sys; from mms.export_model import export; "
                 "sys.argv = ['mxnet-model-export'] + sys.argv[1:]; export()",
                 "--model-name", name, "--model-path", str(folder)],
                cwd=folder, log=log, addons=("mms-legacy",))
    return folder / f"{name}.model"
