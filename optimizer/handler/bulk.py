"""Queue and bucket traffic: SQS batches and S3 notifications, many images per invocation.

For an offline pipeline the request charge dominates, so one invocation takes a batch,
and one bad image must not fail the other 99: each SQS record succeeds or fails alone,
and the failed ones go back in the partial batch response (`batchItemFailures`), so
Lambda retries only those. A record's body is a base64 image, an S3 reference
`{"bucket", "key"}`, or an S3 event notification (the usual S3 -> SQS wiring). S3
notifications may also invoke the function directly; their keys arrive URL-encoded.

boto3 is imported only here, on the first S3 item: Lambda's Python runtimes carry it, so
packages never do, and API traffic never pays for its import. Objects are fetched by
32 threads while earlier ones are classified, at most two chunks in memory, each object
under a size cap, with client timeouts so an unreachable bucket fails items, not the
invocation. With OPTIMIZER_OUTPUT_BUCKET set (the deployment's output location) each
input object's result is one JSON object written there (a PUT is atomic), named from the
input key; without it the results come back in the response. A directly invoked S3
notification has no partial response: an item S3 could not serve for a passing reason
(unreachable, throttled) fails the invocation, which Lambda then retries; a missing object
or a non-image is logged and dropped, since no retry would help it.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import sys
import urllib.parse
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from .pixels import NotAnImage, decode

# images classified together; the next chunk is fetched meanwhile, so at most two chunks
# of objects under the cap are in memory (S3 GETs wait on the network: many at once)
CHUNK = 32
FETCH_THREADS = 32
MAX_OBJECT_BYTES = int(os.environ.get("OPTIMIZER_MAX_OBJECT_BYTES", 20 << 20))
OUTPUT_BUCKET = "OPTIMIZER_OUTPUT_BUCKET"
OUTPUT_PREFIX = "OPTIMIZER_OUTPUT_PREFIX"

Infer = Callable[[list[np.ndarray]], list[list[dict]]]


class ItemFailed(Exception):
    """One item's failure: its reason goes to the log and its record to the retry list."""


@dataclass
class Item:
    record: str  # SQS messageId, or the S3 key for a direct notification
    name: str  # what the result is named after: the S3 key, or the message id
    bucket: str | None = None
    key: str | None = None
    data: bytes | None = None
    error: str | None = None
    transient: bool = False  # S3 unreachable or throttling: worth another try


def kind(event: Any) -> str | None:
    """'sqs' or 's3' for those events; None for every other shape (API, direct)."""
    records = event.get("Records") if isinstance(event, dict) else None
    if not isinstance(records, list) or not records or not isinstance(records[0], dict):
        return None
    return {"aws:sqs": "sqs", "aws:s3": "s3"}.get(records[0].get("eventSource"))


def _s3_refs(notification: dict, record: str) -> list[Item]:
    out = []
    for r in notification.get("Records") or []:
        s3 = r.get("s3") if isinstance(r, dict) else None
        if not isinstance(s3, dict):
            raise ItemFailed("an S3 notification record without its s3 section")
        key = urllib.parse.unquote_plus(str(s3.get("object", {}).get("key", "")))
        bucket = str(s3.get("bucket", {}).get("name", ""))
        if not bucket or not key:
            raise ItemFailed("an S3 notification record without a bucket name or key")
        out.append(Item(record, key, bucket, key))
    return out


def _from_body(body: Any, record: str) -> list[Item]:
    if not isinstance(body, str) or not body:
        raise ItemFailed("the message body is empty")
    if body.lstrip().startswith("{"):
        try:
            doc = json.loads(body)
        except ValueError as exc:
            raise ItemFailed(f"the message body is not valid JSON ({exc})") from None
        if isinstance(doc.get("Records"), list):
            return _s3_refs(doc, record)
        if doc.get("Event") == "s3:TestEvent":  # sent once when a bucket is wired up
            return []
        if "bucket" in doc and "key" in doc:
            return [Item(record, str(doc["key"]), str(doc["bucket"]), str(doc["key"]))]
        if isinstance(doc.get("image"), str):
            body = doc["image"]
        else:
            raise ItemFailed('expected {"bucket", "key"}, {"image": base64}, or an S3 '
                             "notification in the message body")
    try:
        return [Item(record, record, data=base64.b64decode(body, validate=True))]
    except (binascii.Error, ValueError):
        raise ItemFailed("the message body is neither JSON nor base64 image bytes") from None


def items(event: dict) -> list[Item]:
    """Every image the event names; a record that cannot be read is one failed item."""
    out: list[Item] = []
    for i, r in enumerate(event["Records"]):
        if not isinstance(r, dict):
            out.append(Item(f"record-{i}", f"record-{i}", error="a record is not an object"))
            continue
        if r.get("eventSource") == "aws:s3":
            try:
                [ref] = _s3_refs({"Records": [r]}, "")
                ref.record = str(ref.key)
                out.append(ref)
            except ItemFailed as exc:
                out.append(Item(f"record-{i}", f"record-{i}", error=str(exc)))
            continue
        record = str(r.get("messageId") or f"record-{i}")
        try:
            out += _from_body(r.get("body"), record)
        except ItemFailed as exc:
            out.append(Item(record, record, error=str(exc)))
    return out


_CLIENTS: dict[tuple[str, ...], Any] = {}


def _client():
    """S3 as the function's role sees it; AWS_ENDPOINT_URL(_S3) points elsewhere (tests).
    Made once per instance, as AWS advises: a new client costs tens of milliseconds."""
    where = tuple(os.environ.get(k, "") for k in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3",
                                                  "AWS_ACCESS_KEY_ID", "AWS_REGION"))
    if where not in _CLIENTS:
        import boto3
        from botocore.config import Config

        _CLIENTS[where] = boto3.client("s3", config=Config(
            connect_timeout=3, read_timeout=10, max_pool_connections=FETCH_THREADS,
            retries={"max_attempts": 2, "mode": "standard"}))
    return _CLIENTS[where]


def _fetch(s3, item: Item) -> Item:
    if item.data is not None or item.error is not None:
        return item
    try:
        obj = s3.get_object(Bucket=item.bucket, Key=item.key)
        size = int(obj.get("ContentLength") or 0)
        if size > MAX_OBJECT_BYTES:
            obj["Body"].close()
            raise ItemFailed(f"s3://{item.bucket}/{item.key} is {size:,} bytes, over the "
                             f"{MAX_OBJECT_BYTES:,}-byte cap (OPTIMIZER_MAX_OBJECT_BYTES)")
        item.data = obj["Body"].read(MAX_OBJECT_BYTES + 1)
        if len(item.data) > MAX_OBJECT_BYTES:
            raise ItemFailed(f"s3://{item.bucket}/{item.key} is over the "
                             f"{MAX_OBJECT_BYTES:,}-byte cap")
    except ItemFailed as exc:
        item.data, item.error = None, str(exc)
    except Exception as exc:  # botocore's errors: missing object, denied, unreachable
        item.error = f"s3://{item.bucket}/{item.key}: {_aws_reason(exc)}"
        item.transient = _code(exc) not in PERMANENT
    return item


PERMANENT = {"NoSuchKey", "NoSuchBucket", "AccessDenied", "InvalidObjectState", "404", "403"}


def _code(exc: Exception) -> str | None:
    return getattr(exc, "response", {}).get("Error", {}).get("Code")


def _aws_reason(exc: Exception) -> str:
    code = _code(exc)
    return f"{code} ({exc})" if code else f"{type(exc).__name__}: {exc}"


def _chunks(pool: ThreadPoolExecutor, s3_of: Callable[[], Any],
            todo: list[Item]) -> Iterator[list[Item]]:
    """Chunks with their objects fetched; the next chunk's GETs run meanwhile."""
    def submit(chunk: list[Item]) -> list[Future]:
        return [pool.submit(_fetch, s3_of() if it.key and it.data is None else None, it)
                for it in chunk]

    parts = [todo[i:i + CHUNK] for i in range(0, len(todo), CHUNK)]
    pending = submit(parts[0]) if parts else []
    for i in range(len(parts)):
        done = [f.result() for f in pending]
        pending = submit(parts[i + 1]) if i + 1 < len(parts) else []
        yield done


def _classify(chunk: list[Item], infer: Infer) -> list[tuple[Item, list[dict]]]:
    arrays, ok = [], []
    for item in chunk:
        if item.error is None:
            try:
                arrays.append(decode(item.data or b""))
                ok.append(item)
            except NotAnImage as exc:
                item.error = f"{item.name}: {exc}"
        item.data = None  # the bytes are not needed past here
    return list(zip(ok, infer(arrays), strict=True)) if arrays else []


def _result_key(prefix: str, item: Item) -> str:
    name = item.key if item.key is not None else f"sqs/{item.name}"
    return f"{prefix}{name}.json"


def _put(s3, bucket: str, prefix: str, item: Item, top: list[dict], model: dict) -> None:
    doc = {"input": {"bucket": item.bucket, "key": item.key} if item.key
           else {"message_id": item.record}, "top": top, "model": model}
    try:
        s3.put_object(Bucket=bucket, Key=_result_key(prefix, item),
                      Body=json.dumps(doc).encode(), ContentType="application/json")
    except Exception as exc:
        item.error = f"writing s3://{bucket}/{_result_key(prefix, item)}: {_aws_reason(exc)}"
        item.transient = True


def handle(event: dict, infer: Infer, model: dict) -> dict:
    """The partial batch response for SQS (results inline when no output bucket is set);
    for a direct S3 notification, the results and the failures."""
    todo = items(event)
    bucket, prefix = os.environ.get(OUTPUT_BUCKET), os.environ.get(OUTPUT_PREFIX, "")
    results = []
    with ThreadPoolExecutor(FETCH_THREADS) as pool:
        for chunk in _chunks(pool, _client, todo):
            answered = _classify(chunk, infer)
            if bucket:
                list(pool.map(lambda a: _put(_client(), bucket, prefix, a[0], a[1], model),
                              answered))
            results += [{"record": it.record, "key": it.key, "top": top}
                        for it, top in answered if it.error is None]
    failed = [it for it in todo if it.error is not None]
    for it in failed:
        print(json.dumps({"level": "error", "record": it.record, "item": it.name,
                          "reason": it.error}), file=sys.stderr, flush=True)
    records = list(dict.fromkeys(it.record for it in failed))
    out: dict[str, Any] = {"batchItemFailures": [{"itemIdentifier": r} for r in records]}
    if not bucket:
        out["results"] = results
    if kind(event) == "s3":
        if any(it.transient for it in failed):  # an async invocation is retried on error
            raise RuntimeError(f"{sum(it.transient for it in failed)} of {len(todo)} objects "
                               "could not be read or written; Lambda retries the event")
        out = {"results": results, "failures": [{"key": it.key, "reason": it.error}
                                                for it in failed]}
    return out
