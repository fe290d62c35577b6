"""Proving an image: started as Lambda would start it, sent each event in turn."""

from __future__ import annotations

import time
from typing import Any

from optimizer.errors import PackageFailed
from optimizer.lambda_local.instances import ContainerInstance
from optimizer.lambda_local.session import Session


def invoke_image(ref: str, events: list, memory_mb: int, cpus: float,
                 timeout_s: float = 120.0) -> dict[str, Any]:
    """Responses to `events` from one instance of the image; any failure is PackageFailed."""
    session = Session(ContainerInstance(ref, memory_mb, cpus, timeout_s), memory_mb, timeout_s)
    t0 = time.perf_counter()
    try:
        reports = []
        for event in events:
            report = session.invoke(event)
            if report.status != "ok":
                raise PackageFailed(f"image {ref}: invocation ended with {report.status}: "
                                    f"{report.error}\n{session.instance.logs()}")
            reports.append(report)
    finally:
        session.close()
    return {"responses": [r.response for r in reports],
            "first_response_s": round(time.perf_counter() - t0, 3) if reports else None,
            "init_ms": reports[0].init_ms, "reports": [r.line() for r in reports]}
