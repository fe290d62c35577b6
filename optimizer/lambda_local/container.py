"""Running an image as Lambda does: its runtime client polls a local Runtime API."""

from __future__ import annotations

import time
from typing import Any

from optimizer.errors import PackageFailed
from optimizer.lambda_local.runtime_api import RuntimeAPI


def invoke_image(ref: str, events: list, memory_mb: int, cpus: float,
                 timeout_s: float = 120.0) -> dict[str, Any]:
    """Start the image with the function's memory and CPU share, send each event."""
    from optimizer.package.baseimage import engine

    client = engine()
    api = RuntimeAPI()
    container = None
    try:
        t0 = time.perf_counter()
        container = client.containers.run(
            ref, detach=True, network_mode="host", mem_limit=f"{memory_mb}m",
            nano_cpus=int(cpus * 1e9),
            environment={
                "AWS_LAMBDA_RUNTIME_API": api.address,
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(memory_mb),
                "AWS_LAMBDA_FUNCTION_NAME": "optimizer-local",
                "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
                "AWS_REGION": "us-east-1",
            })

        def alive() -> bool:
            container.reload()
            return container.status in ("created", "running")

        responses, seconds = [], []
        for event in events:
            outcome = api.invoke(event, timeout_s, alive)
            if not outcome.ok:
                logs = container.logs(tail=15).decode(errors="replace")
                raise PackageFailed(f"image {ref}: invocation ended with {outcome.status}: "
                                    f"{outcome.payload}\n{logs}")
            responses.append(outcome.payload)
            seconds.append(outcome.seconds)
        return {"responses": responses, "first_response_s": round(time.perf_counter() - t0, 3),
                "invoke_s": [round(s, 4) for s in seconds]}
    finally:
        if container is not None:
            container.remove(force=True)
        api.close()
