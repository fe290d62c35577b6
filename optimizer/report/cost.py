"""The shipped package's cost per million requests with its cold starts on the bill.

Lambda bills the INIT phase of zip functions too (since August 2025), so a cost from warm
durations alone is low by the share of cold starts times their init. The assumed share is
the recipe's `validate.cold_starts_per_1000`; the init comes from the best measurement the
build has: the memory sweep at the target's size (CPU-capped), else the package proof (run
at the target's memory size, CPU-capped where a cgroup could be made; otherwise scaled by
the CPU share as the warm estimate is).
"""

from __future__ import annotations

from typing import Any

from optimizer import targets


def _cold(r: dict[str, Any], warm_ms: float) -> tuple[float, str] | None:
    """(billed ms of a cold request, where it was measured), or None."""
    t = r["target"]
    for row in (r.get("tune") or {}).get("rows", []):
        if row["memory_mb"] == t["memory_mb"] and row.get("init_ms") is not None:
            return (row["init_ms"] + row["cold_duration_ms"],
                    f"memory sweep at {t['memory_mb']} MB, CPU-capped")
    for p in r.get("packages", []):
        proof = p.get("proof") or {}
        if p.get("kind") == "zip" and (init := proof.get("init_ms")) is not None:
            if str(proof.get("caps", "")).startswith("cgroup"):
                return init + warm_ms, f"package proof at {t['memory_mb']} MB, CPU-capped"
            share = min(1.0, t["vcpus"]) or 1.0
            return (init / share + warm_ms,
                    "package proof, uncapped, scaled by the CPU share")
    return None


def section(r: dict[str, Any], cold_starts_per_1000: float) -> dict[str, Any] | None:
    ship = next((a for a in r["artifacts"] if a["name"] == r.get("ship")), None)
    if ship is None:
        return None
    t = r["target"]
    warm_ms = ship["estimate"]["duration_ms"]
    out: dict[str, Any] = {
        "memory_mb": t["memory_mb"], "cold_starts_per_1000": cold_starts_per_1000,
        "warm_ms": warm_ms,
        "warm_only_usd": targets.cost_per_million(warm_ms, t["memory_mb"], t["name"]),
    }
    cold = _cold(r, warm_ms)
    if cold is None:
        out["note"] = "no package was run, so no init was measured: warm cost only"
        return out
    cold_ms, source = cold
    out.update(cold_request_ms=round(cold_ms, 1), cold_from=source,
               usd=round(targets.cost_per_million(warm_ms, t["memory_mb"], t["name"],
                                                  cold_ms, cold_starts_per_1000), 4))
    out["warm_only_usd"] = round(out["warm_only_usd"], 4)
    return out
