"""Source loaders, one per recipe `source.kind`. Each returns a ModelRef ready for steps.

`trains` marks sources whose result is produced here (and so cached like a step); the
others point at the user's own file, hashed on every run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from optimizer.sources import architecture, keras_file, mxnet_model, onnx_file, savedmodel
from optimizer.sources.mxnet import archive, bridge, convert, env, worker
from optimizer.steps import TRAIN_CODE


@dataclass(frozen=True)
class SourceLoader:
    load: Callable
    trains: bool
    modules: tuple[str, ...]
    tools: tuple[str, ...] = ()


SOURCES: dict[str, SourceLoader] = {
    "keras": SourceLoader(keras_file.load, False, (keras_file.__file__,)),
    "savedmodel": SourceLoader(savedmodel.load, False, (savedmodel.__file__,)),
    "onnx": SourceLoader(onnx_file.load, False, (onnx_file.__file__,)),
    "architecture": SourceLoader(
        architecture.load, True, (architecture.__file__, *TRAIN_CODE),
        ("tensorflow", "tensorflow-cpu", "keras", "numpy"),
    ),
}
# both MXNet kinds: converted in the isolated env (its pins live in env.py, so in the key)
_MXNET = SourceLoader(
    mxnet_model.load, True,
    tuple(m.__file__ for m in (mxnet_model, archive, bridge, convert, env, worker)),
    ("onnx", "onnxruntime", "numpy"),
)
SOURCES["mxnet"] = SOURCES["mms-archive"] = _MXNET
