"""A package's proof: requests sent in order to one instance of it, started as `invoke` and
`tune` start one (deployable.py opens the package, instances.py starts a process under the
runtime client or a container, session.py speaks the Runtime API to it)."""

from __future__ import annotations

import time
from typing import Any

from optimizer import targets
from optimizer.errors import PackageFailed
from optimizer.lambda_local.session import Instance, Session, logged

PROOF_MARK = "OPTIMIZER_PROOF "


def run_events(instance: Instance, events: list, memory_mb: int, timeout_s: float,
               what: str, init_limit_s: float = targets.LIMITS.init_timeout_s) -> dict[str, Any]:
    """The responses to `events` from one instance, in order; any invocation that does not
    end ok is a PackageFailed naming `what`."""
    session = Session(instance, memory_mb, timeout_s, init_limit_s)
    t0 = time.perf_counter()
    try:
        reports = []
        for event in events:
            report = session.invoke(event)
            if report.status != "ok":
                raise PackageFailed(f"{what}: invocation ended with {report.status}: "
                                    f"{report.error}\n{instance.logs()}".rstrip())
            reports.append(report)
        logs = instance.logs(400)
    finally:
        session.close()
    first = reports[0] if reports else None
    return {"responses": [r.response for r in reports],
            "first_response_s": round(time.perf_counter() - t0, 3) if reports else None,
            "seconds": round(time.perf_counter() - t0, 2),
            "init_ms": first.init_ms if first else None,
            "init_breakdown": first.init_breakdown if first else None,
            "python": (logged(logs, PROOF_MARK) or {}).get("python"),
            "caps": instance.cap_method,
            "reports": [r.line() for r in reports]}
