"""1,200 generated events against a packaged zip, through the local Lambda Runtime API.

Every response must be a 2xx, or a 4xx with a JSON error; the one instance must serve them
all (no crash, no restart, no unhandled exception); and its resident memory must settle
instead of growing with the number of requests.
"""

from __future__ import annotations

import base64
import io
import json
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from optimizer import targets
from optimizer.lambda_local.deployable import open_deployable
from optimizer.lambda_local.session import Session

EVENTS = 1200
MEMORY_MB = 1024


def _png(rng: random.Random, size: int, mode: str = "RGB") -> bytes:
    arr = np.random.default_rng(rng.randrange(2**32)).integers(
        0, 256, (size, size, 3 if mode == "RGB" else 1), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr.squeeze()).convert(mode).save(
        buf, format=rng.choice(["PNG", "JPEG", "BMP", "GIF"]))
    return buf.getvalue()


def _bomb_png() -> bytes:
    """64 Mpx of zeros in a few KB: the handler must refuse it before decoding."""
    buf = io.BytesIO()
    Image.new("L", (8000, 8000)).save(buf, format="PNG")
    return buf.getvalue()


def _junk(rng: random.Random, depth: int = 0):
    pick = rng.randrange(9 if depth < 3 else 6)
    if pick == 0:
        return None
    if pick == 1:
        return rng.choice([True, False])
    if pick == 2:
        return rng.randint(-2**63, 2**63)
    if pick == 3:
        return rng.random() * 10 ** rng.randint(-5, 300)
    if pick == 4:
        return "".join(chr(rng.randrange(0x20, 0x2FFF)) for _ in range(rng.randrange(40)))
    if pick == 5:
        return base64.b64encode(rng.randbytes(rng.randrange(200))).decode()
    if pick == 6:
        return [_junk(rng, depth + 1) for _ in range(rng.randrange(5))]
    keys = ["image", "images", "body", "isBase64Encoded", "headers", "requestContext",
            "httpMethod", "x"]
    return {rng.choice(keys): _junk(rng, depth + 1) for _ in range(rng.randrange(5))}


def event(rng: random.Random, bomb: bytes) -> object:
    """One request from a mix of well-formed, malformed and hostile shapes."""
    kind = rng.randrange(12)
    b64 = base64.b64encode
    if kind == 0:
        return {"image": b64(_png(rng, rng.choice([8, 16, 40]))).decode()}
    if kind == 1:
        return {"images": [b64(_png(rng, 16)).decode() for _ in range(rng.randrange(0, 5))]}
    if kind == 2:  # API Gateway / Function URL, binary body
        return {"requestContext": {"http": {"method": "POST"}}, "isBase64Encoded": True,
                "headers": {"content-type": rng.choice(["image/png", "application/json",
                                                        "text/plain", ""])},
                "body": b64(_png(rng, 16)).decode()}
    if kind == 3:  # a truncated or bit-flipped image
        data = bytearray(_png(rng, 16))
        for _ in range(rng.randrange(1, 8)):
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        return {"image": b64(bytes(data[: rng.randrange(1, len(data) + 1)])).decode()}
    if kind == 4:
        return {"image": bomb and b64(bomb).decode()}
    if kind == 5:  # not base64 at all
        return {"image": "".join(rng.choice("!@#$%^&*()ab=") for _ in range(rng.randrange(50)))}
    if kind == 6:
        return {"requestContext": {}, "body": _junk(rng), "isBase64Encoded": _junk(rng)}
    if kind == 7:  # a JSON body inside an HTTP event
        return {"requestContext": {"http": {}}, "isBase64Encoded": False,
                "headers": {"Content-Type": "application/json"},
                "body": json.dumps({"images": [_junk(rng) for _ in range(3)]})}
    if kind == 8:  # over the 6 MB payload limit
        return {"image": "A" * (targets.LIMITS.payload_bytes + rng.randrange(1, 1000))}
    if kind == 9:
        return {"images": [b64(_png(rng, 8)).decode()] * rng.choice([17, 50, 200])}
    return _junk(rng)


def _rss_mb(session: Session) -> float:
    status = Path(f"/proc/{session.instance.proc.pid}/status").read_text()
    return int(next(ln for ln in status.splitlines() if ln.startswith("VmRSS:")).split()[1]) / 1024


@pytest.fixture(scope="module")
def package(zip_build) -> Path:
    """The suite's one built zip (conftest.zip_build): the tiny model's fp32 ONNX export
    with its dependency layer."""
    return zip_build[0] / "out" / "package"


def test_fuzzed_events_get_2xx_or_4xx_json_and_never_kill_the_instance(package, tmp_path):
    dep = open_deployable(str(package), tmp_path / "work")
    session = Session(dep.make(MEMORY_MB, targets.vcpus(MEMORY_MB), 30.0), MEMORY_MB, 30.0)
    rng = random.Random(20261123)
    bomb = _bomb_png()
    counts: dict[int, int] = {}
    rss = []
    try:
        for i in range(EVENTS):
            ev = event(rng, bomb)
            rep = session.invoke(ev)
            assert rep.status == "ok", (i, rep.status, rep.error, str(ev)[:300])
            out = rep.response
            assert isinstance(out, dict) and isinstance(out.get("body"), str), (i, out)
            code = out["statusCode"]
            body = json.loads(out["body"])
            assert 200 <= code < 300 or (400 <= code < 500 and "error" in body), (
                i, code, body, str(ev)[:300])
            if code == 200:
                assert body["predictions"] and all(p["top"] for p in body["predictions"])
            counts[code] = counts.get(code, 0) + 1
            if i % 100 == 99:
                rss.append(_rss_mb(session))
        assert session.cold_starts <= 1 and session.instance.alive()
    finally:
        session.close()
    assert sum(counts.values()) == EVENTS
    assert counts.get(200, 0) > 100 and sum(v for k, v in counts.items() if k >= 400) > 300
    # resident memory settles: the last 600 requests add little to what the first 600 left
    assert rss[-1] - rss[5] < 25, f"RSS per 100 requests: {rss}"
    print(f"fuzz: {EVENTS} events, status counts {dict(sorted(counts.items()))}, "
          f"RSS MB every 100: {[round(r) for r in rss]}")
