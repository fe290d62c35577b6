"""Source loaders, one per recipe `source.kind`. Each returns a ModelRef ready for steps.

`trains` marks sources whose result is produced here (and so cached like a step); the
others point at the user's own file, hashed on every run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from optimizer.sources import architecture, keras_file, mxnet_model, onnx_file, savedmodel


@dataclass(frozen=True)
class SourceLoader:
    load: Callable
    trains: bool
    # pip distributions whose versions enter a trained source's cache key
    tools: tuple[str, ...] = ()


SOURCES: dict[str, SourceLoader] = {
    "keras": SourceLoader(keras_file.load, False),
    "savedmodel": SourceLoader(savedmodel.load, False),
    "onnx": SourceLoader(onnx_file.load, False),
    "architecture": SourceLoader(architecture.load, True,
                                 ("tensorflow", "tensorflow-cpu", "keras", "numpy")),
}
# both MXNet kinds: converted in the isolated env (its pins live in env.py, so in the key)
_MXNET = SourceLoader(mxnet_model.load, True, ("onnx", "onnxruntime", "numpy"))
SOURCES["mxnet"] = SOURCES["mms-archive"] = _MXNET
