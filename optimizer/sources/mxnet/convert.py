"""MXNet symbol + params to ONNX, proved by running both on the same test images.

MXNet runs only in the isolated environment (bridge); this side tidies the ONNX graph,
runs ONNX Runtime, and compares. The parity numbers go into the source's info and gate the
build: a conversion that changes answers must not reach a package.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from optimizer.errors import BadInput, StepFailed
from optimizer.sources.mxnet import bridge

# logits of trained classifiers rarely pass a few tens; far beyond, the inputs are off
UNNORMALISED = 50.0


@dataclass
class Graph:
    """What the worker learnt about a symbol before converting it."""

    input_name: str
    input_shape: list[int]
    output_shape: list[int]
    ops: list[str]
    params: int
    mxnet: str


def inspect(symbol: Path, params: Path, input_shape: list[int], input_name: str | None,
            log) -> Graph:
    info = bridge.call("inspect", {"symbol": str(symbol), "params": str(params),
                                   "input_shape": input_shape, "input_name": input_name},
                       log=log)
    if info["unsupported"]:
        raise BadInput(f"{symbol}: mx2onnx (MXNet {info['mxnet']}) has no ONNX conversion for "
                       f"operator(s) {', '.join(info['unsupported'])}; replace them before "
                       "exporting, or export to ONNX from the training framework")
    return Graph(info["input_name"], input_shape, info["output_shape"], info["ops"],
                 info["params"], info["mxnet"])


def _tidy(path: Path) -> dict[str, Any]:
    """mx2onnx lists every weight as a graph input too; ONNX Runtime then cannot fold them."""
    import onnx

    model = onnx.load(str(path))
    inits = {i.name for i in model.graph.initializer}
    keep = [i for i in model.graph.input if i.name not in inits]
    dropped = len(model.graph.input) - len(keep)
    del model.graph.input[:]
    model.graph.input.extend(keep)
    try:
        onnx.checker.check_model(model)
    except Exception as exc:
        raise StepFailed("source", f"mx2onnx wrote an invalid ONNX model: {exc}") from None
    onnx.save(model, str(path))
    return {"weights_removed_from_inputs": dropped, "nodes": len(model.graph.node)}


def export(symbol: Path, params: Path, graph: Graph, out: Path, log) -> dict[str, Any]:
    reply = bridge.call("export", {"symbol": str(symbol), "params": str(params),
                                   "input_name": graph.input_name,
                                   "input_shape": graph.input_shape, "out": str(out)}, log=log)
    return {**reply, **_tidy(out)}


def parity(symbol: Path, params: Path, graph: Graph, onnx_path: Path, x: np.ndarray,
           labels: np.ndarray | None, log) -> dict[str, Any]:
    """MXNet's and ONNX Runtime's outputs on the same batch, compared value by value."""
    from optimizer.inference.onnx import run_batch, session

    with tempfile.TemporaryDirectory(prefix="optimizer-parity-") as tmp:
        xs, ys = Path(tmp) / "x.npy", Path(tmp) / "y.npy"
        np.save(xs, x.astype(np.float32))
        bridge.call("forward", {"symbol": str(symbol), "params": str(params),
                                "input_name": graph.input_name, "inputs": str(xs),
                                "out": str(ys)}, log=log)
        ref = np.load(ys)
    got = run_batch(session(onnx_path), x)
    if ref.shape != got.shape:
        raise StepFailed("source", f"MXNet gives outputs of shape {ref.shape}, the ONNX model "
                         f"{got.shape}")
    diff = np.abs(ref.astype(np.float64) - got)
    size = float(np.abs(ref).max())
    out = {
        "samples": len(x),
        "max_abs_diff": float(diff.max()),
        "max_rel_diff": float(diff.max()) / max(1.0, size),
        "output_size": size,
        "inputs_look_unnormalised": size > UNNORMALISED,
        "mean_abs_diff": float(diff.mean()),
        "top1_agreement": float(np.mean(ref.argmax(1) == got.argmax(1))),
        "output_range": [float(ref.min()), float(ref.max())],
    }
    if labels is not None:
        out["mxnet_accuracy"] = float(np.mean(ref.argmax(1) == labels))
        out["onnx_accuracy"] = float(np.mean(got.argmax(1) == labels))
    return out


def check_parity(result: dict[str, Any], parity) -> None:
    problems = []
    if not result["max_rel_diff"] <= parity.max_rel_diff:
        problems.append(f"max |MXNet - ONNX| is {result['max_abs_diff']:.3g}, "
                        f"{result['max_rel_diff']:.3g} of the outputs' size "
                        f"{max(1.0, result['output_size']):.3g} > {parity.max_rel_diff:g}")
    if parity.max_abs_diff is not None and not result["max_abs_diff"] <= parity.max_abs_diff:
        problems.append(f"max |MXNet - ONNX| is {result['max_abs_diff']:.3g} > "
                        f"{parity.max_abs_diff:g}")
    if result["top1_agreement"] < parity.min_top1_agreement:
        problems.append(f"top-1 agreement {result['top1_agreement']:.4f} < "
                        f"{parity.min_top1_agreement:g}")
    if problems:
        raise StepFailed("source", "ONNX output does not match MXNet on "
                         f"{result['samples']} test images: {'; '.join(problems)} "
                         "(source.parity sets the tolerance)."
                         + (f" {unnormalised(result)}" if result["inputs_look_unnormalised"]
                            else ""))


def unnormalised(result: dict[str, Any]) -> str:
    return (f"The outputs reach {result['output_size']:.3g}, far beyond what a softmax (0..1) "
            f"or logits (|x| under ~{UNNORMALISED:g}) give: the inputs look unnormalised; "
            "check source.preprocess (scale, mean, std) against the handler's code")
