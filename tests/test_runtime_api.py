"""The local Runtime API against the real runtime client, awslambdaric, in a process."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from optimizer.lambda_local.runtime_api import RuntimeAPI

pytest.importorskip("awslambdaric", reason="awslambdaric is in the test extras")

HANDLER = """
    import os
    if os.environ.get("BREAK_INIT"):
        raise ImportError("init broke on purpose")

    def handle(event, context):
        if event.get("fail"):
            raise ValueError("asked to fail")
        return {"echo": event, "request_id": context.aws_request_id,
                "remaining_ms": context.get_remaining_time_in_millis()}
"""


def _client(tmp_path, api, **env):
    (tmp_path / "fn.py").write_text(textwrap.dedent(HANDLER))
    return subprocess.Popen(
        [sys.executable, "-m", "awslambdaric", "fn.handle"], cwd=tmp_path,
        env={**os.environ, "AWS_LAMBDA_RUNTIME_API": api.address, **env},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def test_round_trip_response_and_error(tmp_path):
    api = RuntimeAPI()
    proc = _client(tmp_path, api)
    try:
        ok = api.invoke({"x": 1}, 30, alive=lambda: proc.poll() is None)
        assert ok.ok and ok.payload["echo"] == {"x": 1}
        assert ok.payload["request_id"] and 0 < ok.payload["remaining_ms"] <= 30_000
        failed = api.invoke({"fail": True}, 30, alive=lambda: proc.poll() is None)
        assert not failed.ok and failed.payload["errorType"] == "ValueError"
        again = api.invoke({"y": 2}, 30, alive=lambda: proc.poll() is None)
        assert again.ok and again.payload["echo"] == {"y": 2}  # the runtime keeps serving
    finally:
        proc.kill()
        api.close()


def test_init_error_is_reported_not_hung(tmp_path):
    api = RuntimeAPI()
    proc = _client(tmp_path, api, BREAK_INIT="1")
    try:
        out = api.invoke({"x": 1}, 30, alive=lambda: proc.poll() is None)
        assert out.status == "init_error"
        assert "init broke on purpose" in out.payload["errorMessage"]
    finally:
        proc.kill()
        api.close()
