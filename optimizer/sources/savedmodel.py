"""A TensorFlow SavedModel folder with a single-input, single-output signature."""

from __future__ import annotations

from optimizer.inference.tf import load_savedmodel
from optimizer.model import ModelRef
from optimizer.sources.resolve import check_classes, preprocess_from_shape


def load(cfg, dataset, ctx=None) -> ModelRef:
    _, sig, _, out_name, in_spec = load_savedmodel(cfg.path, cfg.signature)
    pre = preprocess_from_shape(cfg.preprocess, tuple(in_spec.shape), str(cfg.path))
    classes = check_classes(sig.structured_outputs[out_name].shape[-1], dataset.classes,
                            str(cfg.path))
    return ModelRef(kind="savedmodel", path=cfg.path, preprocess=pre, classes=classes,
                    info={"signature": cfg.signature})
