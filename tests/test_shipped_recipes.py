"""README line 1 as a user runs it: `optimizer build recipes/mobilenet-lambda.yaml` from an
empty cache, then the function it ships. Slow (about 8 minutes on 2 cores): deselected by
default, run with `python3 -m pytest -m slow`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.test_template import lint

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.slow


def test_the_main_recipe_ships_a_small_fast_correct_function(tmp_path):
    env = {**os.environ, "OPTIMIZER_CACHE": str(tmp_path / "cache")}
    out = tmp_path / "out"

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "optimizer", *args], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=3600)

    built = run("build", "recipes/mobilenet-lambda.yaml", "--out", str(out), "--json")
    assert built.returncode == 0, built.stderr[-3000:]
    r = json.loads(built.stdout)
    by = {a["name"]: a for a in r["artifacts"]}
    ship = by[r["ship"]]
    assert "@MobileNetV2" in r["ship"]  # a student, not the teacher
    assert ship["validation"]["accuracy"] >= 95
    assert by["source"]["validation"]["accuracy"] - ship["validation"]["accuracy"] <= 1.0
    zips = [p for p in r["packages"] if p["kind"] in ("zip", "layer")]
    fn = next(p for p in zips if p["kind"] == "zip")
    assert sum(p["zipped_bytes"] for p in zips) < 30 * 2**20
    assert sum(p["unzipped_bytes"] for p in zips) < 100 * 2**20
    proof = fn["proof"]  # every class named as the build names it, and under Haswell
    assert proof["label"] == proof["expected"] and proof["init_breakdown"]["warmup_ms"] > 0
    if "emulator" in proof["isa"]:
        assert proof["isa"]["label"] == proof["label"]
    assert lint((out / "package" / "template.yaml").read_text()) == []
    inv = run("invoke", str(out), "--json")
    assert inv.returncode == 0, inv.stderr[-2000:]
    body = json.loads(json.loads(inv.stdout)["response"]["body"])
    assert body["predictions"][0]["top"][0]["label"] in r["classes"]
    assert run("verify", str(out / "manifest.json")).returncode == 0


def test_fashion_distill_ships_a_student_near_its_teacher(tmp_path):
    """recipes/fashion-distill.yaml (about 20 minutes: left out of CI's recipe builds)."""
    if not Path("/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz").is_file():
        pytest.skip("no Fashion-MNIST: apt-get install dataset-fashion-mnist")
    env = {**os.environ, "OPTIMIZER_CACHE": str(tmp_path / "cache")}
    built = subprocess.run([sys.executable, "-m", "optimizer", "build",
                            "recipes/fashion-distill.yaml", "--out", str(tmp_path / "out"),
                            "--json"], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=7200)
    assert built.returncode == 0, built.stderr[-3000:]
    r = json.loads(built.stdout)
    by = {a["name"]: a for a in r["artifacts"]}
    ship = by[r["ship"]]
    assert r["ship"].startswith(("fp32", "int8")) and r["dataset"]["splits"]["test"] == 10000
    assert by["source"]["validation"]["accuracy"] - ship["validation"]["accuracy"] <= 3.0
    assert r["teacher_student"]["speedup_vs_teacher_onnx"] > 1
