"""Runtime candidates: LiteRT conversion, the per-target comparison, and shipping the winner."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path
from textwrap import dedent

import numpy as np
import pytest
from conftest import digits_16, keras_recipe

from optimizer.handler.engines import load

STEPS = """
- step: export_onnx
  name: fp32
- step: tflite
  name: tflite
  input: source
- step: tflite
  name: tflite-int8
  input: source
  quantize: int8
  calibration_samples: 64
"""


def build(recipe: Path, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "optimizer", "build", str(recipe), "--out",
                           str(out)], capture_output=True, text=True)


@pytest.fixture
def shared_cache(tmp_path_factory, monkeypatch, zip_build) -> Path:
    """One cache for this module's builds of the same steps, which starts from the suite's
    built zip's (the target's onnxruntime wheels are there): models and measurements made
    once are reused, as a user's second build would."""
    root = zip_build[0] / "cache"
    monkeypatch.setenv("OPTIMIZER_CACHE", str(root))
    return root


def shipped_manifest(out: Path) -> dict:
    with zipfile.ZipFile(out / "package" / "function.zip") as z:
        return json.loads(z.read("model/package.json"))


def test_litert_runs_the_converted_model_like_keras_at_any_batch(tmp_path, tiny_keras,
                                                                 shared_cache):
    import keras

    out = tmp_path / "out"
    recipe = keras_recipe(tmp_path, tiny_keras, steps=STEPS)
    proc = build(recipe, out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    report = json.loads((out / "report.json").read_text())
    arts = {a["name"]: a for a in report["artifacts"]}
    assert arts["tflite"]["kind"] == "tflite" and arts["tflite-int8"]["candidate"]
    assert arts["tflite"]["info"]["parity_max_abs_diff"] <= 1e-4
    assert "QUANTIZE" in arts["tflite-int8"]["info"]["ops"]  # int8 inside, float at the edges
    _, _, x, _ = digits_16()
    expected = keras.saving.load_model(tiny_keras)(x[:5]).numpy()
    run = load("litert", out / arts["tflite"]["file"], threads=1)
    for batch in (1, 5, 2):  # the interpreter is resized whenever the batch changes
        np.testing.assert_allclose(run(x[:batch]), expected[:batch], atol=1e-4)


def test_the_comparison_times_every_runtime_per_target_and_ships_the_winner(
        tmp_path, tiny_keras, shared_cache):
    if shutil.which("qemu-aarch64") is None or shutil.which("debootstrap") is None:
        pytest.skip("needs qemu-user and debootstrap for the arm64 timing")
    out = tmp_path / "out"
    recipe = keras_recipe(tmp_path, tiny_keras, steps=STEPS, tail=dedent("""
        package:
          zip: {layers: 1}
        runtimes:
          candidates: [onnxruntime, litert, openvino, tensorflow, intel-tensorflow]
          targets: [arm64]
          emulated_runs: 5
        """))
    proc = build(recipe, out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    section = report["runtimes"]
    x86, arm = section["targets"]["x86_64"], section["targets"]["arm64"]
    assert {r["runtime"] for r in x86["best_per_runtime"]} == {
        "onnxruntime", "litert", "openvino", "tensorflow", "intel-tensorflow"}
    # TensorFlow cannot fit a zip: ruled out from its wheels' sizes, never downloaded
    for t in (x86, arm):
        tf = next(r for r in t["best_per_runtime"] if r["runtime"] == "tensorflow")
        assert not tf["fits"] and "not downloaded" in tf["fit_note"], tf
        assert tf["package_bytes"] > 250 * 2**20 and tf["package_bytes_lower_bound"]
    labels = [json.loads(e.read_text())["meta"].get("label", "")
              for e in shared_cache.glob("objects/*/*/entry.json")]
    assert not any(lb.startswith("dependencies tensorflow") for lb in labels), labels
    # the winner is the fastest row that passed, fits and was timed, and it is what shipped
    ok = [r for r in x86["rows"] if r.get("passed") and r.get("fits") and r.get("p50_ms")]
    assert x86["winner"]["p50_ms"] == min(r["p50_ms"] for r in ok)
    assert shipped_manifest(out)["engine"] == x86["winner"]["runtime"] == report["ship_runtime"]
    assert report["ship"] == x86["winner"]["artifact"]
    assert report["packages"][0]["proof"]["isa"]["emulator"] == "qemu-x86_64 -cpu Haswell"
    # OpenVINO ran the same ONNX file, with its own accuracy and time in the same rounds
    ov = next(r for r in x86["rows"] if r["key"] == "fp32 [openvino]")
    assert ov["accuracy"] is not None and ov["p50_ms"] > 0 and ov["available"]
    # ... but its wheel alone deflates to more than one 50 MB layer zip may hold
    assert not ov["fits"] and "upload limit" in ov["fit_note"]
    # Intel's TensorFlow has no build for the recipe's Python; pip's answer is the reason
    itf = next(r for r in x86["best_per_runtime"] if r["runtime"] == "intel-tensorflow")
    assert not itf["available"] and "3.12" in itf["why_not"]
    assert "built for x86_64 only" in next(
        r for r in arm["best_per_runtime"] if r["runtime"] == "intel-tensorflow")["why_not"]
    # arm64: sizes from aarch64 wheels, times under qemu as Neoverse N1
    assert arm["timing"].startswith("emulated (qemu-aarch64 -cpu neoverse-n1")
    timed = [r for r in arm["rows"] if r.get("p50_ms")]
    assert {r["runtime"] for r in timed} >= {"onnxruntime", "litert"}
    assert all(r["isa_cap"]["applied"] for r in timed)
    assert arm["winner"] in timed
    lite = next(r for r in arm["rows"] if r["key"] == "tflite")
    assert lite["package_bytes"] < next(
        r for r in arm["rows"] if r["key"] == "fp32")["package_bytes"] * 4
    md = (out / "report.md").read_text()
    assert "## Runtimes" in md and "### arm64" in md and "**Winner:**" in md


def test_a_litert_zip_ships_and_is_proved(tmp_path, tiny_keras, shared_cache):
    """With LiteRT the only candidate it wins: its zip must run natively and as Haswell."""
    out = tmp_path / "out"
    recipe = keras_recipe(tmp_path, tiny_keras, steps=STEPS, tail=dedent("""
        package:
          zip: {layers: 1}
        runtimes:
          candidates: [litert]
        """))
    proc = build(recipe, out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["ship_runtime"] == "litert" and report["ship"].startswith("tflite")
    manifest = shipped_manifest(out)
    assert manifest["engine"] == "litert" and manifest["model"] == "model.tflite"
    pkg = report["packages"][0]
    assert pkg["proof"]["label"] == pkg["proof"]["expected"]
    assert pkg["proof"]["isa"]["label"] == pkg["proof"]["expected"]  # under Haswell too
    deps = set(pkg["slim"]["by_distribution"])
    assert "ai_edge_litert" in deps and "onnxruntime" not in deps, deps


def test_bad_runtime_sections_are_refused_with_their_line(tmp_path, tiny_keras, cache_env):
    recipe = keras_recipe(tmp_path, tiny_keras, steps=STEPS, tail=dedent("""
        runtimes:
          candidates: [tvm]
        """))
    proc = build(recipe, tmp_path / "out")
    assert proc.returncode == 2
    assert "runtimes.candidates.0" in proc.stderr and "unknown inference engine 'tvm'" \
        in proc.stderr
    wrong = keras_recipe(tmp_path, tiny_keras, name="wrong",
                         steps="- step: export_onnx\n  name: fp32\n- step: tflite\n")
    proc = build(wrong, tmp_path / "out2")
    assert proc.returncode == 2
    assert "tflite needs a tf model but 'fp32' gives onnx" in proc.stderr
    assert not (tmp_path / "out").exists() and not (tmp_path / "out2").exists()


def test_fit_follows_the_layer_split_and_names_what_is_too_big():
    from optimizer.select.engines import fits

    mib = 2**20
    unz = {"big": 120 * mib, "other": 100 * mib}
    zipped = {"big": 30 * mib, "other": 28 * mib}
    assert fits(225 * mib, 2, unz, zipped, mib) == ""  # one distribution per layer
    one = fits(225 * mib, 1, unz, zipped, mib)
    assert "58.0 MiB zipped" in one and "with 1 layer(s)" in one
    alone = fits(225 * mib, 5, unz, {"big": 55 * mib, "other": 1}, mib)
    assert "big alone is 55.0 MiB zipped" in alone  # a distribution is never split
    assert "over Lambda's 250 MiB" in fits(251 * mib, 5, unz, zipped, mib)
    assert fits(5 * 2**30, None, unz, zipped, mib) == ""  # an image holds it
    assert "10 GiB" in fits(11 * 2**30, None, unz, zipped, mib)
    # no layers: the model and handler share the function zip with every dependency
    assert fits(60 * mib, 0, {"a": 50 * mib}, {"a": 45 * mib}, 6 * mib) != ""


def test_the_winner_is_the_fastest_row_that_passed_fits_and_was_timed():
    from optimizer.select.engines import best_per_engine, choose, why_not

    rows = [
        {"key": "a", "runtime": "onnxruntime", "available": True, "passed": True, "fits": True,
         "p50_ms": 0.3, "package_bytes": 100},
        {"key": "b", "runtime": "litert", "available": True, "passed": False, "fits": True,
         "p50_ms": 0.1, "package_bytes": 90, "failed_gates": ["max_accuracy_drop"]},
        {"key": "c", "runtime": "openvino", "available": True, "passed": True, "fits": False,
         "p50_ms": 0.05, "package_bytes": 300, "fit_note": "too big"},
        {"key": "d", "runtime": "litert", "available": True, "passed": True, "fits": True,
         "p50_ms": None, "package_bytes": 80, "latency_note": "not timed"},
        {"key": "e", "runtime": "intel-tensorflow", "available": False, "reason": "no wheel"},
    ]
    assert choose(rows, "speed")["key"] == "a"
    assert choose(rows, "size")["key"] == "a"  # d is smaller but has no time
    best = {r["runtime"]: r for r in best_per_engine(rows, "speed")}
    assert why_not(best["openvino"]) == "too big"
    assert why_not(best["intel-tensorflow"]) == "no wheel"
    assert why_not(best["litert"]) == "not timed"  # closer than one that failed the gates
    assert choose([r for r in rows if r["key"] != "a"], "speed") is None
