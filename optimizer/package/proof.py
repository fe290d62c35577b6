"""What a package is proved with: test images the shipped model gets right, one per class,
the requests made of them, and the check of the handler's answers against the build's.

A proof on one image cannot tell a correct function from one whose class names are
shifted; one image per class can.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
from PIL import Image

from optimizer.artifact import Artifact
from optimizer.data.dataset import Dataset, prepared
from optimizer.errors import PackageFailed
from optimizer.handler.engines import load, top_k
from optimizer.handler.pixels import decode
from optimizer.inference.predict import predict
from optimizer.model import ModelRef
from optimizer.preprocess_spec import apply

SAMPLE_EVENT = "sample-event.json"  # test images the build got right, one per class
SAMPLE_EVENT_IMAGES = 8  # classes in sample-event.json (at most package.max_images)
EMULATED_SAMPLES = 10  # classes proved under qemu, 15-90x slower than native
# the handler rounds scores to 6 places; another CPU (qemu's) may move the last digits
SCORE_TOLERANCE = 1e-3


@dataclass
class Sample:
    """A test image the shipped model gets right at build time, and what to expect."""

    png: bytes
    label: str
    index: int
    score: float  # the model's top score for it at build time


def sample_event(pngs: list[bytes]) -> dict:
    """A Function URL request: one image as a binary body, several as a JSON body."""
    event = {"version": "2.0", "rawPath": "/",
             "requestContext": {"http": {"method": "POST", "path": "/"}}}
    if len(pngs) == 1:
        return {**event, "isBase64Encoded": True, "headers": {"content-type": "image/png"},
                "body": base64.b64encode(pngs[0]).decode()}
    body = json.dumps({"images": [base64.b64encode(p).decode() for p in pngs]})
    return {**event, "isBase64Encoded": False,
            "headers": {"content-type": "application/json"}, "body": body}


def _png(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.asarray(img, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@dataclass(frozen=True)
class Answers:
    """The build's answers to a request, as the function should give them: the same model
    and engine at the function's thread count, on the same images decoded from the same
    bytes, in the same batch (a dynamically quantized model's answer for an image moves with
    the other images of its request)."""

    model: ModelRef
    engine: str
    logits: bool  # the handler applies softmax to logits
    threads: int

    @cached_property
    def _run(self) -> Callable[[np.ndarray], np.ndarray]:
        if self.engine in ("tensorflow", "intel-tensorflow"):
            # TensorFlow's thread pools are fixed at its first use in this process
            return lambda x: predict(self.model, x, self.engine)
        return load(self.engine, self.model.path, self.threads)  # the function's own loader

    def __call__(self, request: list[Sample]) -> list[dict]:
        x = apply([decode(s.png) for s in request], self.model.preprocess)
        return [top[0] for top in top_k(self._run(x), self.model.classes, 1, self.logits)]


def pick_samples(art: Artifact, dataset: Dataset, reference: list[int],
                 answers: Answers) -> list[Sample]:
    """One test image per class that the artifact answers right: as labelled, or (no
    labels) as the source answered it (`reference`, the source's test top-1). A proof on
    one image cannot tell a correct function from one whose class names are shifted."""
    idx = dataset.indices("test")
    expected = ([int(dataset.labels[i]) for i in idx[:len(reference)]] if dataset.labeled
                else list(reference))
    first: dict[int, int] = {}
    for i, predicted in enumerate(art.measured.accuracy.top1 if art.measured.accuracy else ()):
        if predicted == expected[i] and predicted not in first:
            first[predicted] = int(idx[i])
    if not first:
        raise PackageFailed(f"{art.name} gets no test image right; nothing to prove the "
                            "package with")
    chosen = [first[c] for c in sorted(first)]
    pngs = [_png(dataset.images[i]) for i in chosen]
    # in the handler's terms: its labels, and softmax applied to logits; one image alone
    tops = [answers([Sample(png, "", i, 0.0)])[0] for png, i in zip(pngs, chosen, strict=True)]
    return [Sample(png, top["label"], i, top["score"])
            for png, i, top in zip(pngs, chosen, tops, strict=True)]


def output_kind(model: ModelRef, dataset: Dataset) -> str:
    """'probabilities' when rows are non-negative and sum to one, else 'logits'."""
    scores = predict(model, prepared(dataset, "test", model.preprocess, limit=8))
    # quantized softmax outputs sum to one only within a few percent
    probs = bool((scores >= 0).all() and np.allclose(scores.sum(axis=1), 1.0, atol=0.05))
    return "probabilities" if probs else "logits"


def _chunks(samples: list[Sample], size: int) -> list[list[Sample]]:
    return [samples[i:i + size] for i in range(0, len(samples), size)]


def proof_events(samples: list[Sample], max_images: int) -> list:
    """The first sample as a binary Function URL body, a body that is not an image, then
    every sample in JSON requests of at most `max_images` images."""
    first = sample_event([samples[0].png])
    bad = {**first, "body": base64.b64encode(b"not an image").decode()}
    return [first, bad, *({"images": [base64.b64encode(s.png).decode() for s in chunk]}
                          for chunk in _chunks(samples, max(2, max_images)))]


def check_proof(responses: list[dict], samples: list[Sample], max_images: int,
                where: str, answers: Answers) -> dict:
    """The handler's answers to proof_events: every class named as the build names it,
    with the build's score for the same request, and a 4xx for the bad request."""
    def body(r: dict) -> Any:
        return json.loads(r["body"])

    first, bad, *batches = responses
    requests = [(first, [samples[0]]),
                *zip(batches, _chunks(samples, max(2, max_images)), strict=True)]
    got = []
    for r, request in requests:
        if r.get("statusCode") != 200:
            raise PackageFailed(f"{where}: a request with test images got "
                                f"{r.get('statusCode')}: {str(r.get('body'))[:300]}")
        for k, want in enumerate(answers(request)):
            top = first_answers(body(r))[k]
            if top["label"] != want["label"]:
                raise PackageFailed(f"{where}: the handler said '{top['label']}' for a test "
                                    f"image the build classified as '{want['label']}'")
            if abs(top["score"] - want["score"]) > SCORE_TOLERANCE:
                raise PackageFailed(f"{where}: the handler scored a '{want['label']}' test "
                                    f"image {top['score']:.6f}, the build {want['score']:.6f}; "
                                    "preprocessing or engine differs")
            got.append(top)
    if not 400 <= bad.get("statusCode", 0) < 500 or "error" not in body(bad):
        raise PackageFailed(f"{where}: a request that is not an image got {bad}")
    return {"label": got[0]["label"], "score": got[0]["score"], "expected": samples[0].label,
            "build_score": round(samples[0].score, 6),
            "classes_checked": len(samples), "labels_checked": [s.label for s in samples],
            "bad_request_status": bad["statusCode"], "threads": _threads(first)}


def first_answers(doc: Any) -> list[dict]:
    """Each image's first answer as {label, score}, from either response: ours, or a top-k
    list shaped like an MMS handler's (two keys: a label string and a score)."""
    if isinstance(doc, dict):
        return [p["top"][0] for p in doc["predictions"]]
    rows = [doc] if doc and isinstance(doc[0], dict) else doc
    out = []
    for row in rows:
        values = list(row[0].values())
        out.append({"label": next(v for v in values if isinstance(v, str)),
                    "score": next(v for v in values if isinstance(v, (int, float)))})
    return out


def _threads(r: dict) -> int:
    doc = json.loads(r["body"])
    return int(doc["threads"]) if isinstance(doc, dict) else int(r["headers"]["x-threads"])


