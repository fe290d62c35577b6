"""Memory sizes tried on this machine, the way AWS Lambda Power Tuning tries them on AWS:
a cold start and N warm invocations per size, duration and cost, and a recommendation."""

from __future__ import annotations

import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from optimizer import hostinfo, targets
from optimizer.lambda_local.deployable import Deployable
from optimizer.lambda_local.runtime_api import RuntimeAPI
from optimizer.lambda_local.session import Session

STRATEGIES = ("cost", "speed", "balanced")


def price_target(arch: str) -> str:
    return targets.lambda_architecture(arch)


def percentile(values: list[float], q: float) -> float:
    """As the build's latency figures: numpy's linear interpolation."""
    return float(np.percentile(values, q * 100)) if values else 0.0


def one_size(dep: Deployable, event: Any, memory_mb: int, invocations: int,
             timeout_s: float,
             cold_starts_per_1000: float = targets.DEFAULT_COLD_STARTS_PER_1000) -> dict:
    cpus = targets.vcpus(memory_mb)
    session = Session(dep.make(memory_mb, cpus, timeout_s), memory_mb, timeout_s)
    try:
        reports = [session.invoke(event)]
        if reports[0].status not in ("init_error", "init_timeout"):  # else every retry fails
            reports += [session.invoke(event) for _ in range(invocations)]
        cap = session.instance.cap_method
    finally:
        session.close()
    cold, warm = reports[0], [r for r in reports[1:] if r.status == "ok"]
    durations = [r.duration_ms for r in warm]
    mean_warm = statistics.fmean(durations) if durations else 0.0
    peaks = [r.max_memory_mb for r in reports if r.max_memory_mb is not None]
    return {
        "memory_mb": memory_mb,
        "vcpus": round(cpus, 3),
        "cap_method": cap,
        "init_ms": cold.init_ms,
        "init_breakdown": cold.init_breakdown,
        "cold_duration_ms": cold.duration_ms,
        "p50_ms": round(percentile(durations, 0.5), 3),
        "p95_ms": round(percentile(durations, 0.95), 3),
        "mean_ms": round(mean_warm, 3),
        "max_memory_mb": max(peaks) if peaks else None,
        "errors": [r.error for r in reports if r.status != "ok"],
        "notes": [r.note for r in reports if r.note],
        "invocations": len(reports),
        "cost_per_million_usd": round(targets.cost_per_million(
            mean_warm, memory_mb, price_target(dep.arch)), 4) if durations else None,
        "cold_starts_per_1000": cold_starts_per_1000,
        "cost_per_million_with_cold_usd": round(targets.cost_per_million(
            mean_warm, memory_mb, price_target(dep.arch),
            cold_ms=(cold.init_ms or 0) + cold.duration_ms,
            cold_starts_per_1000=cold_starts_per_1000), 4) if durations else None,
        "reports": [r.line() for r in reports],
    }


def recommend(rows: list[dict], strategy: str) -> dict | None:
    """By cost with the assumed cold starts billed (init is on the bill), and warm p50."""
    key = "cost_per_million_with_cold_usd"
    ok = [r for r in rows if not r["errors"] and r[key] is not None]
    if not ok:
        return None
    if strategy == "cost":
        return min(ok, key=lambda r: (r[key], r["p50_ms"]))
    if strategy == "speed":
        return min(ok, key=lambda r: (r["p50_ms"], r[key]))
    c0 = min(r[key] for r in ok)
    d0 = min(r["p50_ms"] for r in ok) or 1e-9
    return min(ok, key=lambda r: r[key] / c0 + r["p50_ms"] / d0)


def concurrent(dep: Deployable, event: Any, memory_mb: int, instances: int, requests: int,
               timeout_s: float) -> dict:
    """N instances against one emulator; a bounded client sends one request at a time per
    instance, as Lambda routes them."""
    api = RuntimeAPI()
    cpus = targets.vcpus(memory_mb)
    started = [dep.make(memory_mb, cpus, timeout_s) for _ in range(instances)]
    t0 = time.perf_counter()
    try:
        for inst in started:
            inst.start(api.address)
        while api.waiting < instances and time.perf_counter() - t0 < targets.LIMITS.init_timeout_s:
            if not all(i.alive() for i in started):
                break
            time.sleep(0.01)
        ready_s = time.perf_counter() - t0
        lock = threading.Lock()
        outcomes = []

        def client(n: int) -> None:
            for _ in range(n):
                out = api.invoke(event, timeout_s, lambda: any(i.alive() for i in started))
                with lock:
                    outcomes.append(out)

        share = [requests // instances + (k < requests % instances) for k in range(instances)]
        t1 = time.perf_counter()
        with ThreadPoolExecutor(instances) as pool:
            list(pool.map(client, share))
        wall = time.perf_counter() - t1
    finally:
        for inst in started:
            inst.stop()
        api.close()
    ok = [o.seconds * 1000 for o in outcomes if o.ok]
    return {
        "memory_mb": memory_mb, "instances": instances, "cold_starts": instances,
        "all_ready_s": round(ready_s, 3), "requests": len(outcomes),
        "errors": sum(not o.ok for o in outcomes), "wall_s": round(wall, 3),
        "throughput_rps": round(len(ok) / wall, 2) if wall else 0.0,
        "p50_ms": round(percentile(ok, 0.5), 3), "p95_ms": round(percentile(ok, 0.95), 3),
        "cap_method": started[0].cap_method,
    }


def crossover(row: dict, throughput_rps: float, hourly_usd: float, vcpus: int) -> dict:
    """Monthly requests above which an always-on instance is cheaper than Lambda."""
    monthly_instance = hourly_usd * targets.HOURS_PER_MONTH
    per_request = row["cost_per_million_usd"] / 1e6
    capacity = throughput_rps * targets.HOURS_PER_MONTH * 3600
    return {
        "instance_hourly_usd": hourly_usd, "instance_vcpus": vcpus,
        "instance_monthly_usd": round(monthly_instance, 2),
        "lambda_memory_mb": row["memory_mb"],
        "lambda_cost_per_million_usd": row["cost_per_million_usd"],
        "crossover_requests_per_month": round(monthly_instance / per_request),
        "instance_capacity_requests_per_month": round(capacity),
        "throughput_rps_at_instance_vcpus": throughput_rps,
    }


def run(dep: Deployable, event: Any, memories: list[int], invocations: int, strategy: str,
        timeout_s: float, concurrency: int = 0, instance: tuple[float, int] | None = None,
        progress=None,
        cold_starts_per_1000: float = targets.DEFAULT_COLD_STARTS_PER_1000) -> dict:
    rows = []
    for mb in memories:
        if progress:
            progress(f"memory {mb} MB: 1 cold + {invocations} warm invocations")
        rows.append(one_size(dep, event, mb, invocations, timeout_s, cold_starts_per_1000))
    best = recommend(rows, strategy)
    doc: dict[str, Any] = {
        "package": dep.ref, "kind": dep.kind, "runtime": dep.runtime,
        "architecture": dep.arch, "strategy": strategy, "invocations": invocations,
        "timeout_s": timeout_s, "host": hostinfo.cpu(), "rows": rows,
        "cold_starts_per_1000": cold_starts_per_1000,
        "recommended_memory_mb": best["memory_mb"] if best else None,
        "targets_version": targets.TARGETS_VERSION,
    }
    if concurrency:
        mb = best["memory_mb"] if best else memories[-1]
        doc["concurrency"] = concurrent(dep, event, mb, concurrency, concurrency * invocations,
                                        timeout_s)
    if instance and best:
        hourly, vcpus = instance
        if progress:
            progress(f"throughput with {vcpus} instance(s), one vCPU each")
        load = concurrent(dep, event, targets.MB_PER_VCPU, vcpus, vcpus * invocations,
                          timeout_s)
        doc["always_on"] = crossover(best, load["throughput_rps"], hourly, vcpus)
    return doc
