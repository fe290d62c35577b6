"""Recipe errors: one line naming file, line and key path; exit code 2; nothing built."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from optimizer.cli import app
from optimizer.errors import RecipeError
from optimizer.recipe.load import load_recipe
from tests.conftest import write_recipe

runner = CliRunner()

GOOD = """
name: demo
source:
  kind: architecture
  architecture: MobileNetV2
  alpha: 0.35
  input_size: 32
dataset:
  kind: sklearn-digits
steps:
  - step: export_onnx
  - step: quantize
    name: int8
validate:
  max_accuracy_drop: 1.0
"""


def _error(tmp_path: Path, body: str) -> RecipeError:
    path = write_recipe(tmp_path, body)
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    return info.value


def test_good_recipe_resolves_names_and_inputs(tmp_path):
    recipe = load_recipe(write_recipe(tmp_path, GOOD))
    assert [s.name for s in recipe.steps] == ["export_onnx", "int8"]
    assert [s.input for s in recipe.steps] == ["source", "export_onnx"]
    assert recipe.target.threads == 1


@pytest.mark.parametrize(
    ("old", "new", "line", "path", "words"),
    [
        ("  alpha: 0.35", "  alpha: wide", 5, "source.alpha", "valid number"),
        ("  max_accuracy_drop: 1.0", "  max_acuracy_drop: 1.0", 14, "validate.max_acuracy_drop",
         "did you mean 'max_accuracy_drop'"),
        ("    name: int8", "    name: int8\n    mode: fast", 13, "steps.1.mode",
         "'static' or 'dynamic'"),
        ("  - step: quantize", "  - step: prune", 11, "steps.1.step", "unknown step 'prune'"),
        ("  kind: sklearn-digits", "  kind: npz\n  path: nowhere.npz", 9, "dataset.path",
         "file not found"),
        ("  architecture: MobileNetV2", "  architecture: MobileNetV9", 4, "source.architecture",
         "MobileNetV2"),
        ("  - step: export_onnx\n", "", 10, "steps.0.step", "add an export_onnx step first"),
        ("name: demo", "name: ../escape", 1, "name", "pattern"),
        ("  input_size: 32", "  input_size: 32\n  alpha: 0.5", 7, "source.alpha",
         "duplicate key"),
        ("  kind: sklearn-digits", "  kind: sklearn-digits\n  splt: {test: 0.3}", 9,
         "dataset.splt", "did you mean 'split'"),
        ("    name: int8", "    name: int8\n    calibration_sample: 9", 13,
         "steps.1.calibration_sample", "did you mean 'calibration_samples'"),
    ],
)
def test_malformed_recipe_names_file_line_and_key(tmp_path, old, new, line, path, words):
    body = GOOD.replace(old, new, 1)
    assert body != GOOD
    err = _error(tmp_path, body)
    assert err.line == line, str(err)
    assert err.path == path, str(err)
    assert words in err.message, str(err)
    assert str(err).startswith(f"{tmp_path / 'recipe.yaml'}:{line}: {path}: ")
    assert "\n" not in str(err)


def test_step_input_must_be_earlier(tmp_path):
    body = GOOD.replace("    name: int8", "    name: int8\n    input: later")
    err = _error(tmp_path, body)
    assert (err.path, err.line) == ("steps.1.input", 13)
    assert "not an earlier step" in err.message


def test_source_keras_missing_file(tmp_path):
    body = GOOD.replace(
        "  kind: architecture\n  architecture: MobileNetV2\n  alpha: 0.35\n  input_size: 32",
        "  kind: keras\n  path: missing.keras",
    )
    err = _error(tmp_path, body)
    assert (err.path, err.line) == ("source.path", 4)
    assert "file not found" in err.message and "missing.keras" in err.message


def test_invalid_yaml_and_empty_file(tmp_path):
    err = _error(tmp_path, "name: [unclosed\nsource: 1\n")
    assert err.line is not None and "invalid YAML" in err.message
    err = _error(tmp_path, "\n")
    assert "empty" in err.message


def test_yaml_alias_bomb_is_refused(tmp_path):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for i in range(1, 9):
        lines.append(f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]")
    err = _error(tmp_path, "\n".join(lines) + "\n")
    assert "alias bomb" in err.message


@pytest.mark.parametrize("command", ["check", "build"])
def test_cli_bad_recipe_exits_2_with_one_line(tmp_path, command):
    path = write_recipe(tmp_path, GOOD.replace("  alpha: 0.35", "  alpha: wide"))
    result = runner.invoke(app, [command, str(path)])
    assert result.exit_code == 2
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1
    assert re.match(rf"error: {re.escape(str(path))}:5: source\.alpha: ", lines[0])


def test_cli_missing_recipe_file(tmp_path):
    result = runner.invoke(app, ["check", str(tmp_path / "nope.yaml")])
    assert result.exit_code == 2
    assert "nope.yaml: recipe file not found" in result.output


def test_cli_check_json_and_schema(tmp_path):
    path = write_recipe(tmp_path, GOOD)
    result = runner.invoke(app, ["check", str(path), "--json"])
    assert result.exit_code == 0
    doc = json.loads(result.output)
    assert doc["ok"] and doc["steps"] == ["export_onnx", "int8"]
    schema = json.loads(runner.invoke(app, ["schema"]).output)
    assert "validate" in schema["properties"] and "steps" in schema["properties"]


def test_shipped_recipes_are_valid():
    shipped = sorted((Path(__file__).resolve().parent.parent / "recipes").glob("*.yaml"))
    assert len(shipped) >= 6, shipped
    for path in shipped:
        assert load_recipe(path).name == path.stem
