"""An ONNX file: checked by the ONNX checker; external data must stay beside the model."""

from __future__ import annotations

import hashlib
from pathlib import Path

from optimizer.errors import BadInput
from optimizer.model import ModelRef, sha256_file
from optimizer.sources.resolve import check_classes, preprocess_from_shape


def external_data_files(model, folder: Path) -> list[Path]:
    """Files the model's tensors point to; refuses anything outside `folder`."""
    from onnx.external_data_helper import ExternalDataInfo, _get_all_tensors

    root = folder.resolve()
    files = []
    for tensor in _get_all_tensors(model):
        if tensor.data_location != 1:  # onnx.TensorProto.EXTERNAL
            continue
        location = ExternalDataInfo(tensor).location
        target = (root / location).resolve()
        if Path(location).is_absolute() or not target.is_relative_to(root):
            raise BadInput(f"{folder}: tensor '{tensor.name}' keeps its data at '{location}', "
                           "outside the model's folder; refused")
        if not target.is_file():
            raise BadInput(f"{folder}: tensor '{tensor.name}' data file '{location}' is missing")
        files.append(target)
    return files


def _dims(value_info) -> tuple:
    return tuple(
        d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
        for d in value_info.type.tensor_type.shape.dim
    )


def load(cfg, dataset, ctx=None) -> ModelRef:
    import onnx

    path: Path = cfg.path
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:
        raise BadInput(f"{path}: not a readable ONNX model ({exc})") from None
    external = external_data_files(model, path.parent)
    try:
        onnx.checker.check_model(str(path))
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BadInput(f"{path}: ONNX checker: {first}") from None
    init_names = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in init_names]
    if len(inputs) != 1 or len(model.graph.output) < 1:
        raise BadInput(f"{path}: expected one image input, found {[i.name for i in inputs]}")
    pre = preprocess_from_shape(cfg.preprocess, _dims(inputs[0]), str(path))
    out_dims = _dims(model.graph.output[0])
    classes = check_classes(out_dims[-1] if out_dims else None, dataset.classes, str(path))
    ref = ModelRef(kind="onnx", path=path, preprocess=pre, classes=classes,
                   info={"opset": max((o.version for o in model.opset_import
                                       if o.domain in ("", "ai.onnx")), default=None),
                         "external_data": [str(f.relative_to(path.parent.resolve()))
                                           for f in external]})
    if external:  # the weights are part of the model's identity too
        h = hashlib.sha256(ref.digest.encode())
        for f in sorted(set(external)):
            h.update(sha256_file(f).encode())
        ref.digest = h.hexdigest()
    return ref
