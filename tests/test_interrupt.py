"""SIGKILL at several moments of a build: nothing half-written, the next run reuses the rest."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from textwrap import dedent

from conftest import keras_recipe

STEPS = "- step: export_onnx\n  name: fp32\n- step: optimize_graph\n  name: fp32-opt\n"
# log lines that mark a moment; the build is killed as soon as one appears
MOMENTS = [
    "run    fp32 (export_onnx",        # inside a step that writes a cache entry
    "measure accuracy of fp32-opt",    # between measurements
    "measure latency",                 # while the latency worker runs
    "run    zip package",              # while the zip is written and proved
    "prove  zip under",                # during the emulated proof
]


def _start(recipe: Path, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "optimizer", "build", str(recipe), "--out", str(out), *extra],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, bufsize=1,
        start_new_session=True)  # the whole job dies, workers too, as when CI cancels it


def _kill_at(proc: subprocess.Popen, moment: str) -> list[str]:
    seen = []
    assert proc.stderr is not None
    for line in proc.stderr:
        seen.append(line.rstrip())
        if moment in line:
            os.killpg(proc.pid, signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, f"never reached {moment!r}:\n" + "\n".join(seen)
    return seen


def _complete_entries(cache: Path) -> None:
    """Every cache entry under its final name holds something; temp folders may remain."""
    for entry in (cache / "objects").glob("*/*"):
        if entry.name.startswith(".tmp-"):
            continue
        assert entry.is_dir() and any(entry.iterdir()), f"empty cache entry {entry}"


def _build_json(recipe: Path, out: Path) -> dict:
    proc = subprocess.run([sys.executable, "-m", "optimizer", "build", str(recipe), "--out",
                           str(out), "--json"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


def test_sigkill_at_each_moment_leaves_nothing_half_written(tmp_path, tiny_keras, cache_env):
    recipe = keras_recipe(tmp_path, tiny_keras, steps=STEPS, tail=dedent("""
        package:
          zip: {layers: 1}
        """))
    out = tmp_path / "out"
    for moment in MOMENTS:
        _kill_at(_start(recipe, out), moment)
        assert not out.exists(), f"killed at {moment!r}, yet an output folder was published"
        _complete_entries(cache_env)
    doc = _build_json(recipe, out)
    # everything that finished before the kills was reused, nothing had to be rebuilt twice
    assert doc["cache"]["hits"] > 0
    assert not list(cache_env.rglob(".tmp-*")), "a killed build's temp folder survived"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.") and
                p.name != ".out.lock"]
    verify = subprocess.run([sys.executable, "-m", "optimizer", "verify", str(out)],
                            capture_output=True, text=True)
    assert verify.returncode == 0, verify.stdout

    # a forced rebuild killed while packaging leaves the published build intact
    before = (out / "manifest.json").read_bytes()
    _kill_at(_start(recipe, out, "--force"), "prove  zip under")
    assert (out / "manifest.json").read_bytes() == before
    assert subprocess.run([sys.executable, "-m", "optimizer", "verify", str(out)],
                          capture_output=True).returncode == 0
    again = _build_json(recipe, out)
    assert again["ship"] == doc["ship"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.") and
                p.name != ".out.lock"]


def test_a_kill_between_the_two_renames_puts_the_previous_build_back(tmp_path):
    from optimizer.publish.outdir import recover

    out = tmp_path / "out"
    # what a build killed between rename(out, old) and rename(tmp, out) leaves behind
    dead = 2**22 + 12345  # above the default pid_max, so no such process
    old = tmp_path / f".out.old-{dead}"
    old.mkdir()
    (old / "report.json").write_text("{}")
    staged = tmp_path / f".out.tmp-{dead}-abc"
    staged.mkdir()
    (staged / "half").write_text("x")
    live = tmp_path / f".out.tmp-{os.getpid()}-def"  # a build still publishing: untouched
    live.mkdir()
    recover(out)
    assert (out / "report.json").is_file() and not old.exists() and not staged.exists()
    assert live.exists()
