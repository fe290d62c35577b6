"""Invocations as Lambda runs them: cold start on first use, the 10 s init limit, the
function timeout, and a REPORT line (Init Duration, Duration, Billed Duration, Max Memory
Used) for each. After a timeout or a crash the instance is replaced, as Lambda does."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from optimizer import targets
from optimizer.lambda_local.runtime_api import RuntimeAPI


class Instance(Protocol):
    cap_method: str
    started: float
    init_type: str  # AWS_LAMBDA_INITIALIZATION_TYPE for the next start

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
    # the handler's own OPTIMIZER_INIT line, plus what came before its first line ran
    init_breakdown: dict[str, float | None] | None = None
    # SnapStart: from the restore to the first poll, and the handler's OPTIMIZER_RESTORE line
    restore_ms: float | None = None
    restore: dict[str, Any] | None = None

    def line(self) -> str:
        text = (f"REPORT RequestId: {self.request_id} Duration: {self.duration_ms:.2f} ms "
                f"Billed Duration: {self.billed_ms} ms Memory Size: {self.memory_mb} MB "
                f"Max Memory Used: "
                f"{'?' if self.max_memory_mb is None else round(self.max_memory_mb)} MB")
        if self.restore_ms is not None:  # the init ran before the snapshot, at publish time
            text += f" Restore Duration: {self.restore_ms:.2f} ms"
        elif self.init_ms is not None:
            text += f" Init Duration: {self.init_ms:.2f} ms"
        return text + ("" if self.status == "ok" else f" Status: {self.status}")

    def as_dict(self) -> dict:
        return asdict(self)


INIT_MARK, SNAPSHOT_MARK, RESTORE_MARK = ("OPTIMIZER_INIT ", "OPTIMIZER_SNAPSHOT ",
                                          "OPTIMIZER_RESTORE ")


def logged(logs: str, mark: str) -> dict[str, Any] | None:
    """The JSON of the last log line the handler started with `mark`."""
    line = next((ln for ln in reversed(logs.splitlines()) if ln.startswith(mark)), None)
    try:
        return None if line is None else json.loads(line[len(mark):])
    except ValueError:
        return None


def init_breakdown(logs: str, init_ms: float) -> dict[str, float | None] | None:
    """The parts the handler timed, and `other_ms`: Init Duration minus the handler's share
    (starting the process or container and the runtime client's first poll)."""
    if (parts := logged(logs, INIT_MARK)) is None:
        return None
    known = (parts.get("runtime_start_ms") or 0) + (parts.get("handler_ms") or 0)
    return {**parts, "other_ms": round(max(0.0, init_ms - known), 2)}


INIT_PARTS = (("runtime_start_ms", "interpreter and runtime client"), ("numpy_ms", "numpy"),
              ("image_library_ms", "image library"), ("runtime_import_ms", "inference runtime"),
              ("model_load_ms", "model load"), ("warmup_ms", "warm-up"),
              ("other_ms", "process start and first poll"))


def describe_init(parts: dict[str, float | None] | None) -> str:
    """One line: where the Init Duration went, in the order it is spent."""
    if not parts:
        return "init breakdown: none (the handler logged no OPTIMIZER_INIT line)"
    return "init: " + ", ".join(f"{label} {parts[k]:.0f} ms" for k, label in INIT_PARTS
                                if parts.get(k) is not None)


class Session:
    """One emulator and one instance, replaced when it dies."""

    def __init__(self, instance: Instance, memory_mb: int, timeout_s: float,
                 init_limit_s: float = targets.LIMITS.init_timeout_s,
                 snap_start: bool = False) -> None:
        """`snap_start`: each cold start runs init and the before-snapshot hooks, then
        restores (the same process: a real restore also loads the snapshot) and runs the
        after-restore hooks before the first event."""
        self.instance, self.memory_mb = instance, memory_mb
        self.snap_start, self.restore_ms = snap_start, None
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
        self.instance.init_type = "snap-start" if self.snap_start else "on-demand"
        self.instance.start(self.api.address)
        self.cold_starts += 1
        t0 = self.instance.started
        deadline = t0 + self.init_limit_s + self.timeout_s
        restored: float | None = None
        self.restore_ms = None
        while time.perf_counter() < deadline:
            if self.api.snapshot_ready is not None and restored is None:
                restored = time.perf_counter()
                self.api.restore.set()
            if self.api.restore_failed.is_set():
                err = self.api.restore_error or {}
                return "init_error", (time.perf_counter() - t0) * 1000, \
                    f"{err.get('errorType', 'Runtime.AfterRestoreError')}: " \
                    f"{err.get('errorMessage')}"
            if self.api.first_poll is not None:
                self.warm = True
                end = self.api.snapshot_ready or self.api.first_poll
                init_ms = (end - t0) * 1000
                if restored is not None:
                    self.restore_ms = (self.api.first_poll - restored) * 1000
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
                return Report(self.count, status, 0.0, targets.billed_ms(init_ms),
                              self.memory_mb, peak, init_ms, None, error)
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
        billed_ms = targets.billed_ms(ms + init_ms if over_limit else ms)
        parts, logs = self._breakdown(init_ms) if init_ms is not None else (None, "")
        restore = None
        restore_ms = self.restore_ms if init_ms is not None else None
        if restore_ms is not None:
            restore = {"before_snapshot": logged(logs, SNAPSHOT_MARK),
                       "after_restore": logged(logs, RESTORE_MARK)}
            restore_ms = round(restore_ms, 3)
        return Report(self.count, status, round(ms, 3), billed_ms, self.memory_mb, peak,
                      None if init_ms is None else round(init_ms, 3),
                      out.payload if out.status == "ok" else None, error, note, parts,
                      restore_ms, restore)

    def _breakdown(self, init_ms: float) -> tuple[dict[str, float | None] | None, str]:
        """The init breakdown and the log it was read from (the restore lines are in it)."""
        # a container's log reaches the engine a moment after the line is written
        for _ in range(20):
            logs = self.instance.logs(200)
            if parts := init_breakdown(logs, init_ms):
                return parts, logs
            time.sleep(0.01)
        return None, logs

    def _reset(self) -> None:
        self.instance.stop()
        self.warm = False

    def close(self) -> None:
        self.instance.stop()
        self.api.close()
