"""A Keras application trained from scratch on the recipe's dataset (the usual teacher).

Nothing can be downloaded, so "a ResNet50" means the architecture with fresh weights (or the
user's weights file), trained here with a fixed seed. Pixels go in as 0..255 floats and the
network normalises them itself, so the deployed preprocessing is only a resize.
"""

from __future__ import annotations

from optimizer.errors import BadInput
from optimizer.model import FILE_NAMES, ModelRef
from optimizer.preprocess_spec import Preprocess


def load(cfg, dataset, ctx) -> ModelRef:
    from optimizer.data.dataset import prepared
    from optimizer.train import loop

    if not dataset.labeled:
        raise BadInput(f"source kind architecture trains {cfg.architecture} on the dataset's "
                       "labels, and this dataset has none; use a trained model as the source")
    pre = Preprocess(size=(cfg.input_size, cfg.input_size), channels=cfg.channels)
    data = loop.data_for(dataset, pre, prepared(dataset, "train", pre),
                         dataset.labels_of("train"))
    out = ctx.out_dir / FILE_NAMES["keras"]
    model, result = loop.train(cfg, pre, len(dataset.classes), data, cfg.train,
                               loop.Objective(), ctx, "source", out)
    return ModelRef(kind="keras", path=out, preprocess=pre, classes=dataset.classes,
                    info={"params": int(model.count_params()), "architecture": cfg.architecture,
                          "alpha": cfg.alpha, "input_size": cfg.input_size,
                          "training": result})
