"""A Keras model file (.keras or .h5), opened in safe mode."""

from __future__ import annotations

from optimizer.inference.tf import load_keras
from optimizer.model import ModelRef
from optimizer.sources.resolve import check_classes, preprocess_from_shape


def load(cfg, dataset, ctx=None) -> ModelRef:
    net = load_keras(cfg.path)
    shape = tuple(net.inputs[0].shape) if net.inputs else ()
    pre = preprocess_from_shape(cfg.preprocess, shape, str(cfg.path))
    classes = check_classes(net.outputs[0].shape[-1], dataset.classes, str(cfg.path))
    return ModelRef(kind="keras", path=cfg.path, preprocess=pre, classes=classes,
                    info={"params": int(net.count_params())})
