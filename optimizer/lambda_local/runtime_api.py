"""A local Lambda Runtime API: the HTTP interface a runtime client polls for events.

Implements the 2018-06-01 paths (next invocation, response, error, init error) with the
headers awslambdaric reads, so a real runtime client (in a container or a process) runs
the packaged handler exactly as on Lambda.
"""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PREFIX = "/2018-06-01/runtime"
FUNCTION_ARN = "arn:aws:lambda:us-east-1:000000000000:function:optimizer-local"


@dataclass
class Outcome:
    ok: bool
    payload: Any
    seconds: float


@dataclass
class _Pending:
    event: bytes
    deadline_ms: int
    done: threading.Event = field(default_factory=threading.Event)
    outcome: Outcome | None = None
    started: float = field(default_factory=time.perf_counter)


class RuntimeAPI:
    """Start, `invoke` events one at a time, `close`. `init_error` is set if init failed."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._events: queue.Queue[str] = queue.Queue()
        self._pending: dict[str, _Pending] = {}
        self.init_error: Any = None
        self.init_failed = threading.Event()
        self.polled = threading.Event()
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _reply(self, code: int, body: bytes = b"{}", headers: dict | None = None) -> None:
                self.send_response(code)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def do_GET(self) -> None:
                if self.path != f"{PREFIX}/invocation/next":
                    return self._reply(404)
                api.polled.set()
                request_id = api._events.get()
                if request_id == "":  # closing
                    return self._reply(410)
                p = api._pending[request_id]
                self._reply(200, p.event, {
                    "Lambda-Runtime-Aws-Request-Id": request_id,
                    "Lambda-Runtime-Deadline-Ms": str(p.deadline_ms),
                    "Lambda-Runtime-Invoked-Function-Arn": FUNCTION_ARN,
                    "Lambda-Runtime-Trace-Id": f"Root=1-{request_id[:8]}-{request_id[9:33]}",
                })

            def do_POST(self) -> None:
                body = self._body()
                parts = self.path.removeprefix(PREFIX).strip("/").split("/")
                if parts == ["init", "error"]:
                    api.init_error = _json(body)
                    api.init_failed.set()
                    return self._reply(202)
                if len(parts) == 3 and parts[0] == "invocation" and parts[2] in (
                        "response", "error"):
                    p = api._pending.get(parts[1])
                    if p is None:
                        return self._reply(400)
                    p.outcome = Outcome(parts[2] == "response", _json(body),
                                        time.perf_counter() - p.started)
                    p.done.set()
                    return self._reply(202)
                return self._reply(404)

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def address(self) -> str:
        host, port = self.server.server_address[:2]
        return f"{host}:{port}"

    def invoke(self, event: Any, timeout_s: float = 60.0,
               alive: Callable[[], bool] = lambda: True) -> Outcome:
        """Queue one event and wait for its answer, the runtime's init error, or its exit."""
        request_id = str(uuid.uuid4())
        deadline = int((time.time() + timeout_s) * 1000)
        p = _Pending(json.dumps(event).encode(), deadline)
        self._pending[request_id] = p
        self._events.put(request_id)
        end = time.monotonic() + timeout_s
        while not p.done.wait(0.05):
            if self.init_failed.is_set() or not alive() or time.monotonic() > end:
                break
        del self._pending[request_id]
        if p.outcome is None:
            why = (f"init failed: {self.init_error}" if self.init_failed.is_set() else
                   "the runtime exited" if not alive() else f"no answer in {timeout_s:.0f} s")
            raise RuntimeError(f"invocation failed: {why}")
        return p.outcome

    def close(self) -> None:
        self._events.put("")
        self.server.shutdown()
        self.server.server_close()


def _json(body: bytes) -> Any:
    try:
        return json.loads(body) if body else None
    except ValueError:
        return body.decode(errors="replace")
