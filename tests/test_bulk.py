"""Queue and bucket traffic against a real S3 API server (moto's, on loopback): SQS batches
with partial failures, S3 notifications with URL-encoded keys, an object over the cap, an
unreachable endpoint, results written to the output bucket; and the packaged zip under
the local Lambda, with boto3 from beside the runtime as Lambda's managed runtimes have it."""

from __future__ import annotations

import base64
import importlib
import io
import json
import socket
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from optimizer.lambda_local import bulk_events
from optimizer.model import ModelRef
from optimizer.package.function import assemble
from optimizer.preprocess_spec import Preprocess
from tests.test_handler import LABELS, _onnx_model

IN, OUT = "images-in", "results-out"
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_DEFAULT_REGION": "us-east-1"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3_server():
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def s3(s3_server, monkeypatch):
    import boto3

    for key, value in {**CREDENTIALS, "AWS_ENDPOINT_URL": s3_server}.items():
        monkeypatch.setenv(key, value)
    client = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    for bucket in ("images-in", "results-out"):
        client.create_bucket(Bucket=bucket)
        for obj in client.list_objects_v2(Bucket=bucket).get("Contents", []):
            client.delete_object(Bucket=bucket, Key=obj["Key"])
    return client


@pytest.fixture(scope="module")
def fn(tmp_path_factory):
    """The handler in this process, on the four-quadrant model (test_handler's)."""
    folder = tmp_path_factory.mktemp("bulkfn")
    _onnx_model(folder / "m.onnx")
    ref = ModelRef("onnx", folder / "m.onnx", Preprocess(size=(8, 8), channels=1,
                                                         scale=1 / 255), LABELS)
    assemble(folder / "function", ref, "quadrants", 1769, top_k=2, max_images=3,
             output="probabilities")
    mp = pytest.MonkeyPatch()
    mp.setenv("OPTIMIZER_MODEL_DIR", str(folder / "function" / "model"))
    import optimizer.handler.app as module

    yield importlib.reload(module)
    mp.undo()


def _png(quadrant: int) -> bytes:
    img = np.zeros((32, 32), np.uint8)
    r, c = divmod(quadrant, 2)
    img[r * 16:(r + 1) * 16, c * 16:(c + 1) * 16] = 255
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    return buf.getvalue()


def _ref(key: str, bucket: str = "images-in") -> str:
    return json.dumps({"bucket": bucket, "key": key})


def _results(client, prefix: str = "") -> dict[str, dict]:
    objs = client.list_objects_v2(Bucket=OUT, Prefix=prefix).get("Contents", [])
    return {o["Key"]: json.loads(client.get_object(Bucket=OUT, Key=o["Key"])["Body"].read())
            for o in objs}


def test_an_sqs_batch_fails_exactly_its_bad_items(fn, s3, monkeypatch, capsys):
    monkeypatch.setattr(fn.bulk, "MAX_OBJECT_BYTES", 4000)
    monkeypatch.setenv("OPTIMIZER_OUTPUT_BUCKET", "results-out")
    monkeypatch.setenv("OPTIMIZER_OUTPUT_PREFIX", "results/")
    s3.put_object(Bucket="images-in", Key="ok/2.png", Body=_png(2))
    s3.put_object(Bucket="images-in", Key="photos/my cat:1+1.png", Body=_png(3))
    s3.put_object(Bucket="images-in", Key="bad/text.png", Body=b"hello, not an image")
    s3.put_object(Bucket="images-in", Key="bad/cut.png", Body=_png(1)[:40])
    s3.put_object(Bucket="images-in", Key="big.png", Body=b"\0" * 5000)
    notification = json.dumps({"Records": [bulk_events.s3_record("images-in",
                                                                 "photos/my cat:1+1.png")]})
    bodies = [base64.b64encode(_png(1)).decode(), _ref("ok/2.png"), notification,
              _ref("missing.png"), _ref("bad/text.png"), _ref("bad/cut.png"), _ref("big.png"),
              "{not json", "%%% not base64"]
    event = bulk_events.sqs_event(bodies)
    ids = [r["messageId"] for r in event["Records"]]
    out = fn.lambda_handler(event, None)
    assert [f["itemIdentifier"] for f in out["batchItemFailures"]] == ids[3:]
    assert "results" not in out  # they went to the output bucket
    written = _results(s3)
    assert sorted(written) == sorted(["results/ok/2.png.json",
                                      "results/photos/my cat:1+1.png.json",
                                      f"results/sqs/{ids[0]}.json"])
    assert written["results/ok/2.png.json"]["top"][0]["label"] == LABELS[2]
    assert written["results/photos/my cat:1+1.png.json"]["top"][0]["label"] == LABELS[3]
    assert written[f"results/sqs/{ids[0]}.json"]["top"][0]["label"] == LABELS[1]
    assert written["results/ok/2.png.json"]["input"] == {"bucket": IN, "key": "ok/2.png"}
    reasons = {json.loads(line)["record"]: json.loads(line)["reason"]
               for line in capsys.readouterr().err.splitlines() if line.startswith("{")}
    assert "NoSuchKey" in reasons[ids[3]]
    assert "not a decodable image" in reasons[ids[4]]
    assert "not a decodable image" in reasons[ids[5]]
    assert "over the 4,000-byte cap" in reasons[ids[6]]
    assert "not valid JSON" in reasons[ids[7]]
    assert "neither JSON nor base64" in reasons[ids[8]]


def test_without_an_output_bucket_results_come_back(fn, s3, monkeypatch):
    monkeypatch.delenv("OPTIMIZER_OUTPUT_BUCKET", raising=False)
    s3.put_object(Bucket="images-in", Key="a b/0.png", Body=_png(0))
    event = bulk_events.s3_via_sqs(["s3://images-in/a b/0.png"])
    out = fn.lambda_handler(event, None)
    assert out["batchItemFailures"] == []
    [result] = out["results"]
    assert result["key"] == "a b/0.png" and result["top"][0]["label"] == LABELS[0]
    assert _results(s3) == {}


def test_a_direct_s3_notification_decodes_its_keys(fn, s3, monkeypatch):
    monkeypatch.delenv("OPTIMIZER_OUTPUT_BUCKET", raising=False)
    s3.put_object(Bucket="images-in", Key="dir/été 1+1.png", Body=_png(3))
    event = bulk_events.s3_event(["s3://images-in/dir/été 1+1.png", "s3://images-in/gone.png"])
    assert event["Records"][0]["s3"]["object"]["key"] == "dir/%C3%A9t%C3%A9+1%2B1.png"
    out = fn.lambda_handler(event, None)
    assert [(r["key"], r["top"][0]["label"]) for r in out["results"]] == [
        ("dir/été 1+1.png", LABELS[3])]
    # a missing object would fail every retry: it is logged and dropped, not retried
    assert out["failures"][0]["key"] == "gone.png" and "NoSuchKey" in out["failures"][0][
        "reason"]


def test_an_unreachable_endpoint_fails_each_item_and_does_not_hang(fn, monkeypatch, capsys):
    for key, value in {**CREDENTIALS,
                       "AWS_ENDPOINT_URL": f"http://127.0.0.1:{_free_port()}"}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("OPTIMIZER_OUTPUT_BUCKET", raising=False)
    event = bulk_events.sqs_event([_ref("x.png"), base64.b64encode(_png(2)).decode()])
    t0 = time.perf_counter()
    out = fn.lambda_handler(event, None)
    assert time.perf_counter() - t0 < 120  # the client's timeouts, not a hang
    assert [f["itemIdentifier"] for f in out["batchItemFailures"]] == [
        event["Records"][0]["messageId"]]
    assert out["results"][0]["top"][0]["label"] == LABELS[2]  # the inline image still ran
    assert "Could not connect" in capsys.readouterr().err
    # a direct notification has no partial response: the invocation fails, Lambda retries
    with pytest.raises(RuntimeError, match="Lambda retries the event"):
        fn.lambda_handler(bulk_events.s3_event(["s3://images-in/x.png"]), None)


def test_the_packaged_zip_reads_and_writes_s3_under_the_local_lambda(zip_build, s3, s3_server,
                                                                      tmp_path):
    """boto3 is not in the package: the local Lambda puts it beside the runtime client."""
    import zipfile

    from optimizer import targets
    from optimizer.lambda_local.deployable import open_deployable
    from optimizer.lambda_local.session import Session

    out = zip_build[0] / "out"
    for z in (out / "package").glob("*.zip"):
        assert not any(n.split("/")[0] in ("boto3", "botocore") or "/boto3/" in n
                       for n in zipfile.ZipFile(z).namelist()), z
    sample = json.loads((out / "package" / "sample-event.json").read_text())
    images = [base64.b64decode(b) for b in json.loads(sample["body"])["images"]] \
        if "images" in sample.get("body", "") else [base64.b64decode(sample["body"])]
    for i, data in enumerate(images):
        s3.put_object(Bucket="images-in", Key=f"batch/{i}.png", Body=data)
    environment = {**CREDENTIALS, "AWS_ENDPOINT_URL": s3_server,
                   "OPTIMIZER_OUTPUT_BUCKET": "results-out", "OPTIMIZER_OUTPUT_PREFIX": "r/"}
    dep = open_deployable(str(out), tmp_path, environment=environment)
    session = Session(dep.make(1769, targets.vcpus(1769), 60), 1769, 60)
    try:
        api = session.invoke({"images": [base64.b64encode(d).decode() for d in images]})
        event = bulk_events.s3_via_sqs([f"s3://images-in/batch/{i}.png" for i in range(len(images))]
                                       + ["s3://images-in/batch/missing.png"])
        bulk = session.invoke(event)
    finally:
        session.close()
    assert api.status == "ok" and bulk.status == "ok", (api.error, bulk.error)
    assert bulk.response["batchItemFailures"] == [
        {"itemIdentifier": event["Records"][-1]["messageId"]}]
    want = [p["top"][0]["label"] for p in json.loads(api.response["body"])["predictions"]]
    written = _results(s3, "r/")
    assert [written[f"r/batch/{i}.png.json"]["top"][0]["label"]
            for i in range(len(images))] == want
    assert Path(out / "package" / "function.zip").is_file()


def test_tune_sweeps_batch_sizes_and_recommends_memory_and_batch(zip_build, tmp_path):
    from typer.testing import CliRunner

    from optimizer.cli import app

    out = zip_build[0] / "out"
    result = CliRunner().invoke(app, ["tune", str(out), "--memory", "1024,1769", "--batch",
                                      "1,8", "--invocations", "2", "--out",
                                      str(tmp_path / "t"), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    rows = {(r["memory_mb"], r["batch"]): r for r in doc["batch_rows"]}
    assert sorted(rows) == [(1024, 1), (1024, 8), (1769, 1), (1769, 8)]
    for (mb, n), r in rows.items():
        assert not r["errors"] and r["invocations"] == 3
        assert r["per_image_p50_ms"] == pytest.approx(r["p50_ms"] / n, abs=1e-3)
        # the request charge, the compute and the cold starts' share, per image
        from optimizer import targets

        per_invocation = targets.cost_per_million(
            r["mean_ms"], mb, "x86_64", (r["init_ms"] or 0) + r["cold_duration_ms"],
            r["cold_starts_per_1000"])
        assert r["cost_per_million_images_usd"] == pytest.approx(per_invocation / n,
                                                                  abs=1e-4)
    rec = doc["recommended"]
    assert (rec["memory_mb"], rec["batch"]) == (doc["recommended_memory_mb"],
                                                doc["recommended_batch"])
    best = rows[(rec["memory_mb"], rec["batch"])]
    assert rec["cost_vs_batch_1"] == pytest.approx(
        best["cost_per_million_images_usd"]
        / rows[(rec["memory_mb"], 1)]["cost_per_million_images_usd"], abs=1e-3)
    assert [r["batch"] for r in doc["rows"]] == [1, 1]  # the memory sweep at batch 1
    page = (tmp_path / "t" / "tune.html").read_text()
    assert "Images per invocation" in page and page.count("<svg") == 2
