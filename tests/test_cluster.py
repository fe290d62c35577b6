"""Builds on a real two-node Ray cluster (tests/ray_cluster.py) against the same build run
locally: same ship, accuracies and model digests; a killed worker survived; latency timed
on the node that declares the target's resource; bad addresses and unplaceable tasks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests import ray_cluster
from tests.conftest import keras_recipe

STEPS = """
- step: distill
  name: student
  input: source
  candidates: {architecture: [MobileNetV2, MobileNetV3Small], alpha: [0.35], input_size: [32]}
  temperature: 3
  train: {epochs: 3, batch_size: 32, learning_rate: 0.005, augment: 0}
- step: export_onnx
  name: fp32
"""
STUDENT = "student@MobileNetV2-a0.35-r32"


@pytest.fixture(scope="module")
def cluster():
    if why := ray_cluster.available():
        pytest.skip(why)
    c = ray_cluster.start()
    yield c
    c.stop()


@pytest.fixture(scope="module")
def recipe(tmp_path_factory, tiny_keras) -> Path:
    # prefer size: the ship must not hinge on which of two near-equal timings won
    return keras_recipe(tmp_path_factory.mktemp("cluster"), tiny_keras, name="cluster",
                        steps=STEPS, gates="max_accuracy_drop: 10\nprefer: size")


def _build(cmd_prefix: list[str], recipe: Path, out: Path, cache: Path, *extra: str,
           timeout: float = 900) -> tuple[subprocess.CompletedProcess, dict | None]:
    env = {**os.environ, "OPTIMIZER_CACHE": str(cache)}
    env.pop("OPTIMIZER_RAY", None)
    res = subprocess.run([*cmd_prefix, sys.executable, "-m", "optimizer", "build",
                          str(recipe), "--out", str(out), "--json", *extra],
                         capture_output=True, text=True, timeout=timeout, env=env)
    try:
        doc = json.loads(res.stdout)
    except ValueError:
        doc = None
    return res, doc


@pytest.fixture(scope="module")
def local_build(recipe, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("local")
    res, doc = _build([], recipe, tmp / "out", tmp / "cache")
    assert res.returncode == 0, res.stderr[-3000:]
    return doc


@pytest.fixture(scope="module")
def ray_build(cluster, recipe, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ray")
    res, doc = _build(cluster.cmd(), recipe, tmp / "out", tmp / "cache", "--ray",
                      cluster.address)
    assert res.returncode == 0, res.stderr[-3000:]
    return {"doc": doc, "stderr": res.stderr, "tmp": tmp}


def _by_name(doc: dict) -> dict[str, dict]:
    return {a["name"]: a for a in doc["artifacts"]}


def test_ray_build_equals_the_local_build(local_build, ray_build):
    ray_doc = ray_build["doc"]
    assert ray_doc["ship"] == local_build["ship"]
    mine, theirs = _by_name(ray_doc), _by_name(local_build)
    assert list(mine) == list(theirs)
    for name, art in mine.items():
        other = theirs[name]
        assert art["digest"] == other["digest"], name
        assert art["sha256"] == other["sha256"], name
        assert art["validation"]["accuracy"] == other["validation"]["accuracy"], name
        assert art["validation"]["agreement"] == other["validation"]["agreement"], name
    # the report says how each build ran
    assert local_build["executor"]["kind"] == "local"
    assert local_build["executor"]["candidates"]["student"]["processes"] >= 1
    ex = ray_doc["executor"]
    assert ex["kind"] == "ray" and len(ex["nodes"]) == 2
    what = [t["what"] for t in ex["tasks"]]
    # training, teacher outputs, later steps and scoring all went to the cluster
    assert {STUDENT, "fp32@MobileNetV2-a0.35-r32", f"accuracy of {STUDENT}"} <= set(what)
    assert any(w.startswith("teacher outputs") for w in what)
    assert all(t["node_ip"] == "127.0.0.1" and t["run_s"] >= 0 for t in ex["tasks"])
    assert len({t["node_id"] for t in ex["tasks"]}) == 2  # both nodes took work


def test_latency_is_timed_on_the_node_declaring_the_target(ray_build, local_build):
    doc = ray_build["doc"]
    (task,) = [t for t in doc["executor"]["tasks"] if t["what"].startswith("latency")]
    assert task["resource"] == "target_x86_64_avx2"
    declaring = [n["node_id"] for n in doc["executor"]["nodes"]
                 if "target_x86_64_avx2" in n["resources"]]
    assert task["node_id"] == declaring == [task["node_id"]]
    on = doc["timed_on"]
    assert "declares target_x86_64_avx2" in on["where"] and task["node_id"][:8] in on["where"]
    assert on["flags"] and "avx2" in on["flags"] and on["target"] == "x86_64"
    assert local_build["timed_on"]["where"] == "build host"
    md = (ray_build["tmp"] / "out" / "report.md").read_text()
    assert "Timed on" in md and "target_x86_64_avx2" in md and "Ray" in md


def test_a_cache_hit_on_the_driver_sends_nothing(cluster, recipe, ray_build):
    tmp = ray_build["tmp"]
    res, doc = _build(cluster.cmd(), recipe, tmp / "again", tmp / "cache", "--ray",
                      cluster.address)
    assert res.returncode == 0, res.stderr[-3000:]
    assert doc["cache"]["all_cached"] and doc["executor"]["tasks"] == []
    assert doc["ship"] == ray_build["doc"]["ship"]


def test_a_worker_killed_mid_training_is_retried_and_resumes(cluster, recipe, ray_build,
                                                             tmp_path):
    cache = tmp_path / "cache"
    env = {**os.environ, "OPTIMIZER_CACHE": str(cache)}
    proc = subprocess.Popen(cluster.cmd(sys.executable, "-m", "optimizer", "build",
                                        str(recipe), "--out", str(tmp_path / "out"), "--json",
                                        "--ray", cluster.address),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    killed = None
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None and killed is None:
        # the store actor writes each epoch's checkpoint into the driver's cache
        for pointer in (cache / "checkpoints").glob("*/current"):
            if pointer.read_text().strip() != "epoch-0001":
                continue
            workers = [p for p in cluster.pids()
                       if cluster.cmdline(p).startswith(f"ray::{STUDENT}")]
            if workers:
                os.kill(workers[0], signal.SIGKILL)
                killed = workers[0]
        time.sleep(0.05)
    out, err = proc.communicate(timeout=900)
    assert killed, f"no training worker seen after epoch 1: {err.decode()[-2000:]}"
    assert proc.returncode == 0, err.decode()[-3000:]
    doc = json.loads(out)
    student = _by_name(doc)[STUDENT]
    assert student["info"]["training"]["resumed_from"] in (1, 2)
    assert student["info"]["training"]["epoch"] == 3
    # the same model as the uninterrupted build, to the byte
    expected = _by_name(ray_build["doc"])
    for name in (STUDENT, "fp32@MobileNetV2-a0.35-r32"):
        assert _by_name(doc)[name]["digest"] == expected[name]["digest"], name
    assert "resume" in err.decode()
    assert not list((cache / "checkpoints").glob("*/current"))  # removed once stored


def test_unplaceable_task_is_an_error_not_a_wait(cluster, recipe, tmp_path):
    start = time.time()
    res, _ = _build(cluster.cmd(), recipe, tmp_path / "out", tmp_path / "cache", "--ray",
                    cluster.address, "--ray-cpus", "4", timeout=300)
    assert res.returncode == 2, res.stderr[-2000:]
    line = res.stderr.strip().splitlines()[-1]
    assert line.startswith("error: Ray cannot place") and "4 CPU" in line
    assert "127.0.0.1: 1 CPU" in line
    assert time.time() - start < 120 and not (tmp_path / "out").exists()


def test_unreachable_address_is_one_line_before_any_work(recipe, tmp_path):
    env = {**os.environ, "OPTIMIZER_CACHE": str(tmp_path / "cache"),
           "OPTIMIZER_RAY": "127.0.0.1:1"}
    t0 = time.time()
    res = subprocess.run([sys.executable, "-m", "optimizer", "build", str(recipe), "--out",
                          str(tmp_path / "out")], capture_output=True, text=True, env=env,
                         timeout=120)
    assert res.returncode == 2
    assert res.stderr.strip().splitlines() == [
        "error: --ray 127.0.0.1:1: no Ray head answers there (Connection refused); is `ray "
        "start --head` running, and is its port open to this machine?"]
    assert time.time() - t0 < 30
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()
    bad = subprocess.run([sys.executable, "-m", "optimizer", "build", str(recipe), "--ray",
                          "head:port"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "give the head's address as HOST:PORT" in bad.stderr
