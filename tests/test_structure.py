"""The shape of the code: no import cycles (every import counts: function-local and
type-only ones too), and cache keys that follow the imports."""

from __future__ import annotations

import sys

from optimizer import codekey


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    sys.setrecursionlimit(10_000)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while (w := stack.pop()) != v:
                on.discard(w)
                comp.append(w)
            on.discard(v)
            comp.append(v)
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in edges:
        if v not in index:
            visit(v)
    return out


def graph() -> dict[str, set[str]]:
    return {m: set(codekey.imports(m)) for m in codekey.modules()}


def test_no_import_cycles():
    edges = graph()
    cycles = _cycles(edges)
    shown = ["; ".join(f"{a} -> {b}" for a in c for b in sorted(edges[a]) if b in c)
             for c in cycles]
    assert not cycles, "import cycles:\n" + "\n".join(shown)


def test_the_cycle_finder_finds_one():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(edges) == [["a", "b", "c"]]


def test_packages_do_not_import_upwards():
    """The data's order is the import order: the engine at the top, records at the bottom,
    and the function's own code (handler) importing nothing of the tool."""
    edges = graph()
    below_all = ("optimizer.artifact", "optimizer.model", "optimizer.handler")
    for m, deps in edges.items():
        if m.startswith(below_all):
            upward = sorted(d for d in deps if d.startswith(("optimizer.build",
                                                             "optimizer.cli")))
            assert not upward, f"{m} imports {upward}"
        if m.startswith("optimizer.handler"):
            outside = sorted(d for d in deps if not d.startswith("optimizer.handler"))
            assert not outside, f"{m} (shipped in every package) imports {outside}"
    for m in edges:
        if m.startswith("optimizer.") and not m.startswith(("optimizer.build", "optimizer.cli",
                                                           "optimizer.__main__")):
            up = sorted(d for d in edges[m] if d.startswith("optimizer.build"))
            assert not up, f"{m} imports the engine: {up}"


def test_a_results_code_is_what_its_function_imports():
    measured = codekey.closure(["optimizer.measure.accuracy"])
    # accuracy runs through the ONNX Runtime session helper and the handler's loaders
    assert {"optimizer.inference.onnx", "optimizer.inference.predict",
            "optimizer.handler.engines", "optimizer.data.dataset"} <= set(measured)
    for fn in ("optimizer.measure.accuracy", "optimizer.measure.latency",
               "optimizer.steps.quantize", "optimizer.steps.student",
               "optimizer.sources.architecture", "optimizer.package.lambda_zip"):
        deps = set(codekey.closure([fn]))
        assert not deps & {"optimizer.cli", "optimizer.report.markdown",
                           "optimizer.build.run"}, fn
    # a subprocess's module counts too: the latency worker
    assert "optimizer.measure.latency_worker" in codekey.closure(["optimizer.measure.latency"])
    assert "optimizer.sources.mxnet.worker" in codekey.closure(["optimizer.sources.mxnet_model"])
    assert codekey.digest("optimizer.measure.accuracy") != codekey.digest(
        "optimizer.measure.latency")


def test_code_of_names_only_our_code():
    import json

    import pytest

    from optimizer.measure.accuracy import test_scores

    assert codekey.code_of(test_scores) == codekey.digest("optimizer.measure.accuracy")
    with pytest.raises(ValueError, match="not code of the optimizer package"):
        codekey.code_of(json.dumps)
