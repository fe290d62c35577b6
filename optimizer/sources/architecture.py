"""A Keras application trained from scratch on the recipe's dataset (the usual teacher).

Nothing can be downloaded, so "a ResNet50" means the architecture with fresh weights (or the
user's weights file), trained here with a fixed seed. Pixels go in as 0..255 floats and the
network normalises them itself, so the deployed preprocessing is only a resize.
"""

from __future__ import annotations

import numpy as np

from optimizer.model import FILE_NAMES, ModelRef
from optimizer.preprocess import Preprocess


def load(cfg, dataset, ctx) -> ModelRef:
    import keras

    from optimizer.data import prepared
    from optimizer.train import loop, nets

    pre = Preprocess(size=(cfg.input_size, cfg.input_size), channels=cfg.channels)
    x = prepared(dataset, "train", pre)
    has_val = len(dataset.indices("val")) > 0
    data = loop.TrainData(
        x=x, labels=dataset.labels_of("train"), teacher=None,
        val_x=prepared(dataset, "val", pre) if has_val else None,
        val_y=dataset.labels_of("val") if has_val else None,
        fill=np.zeros(cfg.channels, np.float32),
    )
    keras.utils.set_random_seed(cfg.train.seed)
    logits_model, model = nets.build(cfg, cfg.channels, len(dataset.classes),
                                     *nets.channel_stats(x))
    result = loop.fit(logits_model, data, cfg.train, loop.Objective(), ctx.progress,
                      ctx.checkpoints, f"train {cfg.label}")
    out = ctx.out_dir / FILE_NAMES["keras"]
    model.save(out)
    return ModelRef(kind="keras", path=out, preprocess=pre, classes=dataset.classes,
                    info={"params": int(model.count_params()), "architecture": cfg.architecture,
                          "alpha": cfg.alpha, "input_size": cfg.input_size,
                          "training": result})
