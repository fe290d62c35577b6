"""Turning a Lambda event into image bytes, and failures into HTTP-style JSON errors.

Accepted: an API Gateway (REST or HTTP API) or Function URL event whose body is the raw
image (base64, as API Gateway delivers binary bodies) or JSON; and a direct invocation
whose event is that JSON. JSON means {"image": "<base64>"}, {"images": [...]}, or a list
of base64 strings or {"image": ...} objects.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any


class BadRequest(Exception):
    """A client error: becomes a 4xx JSON response, never a stack trace."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def is_http(event: Any) -> bool:
    return isinstance(event, dict) and (
        "body" in event or "requestContext" in event or "httpMethod" in event
        or "rawPath" in event
    )


def _b64(text: Any, where: str) -> bytes:
    if not isinstance(text, str) or not text:
        raise BadRequest(400, "bad_image_field", f"{where} must be a non-empty base64 string")
    if text.startswith("data:") and "," in text:  # data URLs from browsers
        text = text.split(",", 1)[1]
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(400, "bad_base64", f"{where} is not valid base64") from None


def _from_json(doc: Any) -> list[bytes]:
    if isinstance(doc, dict):
        if "image" in doc:
            return [_b64(doc["image"], "image")]
        if "images" in doc:
            doc = doc["images"]
            if not isinstance(doc, list):
                raise BadRequest(400, "bad_images_field", "images must be a list")
        else:
            raise BadRequest(400, "missing_image",
                             'expected {"image": "<base64>"} or {"images": [...]}')
    if isinstance(doc, list):
        out = []
        for i, item in enumerate(doc):
            value = item.get("image") if isinstance(item, dict) else item
            out.append(_b64(value, f"images[{i}]"))
        return out
    raise BadRequest(400, "bad_json_shape",
                     f'expected a JSON object or list, got {type(doc).__name__}')


def _header(event: dict, name: str) -> str:
    headers = event.get("headers") or {}
    if not isinstance(headers, dict):
        raise BadRequest(400, "bad_headers", "headers must be a JSON object")
    for key, value in headers.items():
        if key.lower() == name:
            return str(value)
    return ""


def images_from_event(event: Any, max_bytes: int, max_images: int) -> list[bytes]:
    """The encoded images a request carries, checked for size and count."""
    if is_http(event):
        body = event.get("body")
        if body is None or body == "":
            raise BadRequest(400, "empty_body", "the request has no body")
        if not isinstance(body, str):
            raise BadRequest(400, "bad_body", "body must be a string")
        if len(body) > max_bytes * 4 // 3 + 4:
            raise BadRequest(413, "payload_too_large",
                             f"body is {len(body):,} bytes; the limit is {max_bytes:,}")
        raw = _b64(body, "body") if event.get("isBase64Encoded") else body.encode()
        if len(raw) > max_bytes:
            raise BadRequest(413, "payload_too_large",
                             f"body is {len(raw):,} bytes; the limit is {max_bytes:,}")
        ctype = _header(event, "content-type").split(";")[0].strip().lower()
        if ctype.startswith("image/") or ctype == "application/octet-stream":
            images = [raw]
        else:
            stripped = raw.lstrip()
            if stripped[:1] not in (b"{", b"["):
                if event.get("isBase64Encoded"):
                    images = [raw]  # a binary body without a content type
                else:
                    raise BadRequest(400, "bad_json", "body is neither JSON nor an image")
            else:
                try:
                    images = _from_json(json.loads(raw))
                except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                    raise BadRequest(400, "bad_json", f"body is not valid JSON: {exc}") from None
    else:
        try:
            size = len(json.dumps(event))
        except (TypeError, ValueError):
            raise BadRequest(400, "bad_event", "the event is not JSON") from None
        if size > max_bytes:
            raise BadRequest(413, "payload_too_large",
                             f"event is {size:,} bytes; the limit is {max_bytes:,}")
        images = _from_json(event)
    if not images:
        raise BadRequest(400, "no_images", "the request holds no images")
    if len(images) > max_images:
        raise BadRequest(413, "too_many_images",
                         f"{len(images)} images in one request; at most {max_images}")
    return images


def response(status: int, doc: Any, headers: dict[str, str] | None = None) -> dict:
    """Proxy-integration shape, understood by API Gateway, Function URLs and direct callers."""
    return {
        "statusCode": status,
        "headers": {"content-type": "application/json", **(headers or {})},
        "isBase64Encoded": False,
        "body": json.dumps(doc, separators=(",", ":")),
    }


def shaped(predictions: list[list[dict]], answer: dict[str, Any]) -> list:
    """The old endpoint's answer: its handler's top-k list of {label, score} objects with
    its key names, one list per image (a request of one image gets the list itself, as one
    MMS request did)."""
    ours = {answer["label"]: "label", answer["score"]: "score"}
    rows = [[{k: p[ours[k]] for k in answer["keys"] if k in ours} for p in top[:answer["k"]]]
            for top in predictions]
    return rows[0] if len(rows) == 1 else rows


def error(status: int, code: str, message: str, request_id: str | None = None) -> dict:
    doc: dict[str, Any] = {"error": {"code": code, "message": message}}
    if request_id:
        doc["error"]["request_id"] = request_id
    return response(status, doc)
