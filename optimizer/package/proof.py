"""What a package is proved with: test images the shipped model gets right, one per class,
the requests made of them, and the check of the handler's answers against the build's.

A proof on one image cannot tell a correct function from one whose class names are
shifted; one image per class can.
"""

from __future__ import annotations

import base64
import io
import json
from dataclasses import dataclass

import numpy as np
from PIL import Image

from optimizer.artifact import Artifact
from optimizer.data.dataset import Dataset, prepared
from optimizer.errors import PackageFailed
from optimizer.handler.engines import top_k
from optimizer.inference.predict import predict
from optimizer.model import ModelRef
from optimizer.preprocess_spec import apply

SAMPLE_EVENT = "sample-event.json"  # test images the build got right, one per class
SAMPLE_EVENT_IMAGES = 8  # classes in sample-event.json (at most package.max_images)
EMULATED_SAMPLES = 10  # classes proved under qemu, 15-90x slower than native
# the handler rounds scores to 6 places; threads and CPU may move the last digits
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


def pick_samples(art: Artifact, dataset: Dataset, reference: list[int],
                 engine: str | None = None) -> list[Sample]:
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
    images = [dataset.images[i] for i in chosen]
    scores = predict(art.model, apply(images, art.model.preprocess), engine)
    # in the handler's terms: its labels, and softmax applied to logits
    logits = output_kind(art.model, dataset) == "logits"
    tops = top_k(scores, art.model.classes, 1, logits)
    return [Sample(_png(img), top[0]["label"], i, top[0]["score"])
            for img, i, top in zip(images, chosen, tops, strict=True)]


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
                where: str) -> dict:
    """The handler's answers to proof_events: every class named as the build names it,
    with the build's score, and a 4xx for the bad request."""
    def body(r: dict) -> dict:
        return json.loads(r["body"])

    first, bad, *batches = responses
    answers = [(first, 0)]
    for r, chunk in zip(batches, _chunks(samples, max(2, max_images)), strict=True):
        answers += [(r, k) for k in range(len(chunk))]
    got = []
    for (r, k), sample in zip(answers, [samples[0], *samples], strict=True):
        if r.get("statusCode") != 200:
            raise PackageFailed(f"{where}: a request with test images got "
                                f"{r.get('statusCode')}: {str(r.get('body'))[:300]}")
        top = body(r)["predictions"][k]["top"][0]
        if top["label"] != sample.label:
            raise PackageFailed(f"{where}: the handler said '{top['label']}' for a test image "
                                f"the build classified as '{sample.label}'")
        if abs(top["score"] - sample.score) > SCORE_TOLERANCE:
            raise PackageFailed(f"{where}: the handler scored a '{sample.label}' test image "
                                f"{top['score']:.6f}, the build {sample.score:.6f}; "
                                "preprocessing or runtime differs")
        got.append(top)
    if not 400 <= bad.get("statusCode", 0) < 500 or "error" not in body(bad):
        raise PackageFailed(f"{where}: a request that is not an image got {bad}")
    return {"label": got[0]["label"], "score": got[0]["score"], "expected": samples[0].label,
            "build_score": round(samples[0].score, 6),
            "classes_checked": len(samples), "labels_checked": [s.label for s in samples],
            "bad_request_status": bad["statusCode"], "threads": body(first)["threads"]}


