"""Candidates, the Pareto front and the teacher-to-student comparison, from report rows.

Pure functions over report.json's `artifacts`, so the markdown, the console and the plot all
read the same numbers the gates used.
"""

from __future__ import annotations

from typing import Any

from optimizer.artifact import STUDENT_STEPS
from optimizer.select.gates import cost


def _p50(row: dict[str, Any]) -> float:
    return row["validation"]["latency"]["p50_ms"]


def _size(row: dict[str, Any]) -> int:
    return row["validation"]["size_bytes"]


def quality(row: dict[str, Any]) -> float:
    """Accuracy, or without labels agreement with the source: what trades against cost."""
    v = row["validation"]
    return v["accuracy"] if v.get("accuracy") is not None else v["agreement"]


def _by_name(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["name"]: r for r in rows}


def student_of(row: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The swap/distill artifact this row descends from (itself included), if any."""
    named = _by_name(rows)
    node: dict[str, Any] | None = row
    while node is not None:
        if node["step"] in STUDENT_STEPS:
            return node
        node = named.get(node.get("parent") or "")
    return None


def front(rows: list[dict[str, Any]], cost: str) -> list[str]:
    """Deployable rows no other deployable row beats on both accuracy and `cost`.

    `cost` is "latency" (p50) or "size"; ties on both count as not dominated.
    """
    key = _p50 if cost == "latency" else _size
    deployable = [r for r in rows if r["candidate"]]
    out = []
    for r in deployable:
        acc, c = quality(r), key(r)
        dominated = any(
            quality(o) >= acc and key(o) <= c and (quality(o) > acc or key(o) < c)
            for o in deployable)
        if not dominated:
            out.append(r["name"])
    return out


def candidates(rows: list[dict[str, Any]], prefer: str) -> list[dict[str, Any]]:
    """One line per trained student: its training, and its best deployable descendant."""
    out = []
    for student in (r for r in rows if r["step"] in STUDENT_STEPS):
        family = [r for r in rows if r["candidate"] and student_of(r, rows) is student]
        passing = [r for r in family if r["passed"]]
        pick = choose_row(passing or family, prefer)
        info = student["info"]
        training = info.get("training", {})
        out.append({
            "student": student["name"],
            "variant": student.get("variant", ""),
            "method": info.get("method", student["step"]),
            "params": info.get("params"),
            "labeled": info.get("labeled"),
            "unlabeled": info.get("unlabeled"),
            "epochs": training.get("epoch"),
            "best_epoch": training.get("best_epoch"),
            "best_val_accuracy": training.get("best_val"),
            "stopped_early": training.get("stopped_early"),
            "resumed_from": training.get("resumed_from"),
            "student_accuracy": quality(student),
            "best_artifact": pick["name"] if pick else None,
            "best_passed": bool(pick and pick["passed"]),
            "accuracy": quality(pick) if pick else None,
            "p50_ms": _p50(pick) if pick else None,
            "size_bytes": _size(pick) if pick else None,
        })
    return out


def choose_row(rows: list[dict[str, Any]], prefer: str) -> dict[str, Any] | None:
    """The row the gates' rule would pick among `rows`."""
    return min(rows, key=lambda r: cost(_p50(r), _size(r), r["name"], prefer), default=None)


def teacher_student(rows: list[dict[str, Any]], ship: str | None) -> dict[str, Any] | None:
    """The teacher (the source) beside the shipped student, with ratios from this run.

    The teacher is also compared in its best deployable form (its fastest ONNX artifact
    outside any student's line), so the speed-up is not just a runtime change.
    """
    named = _by_name(rows)
    shipped = named.get(ship or "")
    if shipped is None or student_of(shipped, rows) is None:
        return None
    teacher = rows[0]
    own = [r for r in rows if r["candidate"] and student_of(r, rows) is None]
    teacher_onnx = choose_row(own, "speed")

    def params(r: dict[str, Any] | None) -> int | None:
        """Conversions keep the network: the nearest ancestor that counted its weights."""
        while r is not None and r["info"].get("params") is None:
            r = named.get(r.get("parent") or "")
        return None if r is None else r["info"]["params"]

    def side(r: dict[str, Any]) -> dict[str, Any]:
        return {"name": r["name"], "kind": r["kind"], "accuracy": quality(r),
                "p50_ms": _p50(r), "size_bytes": _size(r), "params": params(r)}

    out: dict[str, Any] = {"teacher": side(teacher), "student": side(shipped),
                           "accuracy_delta": round(quality(shipped) - quality(teacher), 3)}
    against = {"teacher": teacher}
    if teacher_onnx is not None:
        out["teacher_onnx"] = side(teacher_onnx)
        against["teacher_onnx"] = teacher_onnx
    for label, ref in against.items():
        out[f"speedup_vs_{label}"] = round(_p50(ref) / max(_p50(shipped), 1e-9), 2)
        out[f"smaller_vs_{label}"] = round(_size(ref) / max(_size(shipped), 1), 2)
    return out
