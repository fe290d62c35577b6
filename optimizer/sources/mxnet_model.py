"""MXNet sources (symbol + params, or an MMS archive), converted to ONNX once and cached.

The result is an ONNX model, so every later step and package is MXNet-free; the pixel
contract MMS used (signature shape, optional mean/std, synset labels) comes along so the
Lambda handler answers like the old endpoint did.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from optimizer.errors import BadInput
from optimizer.model import FILE_NAMES, ModelRef
from optimizer.preprocess_spec import Preprocess
from optimizer.sources.mxnet import archive as mar
from optimizer.sources.mxnet import convert
from optimizer.sources.resolve import check_classes

STOCK_SERVICE = "mxnet_vision_service"


def stock_service(info: mar.ArchiveInfo | None) -> bool:
    """MMS's own vision service (MMS 0.4's exporter puts it in every `.model`; MMS 1.x's
    examples ship it too): it resizes with MXNet's imresize and never normalises."""
    handler = (info.handler or "") if info else ""
    return handler.split(":", 1)[0].removesuffix(".py").rsplit("/", 1)[-1] == STOCK_SERVICE


def _preprocess(cfg, shape: list[int], info: mar.ArchiveInfo | None) -> Preprocess:
    """MMS's vision service fed raw RGB pixels, resized by OpenCV's bicubic and not
    normalised whatever the signature says; a custom handler may use the signature's
    mean/std/scale (the handler check tells); whatever the recipe sets itself wins."""
    data: dict[str, Any] = {"layout": "NCHW", "channels": shape[1], "size": (shape[2], shape[3])}
    if stock_service(info):
        data["resize"] = "bicubic-opencv"
    elif info is not None:
        for key in ("mean", "std", "scale"):
            if getattr(info, key) is not None:
                data[key] = getattr(info, key)
    explicit = cfg.preprocess.model_dump(include=cfg.preprocess.model_fields_set)
    for key in ("layout", "channels"):
        if key in explicit and explicit[key] != data[key]:
            raise BadInput(f"source.preprocess.{key} is {explicit[key]!r} but the MXNet model "
                           f"takes {data[key]!r} (input {shape})")
    if "size" in explicit and tuple(explicit["size"]) != data["size"]:
        raise BadInput(f"source.preprocess.size {tuple(explicit['size'])} but the model takes "
                       f"{data['size']} (input {shape})")
    try:
        return Preprocess.model_validate({**data, **explicit})
    except ValueError as exc:
        raise BadInput(f"preprocessing for input {shape}: {exc}") from None


def load(cfg, dataset, ctx) -> ModelRef:
    from optimizer.data.dataset import prepared

    log = ctx.progress.log
    info: mar.ArchiveInfo | None = None
    unpacked = ctx.out_dir / "_unpacked"
    if cfg.kind == "mms-archive":
        info = mar.unpack(cfg.path, unpacked)
        symbol, params = info.symbol, info.params
        log(f"MMS archive {cfg.path.name}: layout {info.layout}, model '{info.model_name}', "
            f"handler {info.handler}")
        if stock_service(info) and (info.mean or info.std or info.scale):
            info.notes.append(f"{info.handler} is MMS's stock vision service, which never "
                              "applied the signature's mean/std/scale; neither does this "
                              "build (source.preprocess sets them)")
    else:
        symbol, params = cfg.symbol, cfg.params
    try:
        return _convert(cfg, dataset, ctx, symbol, params, info, prepared, log)
    finally:
        shutil.rmtree(unpacked, ignore_errors=True)


def _convert(cfg, dataset, ctx, symbol: Path, params: Path, info, prepared, log) -> ModelRef:
    where = str(cfg.path if cfg.kind == "mms-archive" else symbol)
    shape = cfg.input_shape or (info.input_shape if info else None)
    if shape is None:
        raise BadInput(f"{where}: the input shape is unknown (no signature.json); set "
                       "source.input_shape, e.g. [1, 3, 224, 224]")
    shape = [1, *shape[1:]]  # MMS writes 0 for "any batch"; the export makes it dynamic
    name = cfg.input_name or (info.input_name if info else None)
    graph = convert.inspect(symbol, params, shape, name, log)
    n_out = graph.output_shape[-1] if len(graph.output_shape) == 2 else None
    if n_out is None:
        raise BadInput(f"{where}: output shape {graph.output_shape}; expected (batch, classes)")
    if info and info.labels and len(info.labels) != n_out:
        raise BadInput(f"{where}: synset.txt has {len(info.labels)} labels for {n_out} outputs")
    # the dataset is in the synset's order by now (or in the recipe's labels file's)
    classes = check_classes(n_out, dataset.classes, where)
    pre = _preprocess(cfg, shape, info)
    out = ctx.out_dir / FILE_NAMES["onnx"]
    log(f"converting {symbol.name} ({graph.params:,} params, ops: {', '.join(graph.ops)}) to "
        "ONNX in the MXNet environment")
    exported = convert.export(symbol, params, graph, out, log)
    x = prepared(dataset, "test", pre, cfg.parity.samples)
    labels = dataset.labels_of("test", cfg.parity.samples) if dataset.labeled else None
    result = convert.parity(symbol, params, graph, out, x, labels, log)
    log(f"parity on {result['samples']} test images: max |diff| {result['max_abs_diff']:.3g} "
        f"({result['max_rel_diff']:.3g} of the outputs' size), top-1 agreement "
        f"{result['top1_agreement']:.4f}")
    if result["inputs_look_unnormalised"]:
        log(f"[yellow]warning[/]: {convert.unnormalised(result)}")
    convert.check_parity(result, cfg.parity)
    src: dict[str, Any] = {"mxnet": graph.mxnet, "input_name": graph.input_name,
                           "input_shape": graph.input_shape, "mxnet_ops": graph.ops,
                           "params": graph.params, "conversion": exported, "parity": {
                               **result, "max_rel_diff_allowed": cfg.parity.max_rel_diff,
                               "max_abs_diff_allowed": cfg.parity.max_abs_diff,
                               "min_top1_agreement": cfg.parity.min_top1_agreement}}
    if info is not None:
        src["archive"] = {"layout": info.layout, "model_name": info.model_name,
                          "handler": info.handler, "input_type": info.input_type,
                          "labels_from_synset": bool(info.labels), "notes": info.notes}
        src["handler"] = _handler(cfg, dataset, out, pre, classes, info.labels, log)
    return ModelRef(kind="onnx", path=out, preprocess=pre, classes=classes, info=src)


def _handler(cfg, dataset, onnx_path: Path, pre: Preprocess, classes: list[str],
             synset: list[str] | None, log) -> dict[str, Any]:
    """The old endpoint's handler against the converted model, on the same encoded bytes."""
    from optimizer.sources.mxnet import handler_check

    idx = dataset.indices("test", cfg.handler.samples)
    images = handler_check.encode([dataset.images[i] for i in idx], cfg.handler.image_format)
    return handler_check.check(cfg.path, onnx_path, pre, images, classes, synset,
                               cfg.handler, log)
