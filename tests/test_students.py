"""Swap and distill: the training pieces in isolation, then candidates through the CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from typer.testing import CliRunner

from optimizer.cli import app
from optimizer.errors import RecipeError
from optimizer.recipe.load import load_recipe
from optimizer.steps.student import labeled_mask
from optimizer.train.augment import shift_zoom
from optimizer.train.teacher import as_logits
from tests.conftest import keras_recipe, write_recipe

runner = CliRunner()


# --- pieces ---------------------------------------------------------------------------


def test_shift_zoom_is_seeded_and_fills_from_outside():
    x = np.ones((8, 12, 12, 1), np.float32)
    assert shift_zoom(x, 0.0, np.random.default_rng(0)) is x
    a = shift_zoom(x, 0.3, np.random.default_rng(1), fill=-5.0)
    b = shift_zoom(x, 0.3, np.random.default_rng(1), fill=-5.0)
    assert a.shape == x.shape and a.dtype == x.dtype
    np.testing.assert_array_equal(a, b)
    assert set(np.unique(a)) <= {1.0, -5.0} and (a == -5.0).any()  # some border came in
    # a pure shift moves content: the centre pixel of a ramp image changes for some images
    ramp = np.tile(np.arange(12, dtype=np.float32)[None, :, None, None], (8, 1, 12, 1))
    moved = shift_zoom(ramp, 0.3, np.random.default_rng(2))
    assert (moved[:, 6, 6, 0] != ramp[:, 6, 6, 0]).any()


def test_labeled_mask_is_class_balanced_and_seeded():
    labels = np.repeat(np.arange(10), [50, 40, 30, 20, 10, 5, 5, 5, 5, 3])
    mask = labeled_mask(labels, 0.1, seed=0)
    assert np.array_equal(mask, labeled_mask(labels, 0.1, seed=0))
    assert not np.array_equal(mask, labeled_mask(labels, 0.1, seed=1))
    per_class = np.bincount(labels[mask], minlength=10)
    assert per_class.tolist() == [5, 4, 3, 2, 1, 1, 1, 1, 1, 1]  # at least one each
    assert labeled_mask(labels, 1.0, seed=0).all()


def test_objective_terms():
    import keras

    from optimizer.train.loop import Objective

    logits = np.array([[2.0, 0.0, -1.0], [0.5, 0.5, 3.0]], np.float32)
    labelled = np.array([[0, 1, 9, 9, 9], [2, 1, 9, 9, 9]], np.float32)  # teacher cols unused
    ce = Objective().loss(3)(keras.ops.convert_to_tensor(labelled[:, :2]),
                             keras.ops.convert_to_tensor(logits))
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    assert float(ce) == pytest.approx(-(logp[0, 0] + logp[1, 2]) / 2, rel=1e-5)
    # a student that already matches the teacher has no soft loss, at any temperature
    unlabeled = np.concatenate([[[0, 0], [0, 0]], logits], axis=1).astype(np.float32)
    for t in (1.0, 4.0):
        kl = Objective(t, 0.9).loss(3)(keras.ops.convert_to_tensor(unlabeled),
                                       keras.ops.convert_to_tensor(logits))
        assert float(kl) == pytest.approx(0.0, abs=1e-6)
    # unlabeled rows ignore the (dummy) label entirely
    other = unlabeled.copy()
    other[:, 0] = 2
    wrong = logits[::-1].copy()
    a = Objective(2.0, 0.5).loss(3)(keras.ops.convert_to_tensor(unlabeled), wrong)
    b = Objective(2.0, 0.5).loss(3)(keras.ops.convert_to_tensor(other), wrong)
    assert float(a) == pytest.approx(float(b)) and float(a) > 0


def test_teacher_outputs_become_logits():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]], np.float32)
    np.testing.assert_allclose(as_logits(probs), np.log(probs), rtol=1e-6)
    raw = np.array([[3.0, -1.0, 0.5]], np.float32)
    np.testing.assert_array_equal(as_logits(raw), raw)


def test_gate_choice_prefers_speed_or_size():
    from types import SimpleNamespace

    from optimizer.select.gates import choose

    def art(name, p50, size, passed=True):
        return SimpleNamespace(name=name, candidate=True, passed=passed, p50_ms=p50,
                               size_bytes=size)

    arts = [art("fast", 1.0, 900), art("small", 2.0, 300), art("tiny-failed", 0.5, 10, False)]
    assert choose(arts).name == "fast"
    assert choose(arts, "size").name == "small"
    assert choose(arts, "size", require_pass=False).name == "tiny-failed"
    keras_only = art("student", 3.0, 50)
    keras_only.candidate = False  # not deployable as a zip: shipped only when named
    assert choose([keras_only]) is None
    assert choose([keras_only], deployable_only=False).name == "student"


def test_pareto_front_and_teacher_student_from_rows():
    from optimizer.report.students import candidates, front, teacher_student

    def row(name, step, parent, acc, p50, size, candidate=True, passed=True, params=None):
        return {"name": name, "step": step, "parent": parent, "kind": "onnx",
                "candidate": candidate, "passed": passed, "variant": "",
                "info": {"params": params, "training": {"epoch": 3}},
                "validation": {"accuracy": acc, "size_bytes": size,
                               "latency": {"p50_ms": p50}}}

    rows = [row("source", "architecture", None, 98.0, 20.0, 9_000_000, False, params=4_000_000),
            row("teacher-fp32", "export_onnx", "source", 98.0, 5.0, 8_000_000),
            row("student", "distill", "source", 97.5, 4.0, 500_000, False, params=100_000),
            row("fp32", "export_onnx", "student", 97.5, 0.5, 400_000),
            row("int8", "quantize", "fp32", 97.2, 0.6, 150_000)]
    assert front(rows, "latency") == ["teacher-fp32", "fp32"]
    assert front(rows, "size") == ["teacher-fp32", "fp32", "int8"]
    ts = teacher_student(rows, "fp32")
    assert ts["teacher_onnx"]["name"] == "teacher-fp32"
    assert ts["speedup_vs_teacher_onnx"] == 10.0 and ts["smaller_vs_teacher_onnx"] == 20.0
    assert ts["accuracy_delta"] == -0.5 and ts["student"]["params"] == 100_000
    assert teacher_student(rows, "teacher-fp32") is None  # not a student: no comparison
    (cand,) = candidates(rows, "size")
    assert cand["best_artifact"] == "int8" and cand["epochs"] == 3


# --- recipes --------------------------------------------------------------------------

STUDENT_RECIPE = """
    name: s
    source: {{kind: onnx, path: {model}}}
    dataset: {{kind: sklearn-digits}}
    steps:
      - {step}
"""


def _recipe(tmp_path, step: str):
    model = tmp_path / "m.onnx"
    model.write_bytes(b"")
    return write_recipe(tmp_path, STUDENT_RECIPE.format(model=model, step=step))


def test_student_recipe_errors_name_the_line(tmp_path):
    with pytest.raises(RecipeError, match=r"r\.yaml:5: steps\.0: give either `student` or "
                                          r"`candidates`"):
        load_recipe(_recipe(tmp_path, "{step: distill}").rename(tmp_path / "r.yaml"))
    with pytest.raises(RecipeError, match="Xception needs an input_size of at least 71"):
        load_recipe(_recipe(tmp_path, "{step: swap, student: {architecture: Xception, "
                                      "input_size: 32}}"))
    with pytest.raises(RecipeError, match="Xception needs an input_size of at least 71"):
        load_recipe(_recipe(tmp_path, "{step: swap, candidates: {architecture: [Xception], "
                                      "input_size: [32, 96]}}"))
    with pytest.raises(RecipeError, match=r"steps\.0\.unlabeled: folder not found"):
        load_recipe(_recipe(tmp_path, "{step: distill, student: {}, unlabeled: nowhere}"))
    with pytest.raises(RecipeError, match=r"unknown key 'temprature' \(did you mean "
                                          r"'temperature'\?\)"):
        load_recipe(_recipe(tmp_path, "{step: distill, student: {}, temprature: 2}"))


def test_candidates_expand_to_unique_students(tmp_path):
    recipe = load_recipe(_recipe(tmp_path, """step: swap
        candidates: {architecture: [MobileNetV2, EfficientNetB0], alpha: [0.35, 0.5],
                     input_size: [32]}"""))
    step = recipe.steps[0]
    labels = [label for label, _ in step.variants()]
    # EfficientNet has no width multiplier: one candidate, not two identical ones
    assert labels == ["MobileNetV2-a0.35-r32", "MobileNetV2-a0.5-r32", "EfficientNetB0-r32"]
    assert all(one.student is not None and one.candidates is None for _, one in step.variants())
    single = load_recipe(_recipe(tmp_path, "{step: swap, student: {alpha: 0.5}}")).steps[0]
    assert [label for label, _ in single.variants()] == [""]


def test_a_weights_file_initialises_the_backbone(tmp_path):
    import keras

    from optimizer.errors import BadInput
    from optimizer.train import nets
    from optimizer.train.config import StudentSpec

    spec = StudentSpec(architecture="MobileNetV2", alpha=0.35, input_size=32)
    stats = (np.zeros(3), np.ones(3))
    keras.utils.set_random_seed(1)
    _, donor = nets.build(spec, 3, 10, *stats)
    weights = tmp_path / "backbone.weights.h5"
    donor.layers[2].save_weights(weights)  # input, normalize, backbone, logits, softmax
    _, model = nets.build(spec.model_copy(update={"weights": weights}), 3, 10, *stats)
    for a, b in zip(donor.layers[2].weights, model.layers[2].weights, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    wrong = spec.model_copy(update={"alpha": 0.5, "weights": weights})
    with pytest.raises(BadInput, match=r"backbone\.weights\.h5: cannot load these weights into "
                                       r"MobileNetV2-a0\.5-r32"):
        nets.build(wrong, 3, 10, *stats)


# --- through the CLI ------------------------------------------------------------------

CANDIDATE_STEPS = """
- step: export_onnx
  name: teacher-fp32
- step: distill
  name: student
  input: source
  candidates: {architecture: [MobileNetV2, MobileNetV3Small], alpha: [0.35], input_size: [32]}
  temperature: 3
  soft_weight: 0.8
  labeled_fraction: 0.5
  unlabeled: UNLABELED
  train: {epochs: 6, batch_size: 32, learning_rate: 0.005, augment: 0.1}
- step: export_onnx
  name: fp32
- step: quantize
  name: int8
  calibration_samples: 32
"""


def test_candidates_build_measure_and_choose(tmp_path, tiny_keras, cache_env):
    from PIL import Image

    extra = tmp_path / "unlabeled" / "any" / "depth"
    extra.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(5):  # images without labels, in any folder structure
        Image.fromarray(rng.integers(0, 255, (20, 20), dtype=np.uint8)).save(extra / f"{i}.png")
    steps = CANDIDATE_STEPS.replace("UNLABELED", str(tmp_path / "unlabeled"))
    # a student a user would take: within 5 points of its 92%-teacher
    recipe = keras_recipe(tmp_path, tiny_keras, name="cands", steps=steps,
                          gates="max_accuracy_drop: 5")
    out = tmp_path / "out"
    res = runner.invoke(app, ["build", str(recipe), "--out", str(out), "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)
    names = [a["name"] for a in doc["artifacts"]]
    variants = ["MobileNetV2-a0.35-r32", "MobileNetV3Small-a0.35-r32"]
    for step in ("student", "fp32", "int8"):
        assert [f"{step}@{v}" for v in variants] == [n for n in names if n.startswith(step + "@")]
    by = {a["name"]: a for a in doc["artifacts"]}
    student = by["student@MobileNetV2-a0.35-r32"]
    n_train = doc["dataset"]["splits"]["train"]
    assert student["info"]["labeled"] + student["info"]["unlabeled"] == n_train + 5
    assert student["info"]["labeled"] == pytest.approx(n_train / 2, abs=5)
    assert student["info"]["training"]["epoch"] == 6
    assert by["int8@MobileNetV2-a0.35-r32"]["parent"] == "fp32@MobileNetV2-a0.35-r32"
    # every candidate is in the report with its best deployable descendant
    cands = {c["student"]: c for c in doc["candidates"]}
    assert set(cands) == {f"student@{v}" for v in variants}
    assert all(c["best_artifact"].endswith(c["variant"]) for c in cands.values())
    # the ship is the fastest passing deployable artifact, measured
    deployable = [a for a in doc["artifacts"] if a["candidate"] and a["passed"]]
    fastest = min(deployable, key=lambda a: a["validation"]["latency"]["p50_ms"])
    assert doc["ship"] == fastest["name"] and doc["prefer"] == "speed"
    teacher = by["teacher-fp32"]["validation"]["accuracy"]
    assert by[doc["ship"]]["validation"]["accuracy"] >= max(85.0, teacher - 5)
    # a shipped student is put beside its teacher; a shipped teacher (this tiny CNN can be
    # faster than a MobileNet) has no such section
    ts = doc["teacher_student"]
    assert (ts is not None) == ("@" in doc["ship"])
    assert ts is None or ts["student"]["name"] == doc["ship"]
    svg = (out / "pareto.svg").read_text()
    # drawn by matplotlib: titled panels, a legend naming each student, the ring's entry
    assert "accuracy against size" in svg and "accuracy against latency" in svg
    assert all(f"student@{v}" in svg for v in variants) and "shipped" in svg
    md = (out / "report.md").read_text()
    assert "## Candidates" in md and "pareto.svg" in md
    assert (out / "student@MobileNetV3Small-a0.35-r32.keras").is_file()
    assert not list((cache_env / "checkpoints").glob("*/current"))  # removed on success
    # --prefer size re-chooses from the cache, without training anything again
    res = runner.invoke(app, ["build", str(recipe), "--out", str(out), "--json",
                              "--prefer", "size"])
    small = json.loads(res.stdout)
    assert small["cache"]["all_cached"] and small["prefer"] == "size"
    smallest = min(deployable, key=lambda a: a["validation"]["size_bytes"])
    assert small["ship"] == smallest["name"]
    bad = runner.invoke(app, ["build", str(recipe), "--out", str(out), "--prefer", "cheap"])
    assert bad.exit_code == 2 and "--prefer must be 'speed' or 'size'" in bad.output


def test_interrupted_training_resumes_from_its_checkpoint(tmp_path, tiny_keras, cache_env):
    steps = """
- step: swap
  student: {architecture: MobileNetV3Small, alpha: 0.35, input_size: 32}
  train: {epochs: 4, batch_size: 32, learning_rate: 0.005, augment: 0}
- step: export_onnx
"""
    # the resumed student must still be one a user would take (97% here; teacher 92%)
    recipe = keras_recipe(tmp_path, tiny_keras, name="resume", steps=steps,
                          gates="max_accuracy_drop: 3")
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "optimizer", "build", str(recipe), "--out", str(out),
           "--json"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**os.environ})
    deadline = time.time() + 300
    pointer = None
    while time.time() < deadline and proc.poll() is None:
        found = list((cache_env / "checkpoints").glob("*/current"))
        if found and found[0].read_text().strip() == "epoch-0002":
            pointer = found[0]
            break
        time.sleep(0.05)
    if pointer is None:
        proc.kill()
        pytest.fail(f"no epoch-2 checkpoint before the build ended: "
                    f"{proc.communicate()[1].decode()[-2000:]}")
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=120)
    assert proc.returncode == 130 and not out.exists()
    assert pointer.is_file()  # the checkpoint outlives the interruption
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    doc = json.loads(res.stdout)
    training = doc["artifacts"][1]["info"]["training"]
    assert training["resumed_from"] in (2, 3) and training["epoch"] == 4
    assert len(training["history"]["loss"]) == 4
    assert "resume" in res.stderr and not pointer.parent.exists()
    assert "Skipping variable loading" not in res.stderr  # optimizer state came back whole


def test_parallel_training_is_capped_by_cores_and_memory():
    from optimizer.build.local import available_bytes, plan

    gb = 1_000_000_000
    roomy = plan(3, cores=2, avail=20 * gb, per_job=2 * gb)
    assert (roomy.jobs, roomy.threads) == (2, 1) and "2 of 3 at once" in roomy.reason
    tight = plan(3, cores=8, avail=3 * gb, per_job=2 * gb)  # 75% of 3 GB fits one
    assert (tight.jobs, tight.threads) == (1, 8) and "3.0 GB available" in tight.reason
    assert plan(1, cores=8, avail=100 * gb, per_job=gb).jobs == 1
    assert plan(4, cores=4, avail=100 * gb, per_job=1).jobs == 4  # per job at least 1.5 GB
    assert available_bytes() > 0
