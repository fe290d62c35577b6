"""Pass/fail per artifact, the choice of what to ship, and why nothing could be shipped."""

from __future__ import annotations

from optimizer import targets
from optimizer.artifact import Artifact, Gate
from optimizer.recipe.schema import Gates, Recipe


def _gate(name: str, value: float, limit: float, ok: bool, unit: str) -> Gate:
    return Gate(name, round(value, 4), round(limit, 4), unit, bool(ok),
                round(abs(value - limit), 4))


def check(art: Artifact, source: Artifact, g: Gates, target: str,
          insist: bool = False) -> tuple[Gate, ...]:
    """The recipe's gates on one artifact. `target` judges target-dependent gates (fp16);
    `insist`: the step that made it insists on shipping (fp16's `insist: true`).

    With labels the budget is accuracy against the source's; without, agreement with the
    source's answers and the distance between the probabilities.
    """
    m = art.measured
    assert m.accuracy is not None and m.agreement is not None and m.latency is not None
    labeled = source.accuracy is not None
    out = []
    if not m.accuracy.finite:
        out.append(Gate("finite_outputs", 0, 1, "", False, 1))
    if labeled:
        assert source.accuracy is not None and m.accuracy.accuracy is not None
        drop = source.accuracy - m.accuracy.accuracy
        out.append(_gate("max_accuracy_drop", drop, g.max_accuracy_drop,
                         drop <= g.max_accuracy_drop, "points"))
        if g.min_accuracy is not None:
            out.append(_gate("min_accuracy", m.accuracy.accuracy, g.min_accuracy,
                             m.accuracy.accuracy >= g.min_accuracy, "%"))
    min_agreement = g.min_agreement if g.min_agreement is not None or labeled else \
        targets.UNLABELED_GATES["min_agreement"]
    max_kl = g.max_mean_kl if g.max_mean_kl is not None or labeled else \
        targets.UNLABELED_GATES["max_mean_kl"]
    if min_agreement is not None and art.name != source.name:
        out.append(_gate("min_agreement", m.agreement.agreement, min_agreement,
                         m.agreement.agreement >= min_agreement, "%"))
    if max_kl is not None and art.name != source.name:
        out.append(_gate("max_mean_kl", m.agreement.mean_kl, max_kl,
                         m.agreement.mean_kl <= max_kl, "nats"))
    if g.max_class_drop is not None and m.class_drop is not None:
        drop = m.class_drop.max_class_drop
        out.append(_gate("max_class_drop", drop, g.max_class_drop, drop <= g.max_class_drop,
                         "points"))
    if g.max_latency_ms is not None:
        p50 = m.latency.p50_ms
        out.append(_gate("max_latency_ms", p50, g.max_latency_ms, p50 <= g.max_latency_ms, "ms"))
    if g.max_model_mb is not None:
        mb = art.size_bytes / 1e6
        out.append(_gate("max_model_mb", mb, g.max_model_mb, mb <= g.max_model_mb, "MB"))
    if art.step == "fp16":
        out.append(_fp16_native(target, insist))
    return tuple(out)


def insists(recipe: Recipe, art: Artifact) -> bool:
    """The step that made `art` says ship it even where a gate would not (fp16's insist)."""
    return any(s.name == art.step_name and getattr(s, "insist", False) for s in recipe.steps)


def _fp16_native(target: str, insist: bool) -> Gate:
    """fp16 ships only where the target computes in fp16, unless the recipe insists."""
    t = targets.TARGETS[target]
    ok = t.fp16_native or insist
    why = (f"{t.name} ({t.isa}) computes fp16 natively" if t.fp16_native else
           f"{t.name} ({t.isa}) has no fp16 arithmetic; shipped anyway (insist: true)"
           if insist else f"{t.name} ({t.isa}) has no fp16 arithmetic (it would convert every "
           "op to fp32 and back); set insist: true on the step to allow it")
    return Gate("fp16_native", int(ok), 1, "", ok, 0 if ok else 1, why)


def cost(p50_ms: float, size_bytes: int, name: str, prefer: str) -> tuple:
    """Order of preference: p50 (or size), then the other, then the name for ties."""
    return (size_bytes, p50_ms, name) if prefer == "size" else (p50_ms, size_bytes, name)


def choose(artifacts: list[Artifact], prefer: str = "speed",
           require_pass: bool = True, deployable_only: bool = True) -> Artifact | None:
    """The fastest (or smallest) deployable artifact that passed every gate: measured."""
    pool = [a for a in artifacts
            if (a.candidate or not deployable_only) and (a.passed or not require_pass)]
    return min(pool, key=lambda a: cost(a.p50_ms, a.size_bytes, a.name, prefer), default=None)


def explain_failure(artifacts: list[Artifact]) -> str:
    candidates = [a for a in artifacts if a.candidate]
    if not candidates:
        return ("no deployable (ONNX or TFLite) artifact was produced; add an export_onnx or "
                "tflite step")

    def shortfall(a: Artifact) -> float:
        return sum(gt.by for gt in a.gates if not gt.passed)

    best = min(candidates, key=shortfall)
    failed = "; ".join(
        f"{gt.gate}: {gt.why}" if gt.why is not None else
        f"{gt.gate} {gt.value}{gt.unit} vs limit {gt.limit}{gt.unit} (off by {gt.by})"
        for gt in best.gates if not gt.passed
    )
    return f"no artifact passed every gate; closest is '{best.name}': {failed}"
