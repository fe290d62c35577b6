"""Cache keys follow the code: edit a module a result depends on, even two imports away,
and the next build makes it again; edit one nothing depends on, and it reuses everything.

Builds run from a copy of the package (PYTHONPATH), edited between builds, with one cache.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from conftest import keras_recipe

import optimizer

STEPS = """
- step: export_onnx
  name: fp32
- step: quantize
  name: int8
  calibration_samples: 32
"""


def _build(src: Path, recipe: Path, out: Path, cache: Path) -> tuple[dict, str]:
    env = {**os.environ, "PYTHONPATH": str(src)}
    proc = subprocess.run([sys.executable, "-m", "optimizer", "build", str(recipe), "--out",
                           str(out), "--cache-dir", str(cache), "--json"],
                          capture_output=True, text=True, env=env, cwd=src)
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(proc.stdout)
    assert doc["tool"]["version"] == optimizer.__version__
    return doc, proc.stderr


def _edit(path: Path) -> None:
    path.write_text(path.read_text() + "\n# an edit that changes no behaviour\n")


def test_an_edit_two_imports_away_measures_again_and_an_unrelated_one_reuses_all(
        tmp_path, tiny_keras, zip_build):
    src = tmp_path / "src"
    shutil.copytree(Path(optimizer.__file__).parent, src / "optimizer",
                    ignore=shutil.ignore_patterns("__pycache__"))
    recipe = keras_recipe(tmp_path, tiny_keras, name="keys", steps=STEPS)
    # the suite's cache: the copy is the same code, so what the suite made is reused
    cache = zip_build[0] / "cache"
    first, log = _build(src, recipe, tmp_path / "out", cache)
    assert first["cache"]["hits"] > 0 and "cached fp32 (export_onnx <- source)" in log

    # the ONNX Runtime session helper: no step or measurement names it, all go through it
    _edit(src / "optimizer" / "inference" / "onnx.py")
    second, log = _build(src, recipe, tmp_path / "out", cache)
    for again in ("run    fp32 (export_onnx <- source)", "measure accuracy of fp32",
                  "measure accuracy of int8", "measure load time of fp32"):
        assert again in log, f"not made again after the edit: {again}\n{log}"
    assert second["cache"]["misses"] > 0
    # the same code path gives the same models: the edit changed no behaviour
    assert [a["sha256"] for a in second["artifacts"]] == [a["sha256"] for a in
                                                          first["artifacts"]]

    # the CLI and a report renderer: nothing the build caches depends on them
    _edit(src / "optimizer" / "cli.py")
    _edit(src / "optimizer" / "report" / "markdown.py")
    third, log = _build(src, recipe, tmp_path / "out", cache)
    assert third["cache"]["misses"] == 0 and third["cache"]["all_cached"], log
    assert third["cache"]["hits"] == second["cache"]["hits"] + second["cache"]["misses"]
