"""Hostile input through the CLI: each refused with exit 2 and a message naming the file,
and nothing written anywhere outside the cache (which keeps no entry for it)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from conftest import SIZE, mar_zip, write_recipe

RECIPE = """
name: {name}
source:
  {source}
dataset:
  kind: sklearn-digits
steps:
  - step: {step}
validate:
  latency: {{warmup: 1, runs: 5}}
"""


def snapshot(root: Path, skip: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")
            if skip not in p.parents and p != skip}


def refused(tmp_path: Path, cache: Path, case: str, source: str, expect: str,
            name: str = "hostile", out: Path | None = None) -> None:
    step = "export_onnx" if "kind: keras" in source else "optimize_graph"
    sandbox = tmp_path / case.replace(" ", "-")
    sandbox.mkdir()
    recipe = write_recipe(sandbox, RECIPE.format(name=name, source=source, step=step))
    out = out or sandbox / "out"
    before = snapshot(tmp_path, cache)
    entries = set(cache.glob("objects/*/*")) if cache.exists() else set()
    proc = subprocess.run([sys.executable, "-m", "optimizer", "build", str(recipe), "--out",
                           str(out)], capture_output=True, text=True, cwd=sandbox)
    assert proc.returncode == 2, f"{case}: exit {proc.returncode}\n{proc.stderr[-1500:]}"
    assert expect in proc.stderr and "Traceback" not in proc.stderr, f"{case}: {proc.stderr}"
    assert snapshot(tmp_path, cache) == before, f"{case}: wrote " + ", ".join(
        sorted(snapshot(tmp_path, cache) - before))
    if cache.exists():
        assert set(cache.glob("objects/*/*")) == entries, f"{case}: cached something"
    assert not list(Path("/tmp").glob("escaped*")), f"{case}: a file escaped"


def _onnx_pointing_at(tmp_path: Path, location: str) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((SIZE * SIZE * 3, 10), dtype="float32"), "w")
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    for key, value in (("location", location), ("offset", "0"), ("length", "4")):
        entry = w.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph(
        [helper.make_node("Flatten", ["input"], ["f"]), helper.make_node("MatMul", ["f", "w"],
                                                                          ["out"])],
        "g", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [1, SIZE, SIZE, 3])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 10])], [w])
    folder = tmp_path / f"model-{abs(hash(location))}"
    folder.mkdir()
    path = folder / "m.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_hostile_inputs_are_refused_and_write_nothing(tmp_path, cache_env):
    import keras

    (tmp_path / "secret.bin").write_bytes(b"\0" * 64)
    inp = keras.Input((SIZE, SIZE, 3))
    lam = tmp_path / "lambda.keras"
    keras.Model(inp, keras.layers.Dense(10)(keras.layers.Flatten()(
        keras.layers.Lambda(lambda t: t * 2.0)(inp)))).save(lam)
    tar_link = tmp_path / "link.tar.gz"
    with tarfile.open(tar_link, "w:gz") as t:
        info = tarfile.TarInfo("m/m-0000.params")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/shadow"
        t.addfile(info)
    tar_up = tmp_path / "up.tar.gz"
    with tarfile.open(tar_up, "w:gz") as t:
        data = b"pwned"
        info = tarfile.TarInfo("../../escaped-tar.txt")
        info.size = len(data)
        t.addfile(info, io.BytesIO(data))
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "precious.txt").write_text("keep me")
    bomb = "\n".join(["a: &a [x, x, x, x, x, x, x, x, x, x]"]
                     + [f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, "
                        f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
                        f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]"
                        for i in range(8)])
    mar = "kind: mms-archive\n  path: {}"
    cases = [
        ("onnx external data up a level",
         f"kind: onnx\n  path: {_onnx_pointing_at(tmp_path, '../secret.bin')}",
         "outside the model's folder", {}),
        ("onnx external data absolute",
         f"kind: onnx\n  path: {_onnx_pointing_at(tmp_path, str(tmp_path / 'secret.bin'))}",
         "outside the model's folder", {}),
        ("keras lambda layer", f"kind: keras\n  path: {lam}", "Lambda layer", {}),
        ("mar path traversal", mar.format(mar_zip(tmp_path / "up.mar", {
            "../../escaped.txt": b"pwned"})), "path traversal", {}),
        ("mar absolute path", mar.format(mar_zip(tmp_path / "abs.mar", {
            "/tmp/escaped-abs.txt": b"pwned"})), "has an absolute path", {}),
        ("mar symlink", mar.format(mar_zip(tmp_path / "link.mar", {}, link="m-0000.params")),
         "member 'm-0000.params' is a link; refused", {}),
        ("tar symlink", mar.format(tar_link), "member 'm/m-0000.params' is a link; refused",
         {}),
        ("tar path traversal", mar.format(tar_up), "path traversal", {}),
        ("recipe name escapes", "kind: keras\n  path: " + str(lam),
         "name: String should match pattern", {"name": "../../escaped"}),
        ("output over a foreign folder", "kind: keras\n  path: " + str(lam),
         "refusing to replace it", {"out": foreign}),
    ]
    for case, source, expect, extra in cases:
        refused(tmp_path, cache_env, case, source, expect, **extra)
    # the alias bomb is a whole recipe
    sandbox = tmp_path / "alias-bomb"
    sandbox.mkdir()
    (sandbox / "bomb.yaml").write_text(bomb + "\n")
    before = snapshot(tmp_path, cache_env)
    proc = subprocess.run([sys.executable, "-m", "optimizer", "build", "bomb.yaml"],
                          capture_output=True, text=True, cwd=sandbox)
    assert proc.returncode == 2 and "alias bomb" in proc.stderr
    assert snapshot(tmp_path, cache_env) == before
    assert (foreign / "precious.txt").read_text() == "keep me"
    print(f"hostile cases refused: {len(cases) + 1}")


@pytest.mark.parametrize("name", ["../x", "a/b", "/abs", ".."])
def test_step_names_cannot_leave_the_output_folder(tmp_path, name):
    from optimizer.errors import RecipeError
    from optimizer.recipe.load import load_recipe

    recipe = write_recipe(tmp_path, f"""
        name: ok
        source: {{kind: architecture, architecture: MobileNetV2, input_size: 32}}
        dataset: {{kind: sklearn-digits}}
        steps:
          - step: export_onnx
            name: "{name}"
        """)
    with pytest.raises(RecipeError, match=r"steps\.0\.name"):
        load_recipe(recipe)
    assert os.listdir(tmp_path) == ["recipe.yaml"]


def _du(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file()) if root.exists() else 0


@pytest.mark.parametrize("fmt", ["mar", "tar.gz"])
def test_archive_bomb_is_refused_before_anything_is_written(tmp_path, cache_env, fmt):
    """512 MiB of zeros in a .mar (0.5 MiB of deflate) or a .tar.gz, beside an empty manifest:
    refused from its headers, with its size in the message, having written nothing."""
    import gzip
    import json
    import zipfile

    member, size = "zeros.bin", 512 << 20
    bomb = tmp_path / f"bomb.{fmt}"
    if fmt == "mar":
        with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
            z.writestr("MAR-INF/MANIFEST.json", json.dumps({}))
            with z.open(member, "w", force_zip64=True) as f:
                block = b"\0" * (1 << 20)
                for _ in range(size >> 20):
                    f.write(block)
    else:
        with gzip.open(bomb, "wb", compresslevel=9) as gz, tarfile.open(fileobj=gz, mode="w|") \
                as t:
            info = tarfile.TarInfo("m/MAR-INF/MANIFEST.json")
            info.size = 2
            t.addfile(info, io.BytesIO(b"{}"))
            info = tarfile.TarInfo(f"m/{member}")
            info.size = size

            class Zeros(io.RawIOBase):
                left = size

                def readinto(self, b) -> int:
                    n = min(len(b), self.left)
                    b[:n] = bytes(n)
                    self.left -= n
                    return n

            t.addfile(info, Zeros())
    assert bomb.stat().st_size < 4 << 20
    refused(tmp_path, cache_env, f"bomb {fmt}", f"kind: mms-archive\n  path: {bomb}",
            "likely archive bomb")
    assert _du(cache_env) < 4 << 20  # at most a few MiB (today: nothing at all)
