"""The archive's own handler as the definition of right.

For someone leaving an MMS endpoint, what the old handler answered is what "right" means,
labels or not. Its code may normalise pixels with constants no signature.json lists, and
agreement with the converted model cannot see that: both get the same wrong pixels. So
the handler runs in the MXNet environment on the encoded test images, as the endpoint got
them, and its answers are compared with the converted model fed the recipe's
preprocessing on the same bytes. Below the threshold the build stops before any step,
naming the preprocessing variant that makes the two agree.
"""

from __future__ import annotations

import io
import json
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from optimizer.errors import SourceRejected
from optimizer.handler.pixels import decode
from optimizer.preprocess_spec import Preprocess, apply
from optimizer.sources.mxnet import archive as mar
from optimizer.sources.mxnet import bridge
from optimizer.sources.mxnet.answers import read_answer, shape_of
from optimizer.sources.mxnet.variants import describe, filters, variants

EXAMPLES = 3


def encode(images: list[np.ndarray], fmt: str) -> list[bytes]:
    """The test images as a client sent them to the endpoint: PNG (lossless) or JPEG."""
    from PIL import Image

    out = []
    for img in images:
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG" if fmt == "jpeg" else "PNG")
        out.append(buf.getvalue())
    return out


def run_handler(archive: Path, images: list[bytes], log, fmt: str = "png") -> dict[str, Any]:
    """{"answers", "source", "handler"} from the handler, or {"unavailable": why}. It runs
    with MMS 1.x's own Python packages (multi-model-server, Pillow, psutil) beside MXNet,
    as the old server gave them to it."""
    with tempfile.TemporaryDirectory(prefix="optimizer-handler-") as tmp:
        folder = mar.unpack_for_handler(archive, Path(tmp) / "model")
        if not folder.handler:
            return {"unavailable": "the manifest names no handler", "handler": None}
        paths = []
        for i, data in enumerate(images):
            paths.append(Path(tmp) / f"image-{i:05d}")
            paths[-1].write_bytes(data)
        reply = bridge.call("handle", {
            "model_dir": str(folder.model_dir), "manifest": folder.manifest,
            "model_name": folder.model_name, "handler": folder.handler,
            "images": [str(p) for p in paths], "content_type": f"image/{fmt}"},
            log=log, addons=("mms",))
    return {**reply, "handler": folder.handler}


def probabilities(onnx_path: Path, pre: Preprocess, images: list[bytes]) -> np.ndarray:
    from optimizer.inference.onnx import run_batch, session

    scores = run_batch(session(onnx_path), apply([decode(b) for b in images], pre))
    if scores.min() >= 0 and np.allclose(scores.sum(axis=1), 1, atol=1e-3):
        return scores
    e = np.exp(scores - scores.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def compare(tops: list[str | None], scores: list[dict[str, float]], probs: np.ndarray,
            classes: list[str]) -> dict[str, Any]:
    """Top-1 always; scores where the handler gives them, for the labels it names."""
    ours = [classes[i] for i in probs.argmax(axis=1)]
    same = [t == o for t, o in zip(tops, ours, strict=True)]
    index = {c: i for i, c in enumerate(classes)}
    diffs = [abs(v - float(row[index[label]]))
             for answer, row in zip(scores, probs, strict=True)
             for label, v in answer.items() if label in index]
    out: dict[str, Any] = {"samples": len(tops), "top1_agreement": round(100 * float(
        np.mean(same)), 3), "disagree": [i for i, s in enumerate(same) if not s]}
    out["max_score_diff"] = round(max(diffs), 6) if diffs else None
    out["ours"] = ours
    return out


def _renamed(answer: tuple[str | None, dict[str, float]],
             names: dict[str, str]) -> tuple[str | None, dict[str, float]]:
    top, scores = answer
    return names.get(top, top) if top is not None else None, {
        names.get(k, k): v for k, v in scores.items()}


def _example(i: int, tops: list, scores: list, result: dict, probs: np.ndarray,
             classes: list[str]) -> str:
    ours = result["ours"][i]
    theirs = f"'{tops[i]}'" + (f" ({scores[i][tops[i]]:.2f})" if tops[i] in scores[i] else "")
    return (f"test image {i}: handler {theirs}, converted model '{ours}' "
            f"({probs[i][classes.index(ours)]:.2f})")


def diagnose(onnx_path: Path, pre: Preprocess, images: list[bytes], tops: list[str | None],
             source: str | None, classes: list[str]) -> tuple[Preprocess, float] | None:
    """The usual preprocessing variants tried against the handler's answers on the first 64
    images, then the best one's resampling filters on all: (the best, its agreement)."""
    def best_of(candidates: list[Preprocess], n: int) -> tuple[Preprocess, float]:
        scored = []
        for candidate in candidates:
            probs = probabilities(onnx_path, candidate, images[:n])
            ours = [classes[i] for i in probs.argmax(axis=1)]
            scored.append((100 * float(np.mean([t == o for t, o in zip(
                tops[:n], ours, strict=True)])), -len(scored), candidate))
        score, _, best = max(scored, key=lambda s: s[:2])  # the first of equals
        return best, score

    candidates = variants(pre, source)
    if not candidates:
        return None
    best, _ = best_of(candidates, 64)
    return best_of(filters(best), len(images))


def check(archive: Path, onnx_path: Path, pre: Preprocess, images: list[bytes],
          classes: list[str], synset: list[str] | None, cfg, log) -> dict[str, Any]:
    """The record for the source's info; raises SourceRejected below cfg.min_agreement.
    `synset`: the archive's labels, which the handler answers with, in output order (the
    recipe may name the classes otherwise)."""
    reply = run_handler(archive, images, log, cfg.image_format)
    names = dict(zip(synset, classes, strict=True)) if synset else {}
    read = [_renamed(read_answer(a, synset or classes), names)
            for a in reply.get("answers", [])]
    if read and all(t is None for t, _ in read):
        reply["unavailable"] = ("its answers name no label this tool can read, e.g. "
                                f"{json.dumps(reply['answers'][0])[:200]}")
    if "unavailable" in reply:
        log(f"[yellow]warning[/]: the archive's handler cannot run here ({reply['unavailable']}"
            "); its answers are not compared (validate.require_handler_parity makes this fail)")
        return {"verdict": "not run", "reason": reply["unavailable"], "handler": reply["handler"]}
    tops, scores = [t for t, _ in read], [s for _, s in read]
    probs = probabilities(onnx_path, pre, images)
    result = compare(tops, scores, probs, classes)
    record = {"verdict": "ok", "handler": reply["handler"], "image_format": cfg.image_format,
              "samples": result["samples"], "top1_agreement": result["top1_agreement"],
              "max_score_diff": result["max_score_diff"],
              "min_agreement": cfg.min_agreement,
              "answer_shape": shape_of(reply["answers"][0]) if reply["answers"] else None,
              "unread_answers": sum(t is None for t in tops)}
    log(f"handler {reply['handler']}: top-1 agreement with the converted model "
        f"{record['top1_agreement']:.2f}% on {record['samples']} test images"
        + (f", max score difference {record['max_score_diff']:.3g}"
           if record["max_score_diff"] is not None else ""))
    if record["top1_agreement"] >= cfg.min_agreement:
        return record
    record["verdict"] = "rejected"
    record["examples"] = [_example(i, tops, scores, result, probs, classes)
                          for i in result["disagree"][:EXAMPLES]]
    found = diagnose(onnx_path, pre, images, tops, reply.get("source"), classes)
    raise SourceRejected(_message(record, pre, found), {**record, "suggested_preprocess":
                         describe(found[0], pre) if found else None})


def _message(record: dict[str, Any], pre: Preprocess,
             found: tuple[Preprocess, float] | None) -> str:
    message = (f"the archive's handler ({record['handler']}) and the converted model agree on "
               f"{record['top1_agreement']:.2f}% of {record['samples']} test images (at least "
               f"{record['min_agreement']:g}% wanted; source.handler.min_agreement): "
               "the function would not answer as the old endpoint did, so nothing was built. "
               "For example " + "; ".join(record["examples"]) + ".")
    if found and found[1] > record["top1_agreement"]:
        message += (f" With this preprocessing they agree on {found[1]:.2f}%; the handler's "
                    "code probably normalises the pixels itself. Set it in the recipe, under "
                    f"source:  preprocess: {describe(found[0], pre)}")
    else:
        message += (" No usual preprocessing variant (scale, mean/std, channel order, crop) "
                    "makes them agree: check the handler's code for what it does to the "
                    "pixels and the answers.")
    return message
