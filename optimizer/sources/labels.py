"""Label names a model carries: a labels file named in the recipe, an ONNX model's
metadata_props, an MMS archive's synset.txt. Read before anything runs, so the dataset can
be put in the model's output order (or the build refused) in seconds.
"""

from __future__ import annotations

from pathlib import Path

from optimizer.data.label_names import parse, read_file

# metadata_props keys exporters use for class names (ours writes "labels")
ONNX_KEYS = ("labels", "classes", "class_names", "classLabels", "names")


def from_onnx(path: Path) -> tuple[list[str], str] | None:
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception:
        return None  # the source loader reports an unreadable model with its own message
    props = {p.key: p.value for p in model.metadata_props}
    for key in ONNX_KEYS:
        if props.get(key, "").strip():
            where = f"{path} metadata_props['{key}']"
            return parse(props[key], where), where
    return None


def of_source(cfg) -> tuple[list[str], str] | None:
    """(labels in output order, where they were read) or None when the model has none."""
    if (path := getattr(cfg, "labels", None)) is not None:
        return read_file(path), str(path)
    if cfg.kind == "onnx":
        return from_onnx(cfg.path)
    if cfg.kind == "mms-archive":
        from optimizer.sources.mxnet import archive

        return archive.synset(cfg.path)
    return None
