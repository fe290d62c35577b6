"""Batch sizes swept together with memory sizes, for queue-fed pipelines.

Lambda bills a request charge per invocation ($0.20 per million) on top of the compute,
so a function that tags one image per invocation pays it per image; N images per
invocation (an SQS batch) divide it by N, and the per-image compute also falls while the
model runs a batch. Each (memory, batch) pair gets a cold start and N-image SQS events;
the cost per million images counts the request charge, the compute and the cold starts'
share, and the recommendation picks the memory size and the batch size together.
"""

from __future__ import annotations

import base64
from typing import Any

from optimizer import targets
from optimizer.errors import BadInput
from optimizer.lambda_local import bulk_events
from optimizer.lambda_local.deployable import Deployable
from optimizer.lambda_local.tune import one_size

STRATEGY_KEYS = {"cost": ("cost_per_million_images_usd", "per_image_p50_ms"),
                 "speed": ("per_image_p50_ms", "cost_per_million_images_usd")}


def batch_event(images: list[bytes], n: int) -> dict:
    """An SQS event of `n` messages, each a base64 image (the given ones, cycled)."""
    return bulk_events.sqs_event([base64.b64encode(images[i % len(images)]).decode()
                                  for i in range(n)])


def per_image(row: dict[str, Any], n: int) -> dict[str, Any]:
    """A memory sweep row for N-image invocations, with per-image figures added."""
    ok = row["mean_ms"] > 0 and row["cost_per_million_with_cold_usd"] is not None
    return {**row, "batch": n,
            "per_image_p50_ms": round(row["p50_ms"] / n, 3) if ok else None,
            "per_image_mean_ms": round(row["mean_ms"] / n, 3) if ok else None,
            "images_per_second": round(n * 1000 / row["mean_ms"], 1) if ok else None,
            "cost_per_million_images_usd": round(
                row["cost_per_million_with_cold_usd"] / n, 4) if ok else None,
            "request_charge_share": round(
                targets.PRICE_PER_REQUEST * 1e6 / row["cost_per_million_with_cold_usd"],
                3) if ok else None}


def probe(dep: Deployable, images: list[bytes], timeout_s: float) -> None:
    """One SQS event of every image first: a package that does not answer it with an
    empty partial batch response (an older handler, images it cannot read) would be
    timed answering errors."""
    from optimizer.lambda_local.session import Session

    event = batch_event(images, len(images))
    session = Session(dep.make(targets.MB_PER_VCPU, 1.0, timeout_s), targets.MB_PER_VCPU,
                      timeout_s)
    try:
        report = session.invoke(event)
    finally:
        session.close()
    answer = report.response if isinstance(report.response, dict) else {}
    if report.status != "ok" or answer.get("batchItemFailures") != [] \
            or len(answer.get("results", [])) != len(images):
        raise BadInput(f"{dep.ref}: an SQS event of {len(images)} images was not answered "
                       "with every image classified (its handler predates SQS events, or "
                       f"cannot read the images; rebuild it): {str(report.response)[:300]}")


def sweep(dep: Deployable, images: list[bytes], memories: list[int], batches: list[int],
          invocations: int, timeout_s: float, cold_starts_per_1000: float,
          progress=None) -> list[dict[str, Any]]:
    probe(dep, images, timeout_s)
    rows = []
    for mb in memories:
        for n in batches:
            if progress:
                progress(f"memory {mb} MB, batch {n}: 1 cold + {invocations} warm invocations")
            row = one_size(dep, batch_event(images, n), mb, invocations, timeout_s,
                           cold_starts_per_1000)
            rows.append(per_image(row, n))
    return rows


def recommend(rows: list[dict[str, Any]], strategy: str) -> dict[str, Any] | None:
    """Memory and batch together: the cheapest per image, the fastest per image, or
    (balanced) the best sum of the two relative to their bests."""
    ok = [r for r in rows if not r["errors"] and r["cost_per_million_images_usd"] is not None]
    if not ok:
        return None
    if strategy in STRATEGY_KEYS:
        first, second = STRATEGY_KEYS[strategy]
        return min(ok, key=lambda r: (r[first], r[second], r["batch"]))
    c0 = min(r["cost_per_million_images_usd"] for r in ok) or 1e-9
    d0 = min(r["per_image_p50_ms"] for r in ok) or 1e-9
    return min(ok, key=lambda r: (r["cost_per_million_images_usd"] / c0
                                  + r["per_image_p50_ms"] / d0, r["batch"]))


def summary(rows: list[dict[str, Any]], best: dict[str, Any] | None) -> dict[str, Any]:
    """The recommended pair, and what it saves against one image per invocation."""
    if best is None:
        return {"recommended": None}
    single = [r for r in rows if r["batch"] == 1 and r["memory_mb"] == best["memory_mb"]
              and r["cost_per_million_images_usd"] is not None]
    out: dict[str, Any] = {"recommended": {
        "memory_mb": best["memory_mb"], "batch": best["batch"],
        "cost_per_million_images_usd": best["cost_per_million_images_usd"],
        "per_image_p50_ms": best["per_image_p50_ms"],
        "invocation_p50_ms": best["p50_ms"]}}
    if single:
        out["recommended"]["cost_vs_batch_1"] = round(
            best["cost_per_million_images_usd"] / single[0]["cost_per_million_images_usd"], 3)
    return out


def run(dep: Deployable, images: list[bytes], memories: list[int], batches: list[int],
        invocations: int, strategy: str, timeout_s: float, cold_starts_per_1000: float,
        progress=None) -> dict[str, Any]:
    """`optimizer tune --batch`: the document tune.json holds, with the batch rows."""
    from optimizer import hostinfo

    rows = sweep(dep, images, memories, batches, invocations, timeout_s,
                 cold_starts_per_1000, progress)
    best = recommend(rows, strategy)
    smallest = min(batches)
    return {
        "package": dep.ref, "kind": dep.kind, "runtime": dep.runtime,
        "architecture": dep.arch, "strategy": strategy, "invocations": invocations,
        "timeout_s": timeout_s, "host": hostinfo.cpu(),
        # the memory sweep at the smallest batch, as without --batch
        "rows": [r for r in rows if r["batch"] == smallest],
        "batches": batches, "batch_rows": rows, **summary(rows, best),
        "cold_starts_per_1000": cold_starts_per_1000,
        "recommended_memory_mb": best["memory_mb"] if best else None,
        "recommended_batch": best["batch"] if best else None,
        "event": "SQS, one base64 image per message",
        "targets_version": targets.TARGETS_VERSION,
    }
