"""Invocations as Lambda runs them: cold start on first use, the 10 s init limit, the
function timeout, and a REPORT line (Init Duration, Duration, Billed Duration, Max Memory
Used) for each. After a timeout or a crash the instance is replaced, as Lambda does."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from optimizer import targets
from optimizer.lambda_local.runtime_api import RuntimeAPI


class Instance(Protocol):
    cap_method: str
    started: float

    def start(self, api: str) -> None: ...
    def alive(self) -> bool: ...
    def peak_mb(self) -> float | None: ...
    def oom_killed(self) -> bool: ...
    def logs(self, lines: int = 15) -> str: ...
    def stop(self) -> None: ...


@dataclass
class Report:
    request_id: int
    status: str  # ok | error | timeout | init_error | init_timeout | killed | exited
    duration_ms: float
    billed_ms: int
    memory_mb: int
    max_memory_mb: float | None
    init_ms: float | None  # only on a cold start
    response: Any = None
    error: str | None = None
    note: str | None = None

    def line(self) -> str:
        text = (f"REPORT RequestId: {self.request_id} Duration: {self.duration_ms:.2f} ms "
                f"Billed Duration: {self.billed_ms} ms Memory Size: {self.memory_mb} MB "
                f"Max Memory Used: "
                f"{'?' if self.max_memory_mb is None else round(self.max_memory_mb)} MB")
        if self.init_ms is not None:
            text += f" Init Duration: {self.init_ms:.2f} ms"
        return text + ("" if self.status == "ok" else f" Status: {self.status}")

    def as_dict(self) -> dict:
        return asdict(self)


def billed(ms: float) -> int:
    g = targets.BILLING_GRANULARITY_MS
    return max(g, math.ceil(ms / g) * g)


class Session:
    """One emulator and one instance, replaced when it dies."""

    def __init__(self, instance: Instance, memory_mb: int, timeout_s: float,
                 init_limit_s: float = targets.LIMITS.init_timeout_s) -> None:
        self.instance, self.memory_mb = instance, memory_mb
        self.timeout_s, self.init_limit_s = timeout_s, init_limit_s
        self.api = RuntimeAPI()
        self.warm = False
        self.count = 0
        self.cold_starts = 0

    def _cold_start(self) -> tuple[str, float, str | None]:
        """(status, init ms, error or note). An init longer than the 10 s limit is not fatal
        on Lambda: it is run again inside the first invocation, billed, and counted against
        the function timeout. Only past that does the invocation fail."""
        self.api.reset_init()
        self.instance.start(self.api.address)
        self.cold_starts += 1
        t0 = self.instance.started
        deadline = t0 + self.init_limit_s + self.timeout_s
        while time.perf_counter() < deadline:
            if self.api.first_poll is not None:
                self.warm = True
                init_ms = (self.api.first_poll - t0) * 1000
                note = None
                if init_ms > self.init_limit_s * 1000:
                    note = (f"init took {init_ms / 1000:.1f} s, over Lambda's "
                            f"{self.init_limit_s:g} s limit: Lambda runs it again inside the "
                            "first invocation, billed and counted against the timeout")
                return "ok", init_ms, note
            if self.api.init_failed.is_set():
                err = self.api.init_error or {}
                return "init_error", (time.perf_counter() - t0) * 1000, \
                    f"{err.get('errorType', 'Runtime.InitError')}: {err.get('errorMessage')}"
            if not self.instance.alive():
                oom = self.instance.oom_killed()
                return "init_error", (time.perf_counter() - t0) * 1000, (
                    f"Runtime.OutOfMemory: killed during init (over {self.memory_mb} MB)"
                    if oom else "Runtime.ExitError: the runtime exited during init\n"
                    + self.instance.logs())
            time.sleep(0.005)
        return "init_timeout", (deadline - t0) * 1000, (
            f"Task timed out: init did not finish within the {self.init_limit_s:g} s init "
            f"limit plus the {self.timeout_s:g} s timeout")

    def invoke(self, event: Any) -> Report:
        self.count += 1
        init_ms, note = None, None
        if not self.warm or not self.instance.alive():
            status, init_ms, note = self._cold_start()
            if status != "ok":
                error = note
                peak = self.instance.peak_mb()
                self._reset()
                return Report(self.count, status, 0.0, billed(init_ms), self.memory_mb, peak,
                              init_ms, None, error)
        over_limit = init_ms is not None and init_ms > self.init_limit_s * 1000
        # a re-run init uses up part of the invocation's timeout
        budget = self.timeout_s - (init_ms / 1000 - self.init_limit_s if over_limit else 0)
        out = self.api.invoke(event, budget, self.instance.alive)
        ms = out.seconds * 1000
        peak = self.instance.peak_mb()
        error = None
        status = out.status
        if out.status == "error":
            err = out.payload if isinstance(out.payload, dict) else {"errorMessage": out.payload}
            error = f"{err.get('errorType', 'Error')}: {err.get('errorMessage')}"
        elif out.status == "timeout":
            error = out.payload["errorMessage"]
            self._reset()
        elif out.status in ("exited", "init_error"):
            oom = self.instance.oom_killed()
            status = "killed" if oom else "exited"
            error = ("Runtime.OutOfMemory: Runtime exited with error: signal: killed "
                     f"(over {self.memory_mb} MB)") if oom else \
                "Runtime.ExitError: Runtime exited without providing a reason\n" + \
                self.instance.logs()
            self._reset()
        # a re-run init is billed as part of the invocation
        billed_ms = billed(ms + init_ms) if over_limit else billed(ms)
        return Report(self.count, status, round(ms, 3), billed_ms, self.memory_mb, peak,
                      None if init_ms is None else round(init_ms, 3),
                      out.payload if out.status == "ok" else None, error, note)

    def _reset(self) -> None:
        self.instance.stop()
        self.warm = False

    def close(self) -> None:
        self.instance.stop()
        self.api.close()
