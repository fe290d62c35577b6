#!/usr/bin/env python3
"""CI's second command: build the shipped recipes as a user would (README line 1's first)
and check what each ships. The ones left out take too long for CI's hour; each has a slow
test instead (`python3 -m pytest -m slow`), and the README says which.

Recipes share one cache, as a user's would (keras-image and mobilenet-image train the same
network), and a local Debian base image is made for the image recipes (no registry here).
Prints each build's duration; exits 1 on the first recipe that does not ship what it should.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# recipes/fashion-distill.yaml: about 20 minutes of training; tests/test_shipped_recipes.py
SKIPPED = {"fashion-distill": "about 20 minutes of training: a slow test builds it"}


def optimizer(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "optimizer", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True)


def proved(pkg: dict[str, Any]) -> bool:
    proof = pkg.get("proof") or {}
    return proof.get("label") is not None and proof.get("label") == proof.get("expected")


def check_lambda(r: dict[str, Any]) -> list[str]:
    ship = next(a for a in r["artifacts"] if a["name"] == r["ship"])
    fn = next(p for p in r["packages"] if p["kind"] == "zip")
    zips = [p for p in r["packages"] if p["kind"] in ("zip", "layer")]
    return [why for ok, why in (
        ("@MobileNetV2" in r["ship"], f"ships {r['ship']}, not a student"),
        (r["artifacts"][0]["validation"]["accuracy"] - ship["validation"]["accuracy"] <= 1.0,
         "the student is more than a point below the teacher"),
        (sum(p["zipped_bytes"] for p in zips) < 50 * 2**20, "the zips are over 50 MiB"),
        (proved(fn), f"the zip was not proved: {fn.get('proof')}"),
        (fn["proof"].get("classes_checked") == 10, "the proof did not cover every class"),
    ) if not ok]


def check_keras_image(r: dict[str, Any]) -> list[str]:
    kinds = {p["kind"]: p for p in r["packages"]}
    return [why for ok, why in (
        ("refused" in kinds.get("zip", {}), "a TensorFlow zip was not refused"),
        ("image" in kinds and proved(kinds["image"]), f"no proved image: {kinds}"),
    ) if not ok]


def check_image(r: dict[str, Any]) -> list[str]:
    images = [p for p in r["packages"] if p["kind"] in ("image", "image-tarball")]
    return [why for ok, why in (
        (len(images) == 2, f"expected an engine image and a tarball, got {images}"),
        (all(proved(p) for p in images), "an image was not proved"),
    ) if not ok]


def check_migration(r: dict[str, Any]) -> list[str]:
    src = r["artifacts"][0]["info"]
    fn = next(p for p in r["packages"] if p["kind"] == "zip")
    return [why for ok, why in (
        (src["parity"]["max_abs_diff"] <= 1e-4, "ONNX does not match MXNet"),
        (proved(fn), "the zip was not proved"),
        ("migration" in r and "cost" in r["migration"], "no cost comparison"),
        (r.get("tune", {}).get("recommended_memory_mb") is not None, "no memory sweep"),
    ) if not ok]


CHECKS: dict[str, Callable[[dict[str, Any]], list[str]]] = {
    "mobilenet-lambda": check_lambda,
    "keras-image": check_keras_image,
    "mobilenet-image": check_image,
    "resnet-eia-migration": check_migration,
}


def main() -> int:
    shipped = sorted(p.stem for p in (ROOT / "recipes").glob("*.yaml"))
    unaccounted = set(shipped) - set(CHECKS) - set(SKIPPED) - {"user-photos"}
    if unaccounted:  # user-photos is built by tests/test_recipes.py
        print(f"recipes neither built here nor left out on purpose: {sorted(unaccounted)}")
        return 1
    with tempfile.TemporaryDirectory(prefix="ci-recipes-") as tmp:
        # a cache of their own; tool environments (the MXNet venv, qemu roots) shared with
        # the tests', which made them already
        env = {**os.environ, "OPTIMIZER_CACHE": os.environ.get(
            "OPTIMIZER_CACHE", str(Path(tmp) / "cache")),
            "OPTIMIZER_ENVS": os.environ.get(
                "OPTIMIZER_ENVS", str(Path.home() / ".cache" / "optimizer" / "envs"))}
        base = optimizer("base-image", "--tag", "local/debian-python:3.11", env=env)
        if base.returncode != 0:
            print(f"base-image failed:\n{base.stderr[-2000:]}")
            return 1
        times = {}
        for name, check in CHECKS.items():
            out = Path(tmp) / name
            t0 = time.perf_counter()
            built = optimizer("build", f"recipes/{name}.yaml", "--out", str(out), "--json",
                              env=env)
            times[name] = time.perf_counter() - t0
            print(f"{name}: exit {built.returncode} in {times[name]:.0f} s", flush=True)
            if built.returncode != 0:
                print(built.stderr[-3000:])
                return 1
            problems = check(json.loads(built.stdout))
            verified = optimizer("verify", str(out), env=env)
            if verified.returncode != 0:
                problems.append(f"verify: {verified.stdout[-500:]}")
            if problems:
                print(f"{name} does not ship what it should: " + "; ".join(problems))
                return 1
    print("recipe build durations: " + ", ".join(f"{n} {s:.0f} s" for n, s in times.items())
          + f"; left out: {', '.join(f'{n} ({why})' for n, why in SKIPPED.items())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
