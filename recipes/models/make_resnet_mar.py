"""Remake recipes/models/resnet18q-digits.mar, the archive resnet-eia-migration.yaml reads.

It stands in for the `.mar` an Elastic Inference user holds: a Gluon model zoo ResNet-18
(BasicBlockV1, [2, 2, 2, 2]) at a quarter of the width, fresh weights trained for 8 epochs
on the recipe's own training split of scikit-learn's digits at 32x32 RGB, exported with
HybridBlock.export() and packed by the real model-archiver 1.0.3. All of it runs in
optimizer's isolated MXNet environment:

    python recipes/models/make_resnet_mar.py

`--normalise-in handler` writes the mean and std into the handler's code instead of
signature.json, as hand-written handlers often do (the build then finds them by running
the handler); `--out` puts the archive elsewhere.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from optimizer.data.load import load_dataset
from optimizer.recipe.schema import DigitsDataset, Split
from optimizer.sources.mxnet import example

NAME = "resnet18q-digits"
HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--normalise-in", choices=("signature", "handler"), default="signature")
    ap.add_argument("--out", type=Path, default=HERE, help="folder for the .mar")
    args = ap.parse_args()
    # the recipe's split, so the archive never saw the recipe's test images
    ds = load_dataset(DigitsDataset(kind="sklearn-digits", split=Split(test=0.2, val=0.1, seed=0)))
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / NAME
        contract = example.train_resnet(ds, folder, NAME, size=32, epochs=8)
        example.write_extras(folder, contract, normalise_in=args.normalise_in)
        made = example.model_archiver(folder, NAME, Path(tmp) / "out")
        shutil.copy(made, args.out / made.name)
    print(f"wrote {args.out / made.name}")


if __name__ == "__main__":
    main()
