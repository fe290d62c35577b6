"""The example CI workflow, run locally step by step, and the manifest it verifies."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from textwrap import dedent

import yaml
from conftest import keras_recipe

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / "examples" / "ci" / "optimizer-build.yml"


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "optimizer", *args], capture_output=True,
                          text=True)


def test_the_example_workflow_runs_locally_and_verify_catches_one_changed_byte(
        tmp_path, tiny_keras, zip_build):
    flow = yaml.safe_load(WORKFLOW.read_text())
    steps = flow["jobs"]["build"]["steps"]
    runs = [s for s in steps if "run" in s]
    assert [s["name"].split()[0] for s in runs] == ["Install", "Check", "Build", "Check",
                                                   "Verify"]
    recipe = keras_recipe(tmp_path, tiny_keras, steps="- step: export_onnx\n  name: fp32\n",
                          tail=dedent("""
                              package:
                                zip: {layers: 1}
                              """))
    work = tmp_path / "checkout"
    work.mkdir()
    env = {**os.environ, **flow["env"], "RECIPE": str(recipe),
           # the same install command, of this checkout, without touching its dependencies
           "OPTIMIZER_PACKAGE": f"-e {ROOT}", "PIP_NO_DEPS": "1",
           # the suite's shared cache, as CI keeps ~/.cache/optimizer between runs
           "OPTIMIZER_CACHE": str(zip_build[0] / "cache")}
    bindir = Path(sys.executable).parent  # the `optimizer` script pip puts beside python
    env["PATH"] = f"{bindir}{os.pathsep}{env['PATH']}"
    for step in runs:
        proc = subprocess.run(["bash", "-e", "-o", "pipefail", "-c", step["run"]], cwd=work,
                              env=env, capture_output=True, text=True)
        assert proc.returncode == 0, f"{step['name']}:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
    out = work / flow["env"]["OUT"]
    build = json.loads((work / "build.json").read_text())
    assert build["ok"] and build["exit_code"] == 0 and build["ship"] == "fp32"
    manifest = json.loads((out / "manifest.json").read_text())
    listed = {e["path"]: e for e in manifest["artifacts"]}
    assert {"fp32.onnx", "report.json", "package/function.zip", "package/layer-1.zip",
            "preprocess.json", "labels.json"} <= set(listed)
    assert listed["fp32.onnx"]["kind"] == "model/onnx"
    assert listed["fp32.onnx"]["validation"]["shipped"]
    assert listed["package/function.zip"]["validation"]["proved"]
    assert manifest["recipe"]["digest"] == build["recipe"]["digest"]
    assert manifest["libraries"]["onnxruntime"] and manifest["target"]["name"] == "x86_64"

    # one byte changed: verify names the file and exits 1
    model = out / "fp32.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0x01
    model.write_bytes(bytes(data))
    proc = cli("verify", str(out / "manifest.json"))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FAIL fp32.onnx: sha256" in proc.stdout
    data[len(data) // 2] ^= 0x01
    model.write_bytes(bytes(data))
    assert cli("verify", str(out)).returncode == 0
    # a file the manifest does not list is a failure too, and so is a missing one
    (out / "package" / "extra.zip").write_bytes(b"PK")
    doc = json.loads(cli("verify", str(out), "--json").stdout)
    assert not doc["ok"] and doc["unlisted"] == ["package/extra.zip"]
    (out / "package" / "extra.zip").unlink()
    (out / "labels.json").unlink()
    doc = json.loads(cli("verify", str(out), "--json").stdout)
    assert doc["problems"] == [{"path": "labels.json", "problem": "missing"}]


def test_verify_refuses_what_is_not_a_manifest(tmp_path):
    bad = tmp_path / "m.json"
    for text, expect in [
        ("{", "not a readable JSON manifest"),
        ('{"format": 9, "artifacts": []}', "not an optimizer manifest"),
        ('{"format": 1, "artifacts": [{"path": "../../etc/passwd", "sha256": "0", '
         '"bytes": 1}]}', "relative 'path' inside the folder"),
        ('{"format": 1, "artifacts": [{"path": "/etc/passwd", "sha256": "0", "bytes": 1}]}',
         "relative 'path' inside the folder"),
    ]:
        bad.write_text(text)
        proc = cli("verify", str(bad))
        assert proc.returncode == 2 and expect in proc.stderr, (text, proc.stderr)
    proc = cli("verify", str(tmp_path / "nope.json"))
    assert proc.returncode == 2 and "no such manifest" in proc.stderr
