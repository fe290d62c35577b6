"""A local Lambda Runtime API: the HTTP interface a runtime client polls for events.

Implements the 2018-06-01 paths (next invocation, response, error, init error, and
SnapStart's restore next and restore error) with the headers awslambdaric reads, so a real
runtime client (in a container or a process) runs the packaged handler exactly as on
Lambda. One emulator may serve several instances; each takes one event at a time, as on
Lambda.
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
    """status: ok | error (the handler raised) | timeout | init_error | exited."""

    status: str
    payload: Any
    seconds: float

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass
class _Pending:
    event: bytes
    deadline_ms: int
    done: threading.Event = field(default_factory=threading.Event)
    outcome: Outcome | None = None
    started: float = 0.0  # when a runtime took it


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # headers and body go out as separate writes; with Nagle on, the client's delayed ACK
    # would add ~40 ms to every invocation
    disable_nagle_algorithm = True
    server: _Server

    def log_message(self, *args: object) -> None:
        pass

    def reply(self, code: int, body: bytes = b"{}", headers: dict | None = None) -> None:
        self.send_response(code)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self.server.api.get(self)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.reply(*self.server.api.post(self.path, body))


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], api: RuntimeAPI) -> None:
        super().__init__(address, _Handler)
        self.api = api

    def handle_error(self, request: object, client_address: object) -> None:
        pass  # a runtime killed mid-request (timeouts, OOM) is expected here


class RuntimeAPI:
    """Start, `invoke` events, `close`. Init errors and polls are visible to the caller."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._events: queue.Queue[str] = queue.Queue()
        self._pending: dict[str, _Pending] = {}
        self._lock = threading.Lock()
        self.init_error: Any = None
        self.init_failed = threading.Event()
        self.waiting = 0  # runtimes blocked in /next: each is initialised and idle
        self.first_poll: float | None = None
        # SnapStart: the runtime asks for /restore/next once init and the before-snapshot
        # hooks are done; it is answered when `restore` is set, as if from a snapshot
        self.snapshot_ready: float | None = None
        self.restore = threading.Event()
        self.restore_error: Any = None
        self.restore_failed = threading.Event()
        self.server = _Server((host, port), self)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def get(self, h: _Handler) -> None:
        """/restore/next (answered once restored) and /invocation/next (the next event)."""
        if h.path == f"{PREFIX}/restore/next":
            self.snapshot_ready = time.perf_counter()
            self.restore.wait()
            return h.reply(200)
        if h.path != f"{PREFIX}/invocation/next":
            return h.reply(404)
        with self._lock:
            self.waiting += 1
            self.first_poll = self.first_poll or time.perf_counter()
        while True:  # skip events whose caller gave up before any runtime took them
            request_id = self._events.get()
            p = self._pending.get(request_id)
            if request_id == "" or (p is not None and not p.started):
                break
        with self._lock:
            self.waiting -= 1
        if p is None:  # closing
            return h.reply(410)
        p.started = time.perf_counter()
        try:
            h.reply(200, p.event, {
                "Lambda-Runtime-Aws-Request-Id": request_id,
                "Lambda-Runtime-Deadline-Ms": str(p.deadline_ms),
                "Lambda-Runtime-Invoked-Function-Arn": FUNCTION_ARN,
                "Lambda-Runtime-Trace-Id": f"Root=1-{request_id[:8]}-{request_id[9:33]}",
            })
        except OSError:  # a runtime killed while it waited: give the event back
            p.started = 0.0
            self._events.put(request_id)

    def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        """Init and restore errors, and an invocation's response or error."""
        parts = path.removeprefix(PREFIX).strip("/").split("/")
        if parts == ["restore", "error"]:
            self.restore_error = _json(body)
            self.restore_failed.set()
            return 202, b"{}"
        if parts == ["init", "error"]:
            self.init_error = _json(body)
            self.init_failed.set()
            return 202, b"{}"
        if len(parts) == 3 and parts[0] == "invocation" and parts[2] in ("response", "error"):
            p = self._pending.get(parts[1])
            if p is None or p.done.is_set():
                return 400, b'{"errorType":"InvalidRequestID"}'
            status = "ok" if parts[2] == "response" else "error"
            p.outcome = Outcome(status, _json(body), time.perf_counter() - p.started)
            p.done.set()
            return 202, b"{}"
        return 404, b"{}"

    @property
    def address(self) -> str:
        host, port = self.server.server_address[:2]
        return f"{host}:{port}"

    def reset_init(self) -> None:
        """Before starting a new instance: forget the previous one's init state."""
        self.init_error, self.first_poll = None, None
        self.init_failed.clear()
        self.snapshot_ready, self.restore_error = None, None
        self.restore.clear()
        self.restore_failed.clear()

    def invoke(self, event: Any, timeout_s: float = 60.0,
               alive: Callable[[], bool] = lambda: True) -> Outcome:
        """Queue one event; wait for its answer, the runtime's init error, its exit, or the
        function timeout (counted from when a runtime took the event, as Lambda does)."""
        request_id = str(uuid.uuid4())
        p = _Pending(json.dumps(event).encode(), int((time.time() + timeout_s) * 1000))
        self._pending[request_id] = p
        self._events.put(request_id)
        queued = time.perf_counter()
        try:
            while not p.done.wait(0.02):
                if self.init_failed.is_set():
                    return Outcome("init_error", self.init_error, 0.0)
                if not alive():
                    return Outcome("exited", None, time.perf_counter() - (p.started or queued))
                if p.started and time.perf_counter() - p.started > timeout_s:
                    return Outcome("timeout", {"errorMessage": f"Task timed out after "
                                               f"{timeout_s:.2f} seconds"}, timeout_s)
            assert p.outcome is not None
            if p.outcome.seconds > timeout_s:  # answered, but after the deadline
                return Outcome("timeout", {"errorMessage": f"Task timed out after "
                                           f"{timeout_s:.2f} seconds"}, timeout_s)
            return p.outcome
        finally:
            self._pending.pop(request_id, None)

    def close(self) -> None:
        self.restore.set()
        for _ in range(64):
            self._events.put("")
        self.server.shutdown()
        self.server.server_close()


def _json(body: bytes) -> Any:
    try:
        return json.loads(body) if body else None
    except ValueError:
        return body.decode(errors="replace")
