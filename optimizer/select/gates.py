"""Pass/fail per artifact, the choice of what to ship, and why nothing could be shipped."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from optimizer import targets

if TYPE_CHECKING:
    from optimizer.pipeline import Artifact
    from optimizer.recipe.schema import Recipe


def _gate(name: str, value: float, limit: float, ok: bool, unit: str) -> dict[str, Any]:
    return {"gate": name, "value": round(value, 4), "limit": round(limit, 4), "unit": unit,
            "passed": bool(ok), "by": round(abs(value - limit), 4)}


def check(art: Artifact, source: Artifact, recipe: Recipe,
          target: str | None = None) -> list[dict[str, Any]]:
    """`target`: judge target-dependent gates (fp16) for it instead of the recipe's.

    With labels the budget is accuracy against the source's; without, agreement with the
    source's answers and the distance between the probabilities.
    """
    g = recipe.gates
    v = art.validation
    labeled = source.validation.get("accuracy") is not None
    out = []
    if not v.get("finite", True):
        out.append({"gate": "finite_outputs", "value": 0, "limit": 1, "unit": "",
                    "passed": False, "by": 1})
    if labeled:
        drop = source.validation["accuracy"] - v["accuracy"]
        out.append(_gate("max_accuracy_drop", drop, g.max_accuracy_drop,
                         drop <= g.max_accuracy_drop, "points"))
        if g.min_accuracy is not None:
            out.append(_gate("min_accuracy", v["accuracy"], g.min_accuracy,
                             v["accuracy"] >= g.min_accuracy, "%"))
    min_agreement = g.min_agreement if g.min_agreement is not None or labeled else \
        targets.UNLABELED_GATES["min_agreement"]
    max_kl = g.max_mean_kl if g.max_mean_kl is not None or labeled else \
        targets.UNLABELED_GATES["max_mean_kl"]
    if min_agreement is not None and art is not source:
        out.append(_gate("min_agreement", v["agreement"], min_agreement,
                         v["agreement"] >= min_agreement, "%"))
    if max_kl is not None and art is not source:
        out.append(_gate("max_mean_kl", v["mean_kl"], max_kl, v["mean_kl"] <= max_kl, "nats"))
    if g.max_class_drop is not None and "max_class_drop" in v:
        out.append(_gate("max_class_drop", v["max_class_drop"], g.max_class_drop,
                         v["max_class_drop"] <= g.max_class_drop, "points"))
    if g.max_latency_ms is not None:
        p50 = v["latency"]["p50_ms"]
        out.append(_gate("max_latency_ms", p50, g.max_latency_ms, p50 <= g.max_latency_ms, "ms"))
    if g.max_model_mb is not None:
        mb = v["size_bytes"] / 1e6
        out.append(_gate("max_model_mb", mb, g.max_model_mb, mb <= g.max_model_mb, "MB"))
    if art.step == "fp16":
        out.append(_fp16_native(art, recipe, target or recipe.target.name))
    return out


def _fp16_native(art: Artifact, recipe: Recipe, target: str) -> dict[str, Any]:
    """fp16 ships only where the target computes in fp16, unless the recipe insists."""
    t = targets.TARGETS[target]
    insist = any(s.name == art.step_name and getattr(s, "insist", False) for s in recipe.steps)
    ok = t.fp16_native or insist
    why = (f"{t.name} ({t.isa}) computes fp16 natively" if t.fp16_native else
           f"{t.name} ({t.isa}) has no fp16 arithmetic; shipped anyway (insist: true)"
           if insist else f"{t.name} ({t.isa}) has no fp16 arithmetic (it would convert every "
           "op to fp32 and back); set insist: true on the step to allow it")
    return {"gate": "fp16_native", "value": int(ok), "limit": 1, "unit": "", "passed": ok,
            "by": 0 if ok else 1, "why": why}


def choose(artifacts: list[Artifact], prefer: str = "speed",
           require_pass: bool = True, deployable_only: bool = True) -> Artifact | None:
    """The fastest (or smallest) deployable artifact that passed every gate: measured."""
    pool = [a for a in artifacts
            if (a.candidate or not deployable_only) and (a.passed or not require_pass)]
    return min(pool, key=lambda a: cost(a.validation, a.name, prefer), default=None)


def cost(validation: dict[str, Any], name: str, prefer: str) -> tuple:
    """Order of preference: p50 (or size), then the other, then the name for ties."""
    p50, size = validation["latency"]["p50_ms"], validation["size_bytes"]
    return (size, p50, name) if prefer == "size" else (p50, size, name)


def explain_failure(artifacts: list[Artifact]) -> str:
    candidates = [a for a in artifacts if a.candidate]
    if not candidates:
        return ("no deployable (ONNX or TFLite) artifact was produced; add an export_onnx or "
                "tflite step")

    def shortfall(a: Artifact) -> float:
        return sum(gt["by"] for gt in a.gates if not gt["passed"])

    best = min(candidates, key=shortfall)
    failed = "; ".join(
        f"{gt['gate']}: {gt['why']}" if "why" in gt else
        f"{gt['gate']} {gt['value']}{gt['unit']} vs limit {gt['limit']}{gt['unit']} "
        f"(off by {gt['by']})"
        for gt in best.gates if not gt["passed"]
    )
    return f"no artifact passed every gate; closest is '{best.name}': {failed}"
