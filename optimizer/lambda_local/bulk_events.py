"""SQS and S3 events as AWS delivers them, made from local files or object names, so a
package's queue and bucket paths can be invoked and tuned here."""

from __future__ import annotations

import base64
import hashlib
import json
import urllib.parse
from pathlib import Path

from optimizer.errors import BadInput

QUEUE_ARN = "arn:aws:sqs:us-east-1:123456789012:optimizer-local"


def image_files(paths: list[Path]) -> list[Path]:
    """The files named, and the files in the folders named, in order."""
    out: list[Path] = []
    for p in paths:
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file())
        elif p.is_file():
            out.append(p)
        else:
            raise BadInput(f"{p}: no such file or folder")
    if not out:
        raise BadInput(f"no files in {', '.join(map(str, paths))}")
    return out


def sqs_record(body: str, n: int) -> dict:
    digest = hashlib.md5(body.encode(), usedforsecurity=False).hexdigest()
    return {
        "messageId": f"{n:08d}-0000-4000-8000-{digest[:12]}", "receiptHandle": f"rh-{n}",
        "body": body, "attributes": {"ApproximateReceiveCount": "1"},
        "messageAttributes": {}, "md5OfBody": digest, "eventSource": "aws:sqs",
        "eventSourceARN": QUEUE_ARN, "awsRegion": "us-east-1"}


def sqs_event(bodies: list[str]) -> dict:
    return {"Records": [sqs_record(b, i) for i, b in enumerate(bodies)]}


def sqs_of_files(paths: list[Path]) -> dict:
    """One message a file, its bytes base64 in the body."""
    return sqs_event([base64.b64encode(f.read_bytes()).decode() for f in image_files(paths)])


def s3_record(bucket: str, key: str, size: int = 0) -> dict:
    """An ObjectCreated notification record; the key URL-encoded as S3 sends it."""
    return {
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1",
        "eventName": "ObjectCreated:Put",
        "s3": {"s3SchemaVersion": "1.0", "bucket": {"name": bucket,
                                                     "arn": f"arn:aws:s3:::{bucket}"},
               "object": {"key": urllib.parse.quote_plus(key, safe="/"), "size": size}}}


def s3_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://") or "/" not in uri[5:]:
        raise BadInput(f"{uri}: expected s3://BUCKET/KEY")
    bucket, key = uri[5:].split("/", 1)
    if not bucket or not key:
        raise BadInput(f"{uri}: expected s3://BUCKET/KEY")
    return bucket, key


def s3_event(uris: list[str]) -> dict:
    return {"Records": [s3_record(*s3_uri(u)) for u in uris]}


def s3_via_sqs(uris: list[str]) -> dict:
    """S3 notifications delivered through a queue: each message body one notification."""
    return sqs_event([json.dumps({"Records": [s3_record(*s3_uri(u))]}) for u in uris])
