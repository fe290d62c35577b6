"""The shipped handler: request shapes, preprocessing, and 4xx answers to bad requests."""

from __future__ import annotations

import base64
import importlib
import io
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from optimizer.handler import events
from optimizer.handler.pixels import to_batch
from optimizer.model import ModelRef
from optimizer.package.function import assemble
from optimizer.preprocess_spec import Preprocess

LABELS = [f"class-{i}" for i in range(4)]


def _onnx_model(path):
    """Scores each class by the mean of one 4x4 quadrant of the 8x8 grey image."""
    from onnx import TensorProto, helper, numpy_helper, save

    w = np.zeros((64, 4), np.float32)
    for q, (r, c) in enumerate(((0, 0), (0, 4), (4, 0), (4, 4))):
        for i in range(4):
            for j in range(4):
                w[(r + i) * 8 + (c + j), q] = 1 / 16
    graph = helper.make_graph(
        [helper.make_node("Reshape", ["x", "shape"], ["flat"]),
         helper.make_node("MatMul", ["flat", "w"], ["logits"]),
         helper.make_node("Softmax", ["logits"], ["probs"], axis=1)],
        "quadrants",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 8, 8, 1])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, [None, 4])],
        [numpy_helper.from_array(np.array([-1, 64], np.int64), "shape"),
         numpy_helper.from_array(w * 20, "w")])
    save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fn")
    _onnx_model(folder / "m.onnx")
    ref = ModelRef("onnx", folder / "m.onnx", Preprocess(size=(8, 8), channels=1, scale=1 / 255),
                   LABELS)
    assemble(folder / "function", ref, "quadrants", 1769, top_k=2, max_images=3,
             output="probabilities")
    mp = pytest.MonkeyPatch()
    mp.setenv("OPTIMIZER_MODEL_DIR", str(folder / "function" / "model"))
    import optimizer.handler.app as module

    module = importlib.reload(module)
    yield module
    mp.undo()


def _png(quadrant: int, size: int = 32, mode: str = "L") -> bytes:
    img = np.zeros((size, size), np.uint8)
    h = size // 2
    r, c = divmod(quadrant, 2)
    img[r * h:(r + 1) * h, c * h:(c + 1) * h] = 255
    buf = io.BytesIO()
    Image.fromarray(img).convert(mode).save(buf, format="PNG")
    return buf.getvalue()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _call(app, event):
    resp = app.lambda_handler(event, type("Ctx", (), {"aws_request_id": "req-1"})())
    assert resp["headers"]["content-type"] == "application/json"
    return resp["statusCode"], json.loads(resp["body"])


def test_init_is_timed_by_part_and_warms_the_model_up(app, monkeypatch):
    parts = app.INIT_BREAKDOWN
    steps = ("numpy_ms", "image_library_ms", "runtime_import_ms", "model_load_ms", "warmup_ms")
    assert all(parts[k] >= 0 for k in steps) and parts["warmup_ms"] > 0
    assert sum(parts[k] for k in steps) <= parts["handler_ms"] + 0.1
    assert parts["runtime_start_ms"] is None or parts["runtime_start_ms"] >= 0
    # the warm-up went through the request path: decoders and the session are ready
    calls = []
    monkeypatch.setattr(app, "RUN", lambda x: calls.append(x.shape) or np.full((1, 4), 0.25))
    app._warm_up()
    assert calls == [(1, 8, 8, 1)]


def test_snap_start_hooks_warm_reseed_and_follow_the_memory_size(app, monkeypatch, capsys):
    import json as _json

    def label() -> tuple[str, int]:
        _, body = _call(app, {"image": _b64(_png(3))})
        return body["predictions"][0]["top"][0]["label"], body["threads"]

    app.before_snapshot()
    assert "OPTIMIZER_SNAPSHOT " in capsys.readouterr().out
    np.random.seed(0)
    state = np.random.get_state()[1].copy()
    app.after_restore()  # same environment: reseeded, nothing reloaded
    restore = _json.loads(capsys.readouterr().out.split("OPTIMIZER_RESTORE ")[1])
    assert restore["reloaded"] is False and restore["threads"] == 1
    assert not np.array_equal(np.random.get_state()[1], state)
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "3008")  # two vCPUs
    app.after_restore()
    assert _json.loads(capsys.readouterr().out.split("OPTIMIZER_RESTORE ")[1])["reloaded"]
    assert label() == ("class-3", 2)
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "1769")
    app.after_restore()
    assert label() == ("class-3", 1)


def test_function_url_binary_body(app):
    status, body = _call(app, {"rawPath": "/", "isBase64Encoded": True,
                               "headers": {"Content-Type": "image/png"},
                               "body": _b64(_png(2))})
    assert status == 200
    top = body["predictions"][0]["top"]
    assert top[0]["label"] == "class-2" and len(top) == 2
    assert top[0]["score"] > top[1]["score"]
    assert body["threads"] == 1


def test_json_bodies_and_direct_invocation(app):
    status, body = _call(app, {"httpMethod": "POST", "isBase64Encoded": False,
                               "body": json.dumps({"image": _b64(_png(1, mode="RGB"))})})
    assert status == 200 and body["predictions"][0]["top"][0]["label"] == "class-1"
    status, body = _call(app, {"images": [_b64(_png(3)), _b64(_png(0))]})
    assert status == 200
    assert [p["top"][0]["label"] for p in body["predictions"]] == ["class-3", "class-0"]
    status, body = _call(app, [{"image": "data:image/png;base64," + _b64(_png(1))}])
    assert status == 200 and body["predictions"][0]["top"][0]["label"] == "class-1"


@pytest.mark.parametrize(("event", "status", "code"), [
    ({"body": "", "rawPath": "/"}, 400, "empty_body"),
    ({"body": "{not json", "rawPath": "/"}, 400, "bad_json"),
    ({"body": "hello", "rawPath": "/"}, 400, "bad_json"),
    ({"headers": True, "body": "0"}, 400, "bad_headers"),  # found by the fuzz test below
    ({"headers": ["a"], "body": "{}", "rawPath": "/"}, 400, "bad_headers"),
    ({"image": "***"}, 400, "bad_base64"),
    ({"image": ""}, 400, "bad_image_field"),
    ({"picture": "abc"}, 400, "missing_image"),
    ({"images": "abc"}, 400, "bad_images_field"),
    (42, 400, "bad_json_shape"),
    ({"images": []}, 400, "no_images"),
    ({"image": _b64(b"GIF89a not really")}, 415, "not_an_image"),
    ({"images": [_b64(_png(0))] * 4}, 413, "too_many_images"),
    ({"image": "A" * (7 * 1024 * 1024)}, 413, "payload_too_large"),
    ({"body": "A" * (9 * 1024 * 1024), "isBase64Encoded": True, "rawPath": "/"}, 413,
     "payload_too_large"),
])
def test_bad_requests_get_json_4xx(app, event, status, code):
    got, body = _call(app, event)
    assert got == status, body
    assert body["error"]["code"] == code and body["error"]["request_id"] == "req-1"
    assert "Traceback" not in json.dumps(body)


def test_decompression_bomb_is_refused(app):
    buf = io.BytesIO()
    Image.new("L", (8000, 8000)).save(buf, format="PNG")  # 64 Mpx in a few KB
    status, body = _call(app, {"image": _b64(buf.getvalue())})
    assert status == 415 and "pixels" in body["error"]["message"]


def test_internal_failure_is_500_without_trace(app, monkeypatch, capsys):
    def boom(x):
        raise RuntimeError("secret detail")

    monkeypatch.setattr(app, "RUN", boom)
    status, body = _call(app, {"image": _b64(_png(0))})
    assert status == 500 and "secret" not in json.dumps(body)
    assert "secret detail" in capsys.readouterr().err  # the log keeps it


@settings(max_examples=150, deadline=None)
@given(st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["body", "image", "images", "isBase64Encoded", "headers", "rawPath"]),
        inner, max_size=4),
    max_leaves=12))
def test_any_event_gets_an_answer(app, event):
    status, body = _call(app, event)
    assert status == 200 or (400 <= status < 500 and "error" in body)


def test_threads_follow_memory(app, monkeypatch):
    from optimizer import targets
    from optimizer.handler.engines import threads_for_memory

    for mb in (128, 1769, 1770, 3008, 3009, 10240):
        assert threads_for_memory(mb, targets.VCPU_STEPS, targets.MB_PER_VCPU) == \
            targets.threads_for(mb)
    assert targets.threads_for(3009) == 3


def test_handler_preprocessing_is_the_build_preprocessing():
    from optimizer.preprocess_spec import apply

    spec = Preprocess(size=(5, 7), channels=3, scale=1 / 127.5, mean=[1.0], layout="NCHW")
    img = np.random.default_rng(0).integers(0, 255, (9, 11), dtype=np.uint8)
    assert np.array_equal(apply([img], spec), to_batch([img], spec.model_dump(mode="json")))


def test_is_http_recognises_gateway_shapes():
    assert events.is_http({"httpMethod": "POST"}) and events.is_http({"rawPath": "/"})
    assert not events.is_http({"image": "x"}) and not events.is_http([1])
