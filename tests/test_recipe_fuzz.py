"""Property-based tests over the recipe schema: any YAML either loads as a Recipe or is
refused as a RecipeError naming the file (and a line where the key exists); nothing else."""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from optimizer.errors import RecipeError
from optimizer.recipe.load import load_recipe
from optimizer.recipe.schema import Recipe

BASE = {
    "name": "fuzz",
    "source": {"kind": "architecture", "architecture": "MobileNetV2", "alpha": 0.35,
               "input_size": 32, "train": {"epochs": 1}},
    "dataset": {"kind": "sklearn-digits", "split": {"test": 0.2, "val": 0.1, "seed": 0}},
    "target": {"name": "x86_64", "runtime": "python3.12", "memory_mb": 1769},
    "steps": [{"step": "export_onnx", "name": "fp32"},
              {"step": "quantize", "name": "int8", "calibration_samples": 16},
              {"step": "tflite", "name": "lite", "input": "source"}],
    "validate": {"max_accuracy_drop": 1.0, "latency": {"warmup": 1, "runs": 5}},
    "package": {"zip": {"layers": 1}},
    "runtimes": {"candidates": ["onnxruntime", "litert"], "targets": ["arm64"]},
}

scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**12, 10**12),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30),
                    st.sampled_from(["onnx", "keras", "../x", "/etc", "x86_64", "arm64",
                                     "tflite", "int8", "python3.12", "source", "fp32"]))
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)),
    max_leaves=12)


def _paths(doc, prefix=()):
    yield prefix
    if isinstance(doc, dict):
        for k, v in doc.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            yield from _paths(v, (*prefix, i))


ALL_PATHS = [p for p in _paths(BASE) if p]


@st.composite
def mutated(draw):
    doc = copy.deepcopy(BASE)
    for _ in range(draw(st.integers(1, 4))):
        path = draw(st.sampled_from(ALL_PATHS))
        parent = doc
        try:
            for part in path[:-1]:
                parent = parent[part]
            op = draw(st.sampled_from(["replace", "delete", "add"]))
            if op == "replace":
                parent[path[-1]] = draw(values)
            elif op == "delete" and isinstance(parent, dict):
                parent.pop(path[-1], None)
            elif isinstance(parent, dict):
                parent[draw(st.text(min_size=1, max_size=12))] = draw(values)
        except (KeyError, IndexError, TypeError):
            continue  # an earlier mutation removed or replaced the way there
    return doc


def _resolve(doc, dotted: str):
    """The key path of an error in the document, or None where it does not exist there."""
    node, parts = doc, []
    for part in dotted.split("."):
        key = int(part) if isinstance(node, list) and part.isdigit() else part
        try:
            node = node[key]
        except (KeyError, IndexError, TypeError):
            return None
        parts.append(key)
    return parts


def _check(path: Path, doc=None) -> Recipe | None:
    """Loads, or is refused with the file, a message, and (for a key the document has) the
    line that key is on."""
    try:
        return load_recipe(path)
    except RecipeError as exc:
        assert str(exc).startswith(str(path)), str(exc)
        lines = path.read_text().splitlines()
        for err in (exc, *exc.also):
            assert err.message.strip(), "an empty error message"
            keys = _resolve(doc, err.path) if doc is not None and err.path else None
            if not keys or not isinstance(keys[-1], str):
                continue
            assert err.line is not None, f"{err.first}: no line for a key the file has"
            dumped = yaml.safe_dump({keys[-1]: None}, allow_unicode=True).rsplit(":", 1)[0]
            text = re.sub(r"^(- )+", "", lines[err.line - 1].lstrip(" "))
            if "\n" in dumped:  # a key YAML writes over several lines starts with "? "
                dumped = "?"
            assert text.startswith(dumped), f"{err.first}: line {err.line} is {text!r}"
        return None


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(doc=mutated())
def test_mutated_recipes_load_or_are_refused_with_a_location(tmp_path_factory, doc):
    path = tmp_path_factory.mktemp("r") / "recipe.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False, allow_unicode=True))
    recipe = _check(path, doc)
    if recipe is not None:  # what loads is canonical: dumping and reloading gives the same
        again = path.with_name("again.yaml")
        again.write_text(yaml.safe_dump(json.loads(recipe.canonical_json()), sort_keys=False))
        assert load_recipe(again).canonical_json() == recipe.canonical_json()


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=400))
def test_arbitrary_text_is_never_a_crash(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("t") / "recipe.yaml"
    path.write_text(text)
    _check(path)


def test_the_unmutated_base_loads():
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "r.yaml"
        path.write_text(yaml.safe_dump(BASE))
        recipe = load_recipe(path)
        assert recipe.compared_targets() == ["x86_64", "arm64"]
