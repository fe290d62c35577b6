"""Filling in what a recipe may leave out (input size, channels) from the model itself."""

from __future__ import annotations

from optimizer.errors import BadInput
from optimizer.preprocess_spec import Preprocess


def preprocess_from_shape(
    pre: Preprocess, shape: tuple, where: str
) -> Preprocess:
    """`shape` is the model's 4-D input shape, batch first, None/str for unknown dims."""
    if len(shape) != 4:
        raise BadInput(f"{where}: expected a 4-D image input, model takes {shape}")
    if pre.layout == "NHWC":
        h, w, c = shape[1], shape[2], shape[3]
    else:
        c, h, w = shape[1], shape[2], shape[3]
    if isinstance(c, int) and c not in (1, 3):
        raise BadInput(f"{where}: input has {c} channels in {pre.layout} layout; expected 1 or 3 "
                       "(set source.preprocess.layout?)")
    update: dict = {}
    if isinstance(c, int) and c != pre.channels:
        update["channels"] = c
    if pre.size is None:
        if not (isinstance(h, int) and isinstance(w, int)):
            raise BadInput(f"{where}: model input size is dynamic; set source.preprocess.size")
        update["size"] = (h, w)
    elif isinstance(h, int) and isinstance(w, int) and tuple(pre.size) != (h, w):
        raise BadInput(f"{where}: preprocess.size {tuple(pre.size)} but the model takes {(h, w)}")
    data = pre.model_dump()
    data.update(update)
    for k in ("mean", "std"):
        if len(data[k]) not in (1, data["channels"]):
            raise BadInput(f"{where}: preprocess.{k} has {len(data[k])} values for "
                           f"{data['channels']} channels")
    return Preprocess.model_validate(data)


def check_classes(n_out, classes: list[str], where: str) -> list[str]:
    """The model's class names: the dataset's (in the model's order by now), or, for images
    without labels and no names anywhere, the output numbers."""
    if not classes:
        if not isinstance(n_out, int):
            raise BadInput(f"{where}: the model's number of outputs is unknown and nothing "
                           "names them; set dataset.classes")
        return [str(i) for i in range(n_out)]
    if isinstance(n_out, int) and n_out != len(classes):
        raise BadInput(f"{where}: model has {n_out} outputs but the dataset has {len(classes)} "
                       "classes")
    return list(classes)
