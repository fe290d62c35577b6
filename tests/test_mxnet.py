"""MXNet and MMS archives to ONNX: the isolated env, the real archivers, parity, hostile archives.

The models are Gluon model zoo ResNets with fresh weights, trained for two epochs on digits
inside the isolated environment, then packed by the real model-archiver 1.0.3 and MMS 0.4's
mxnet-model-export. Builds run in this process (CliRunner), which is what lets one test prove
MXNet never enters it.
"""

from __future__ import annotations

import importlib.abc
import io
import json
import os
import sys
import tarfile
import zipfile
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from optimizer.cli import app
from optimizer.data.load import load_dataset
from optimizer.errors import BadInput
from optimizer.recipe.schema import DigitsDataset
from optimizer.sources.mxnet import archive as mar
from optimizer.sources.mxnet import bridge, example
from optimizer.sources.mxnet import env as envs
from tests.conftest import mar_zip, write_recipe

runner = CliRunner()
NAME = "tiny"

RECIPE = """
name: mx
source:
  {source}
dataset:
  kind: sklearn-digits
steps:
  - step: quantize
    name: int8
    calibration_samples: 64
validate:
  max_accuracy_drop: 2
  latency: {{warmup: 1, runs: 5}}
  {extra}
"""


def _build(tmp_path: Path, source: str, extra: str = "", out: str = "out"):
    recipe = write_recipe(tmp_path, RECIPE.format(source=source, extra=extra))
    result = runner.invoke(app, ["build", str(recipe), "--out", str(tmp_path / out), "--json"])
    return result, (json.loads(result.stdout) if result.exit_code == 0 else None)


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """A Gluon export packed three ways by model-archiver, and a Module checkpoint packed by
    MMS 0.4 into the older layout."""
    ds = load_dataset(DigitsDataset(kind="sklearn-digits"))
    root = tmp_path_factory.mktemp("mx")
    made: dict[str, Path] = {}
    for style in ("gluon", "module"):
        folder = root / style
        contract = example.train_resnet(ds, folder, NAME, size=16, layers=(1, 1, 1, 1),
                                        widths=(8, 8, 16, 24, 32), epochs=2, style=style)
        example.write_extras(folder, contract, service=style == "gluon")
        made[f"{style}-symbol"] = folder / f"{NAME}-symbol.json"
        made[f"{style}-params"] = folder / f"{NAME}-0000.params"
    out = root / "out"
    for fmt in ("default", "tgz", "no-archive"):
        made[fmt] = example.model_archiver(root / "gluon", NAME, out, fmt)
    made["legacy"] = example.legacy_export(root / "module", NAME)
    return made


def test_archivers_write_both_manifest_layouts(models):
    with zipfile.ZipFile(models["default"]) as z:
        manifest = json.loads(z.read("MAR-INF/MANIFEST.json"))
        assert manifest["specificationVersion"] == "1.0"
        assert manifest["model"] == {"modelName": NAME, "handler": "mms_service:handle"}
    with zipfile.ZipFile(models["legacy"]) as z:
        legacy = json.loads(z.read("MANIFEST.json"))
        assert legacy["Model"]["Symbol"] == f"{NAME}-symbol.json"
        assert legacy["Model"]["Model-Format"] == "MXNet-Symbolic"
    for key in ("default", "tgz", "no-archive", "legacy"):
        path = models[key]
        folder = path.parent / f"unpacked-{key}"
        info = mar.unpack(path, folder)
        # only what MMS loads is unpacked: the graph and its weights
        assert (sorted(p.name for p in folder.rglob("*") if p.is_file())
                == ([] if path.is_dir() else [info.params.name, info.symbol.name]))
        assert mar.synset(path)[0] == [str(i) for i in range(10)]
        assert info.layout == ("model-0.x" if key == "legacy" else "mar-1.0")
        assert info.input_name == "data" and info.input_shape == [1, 3, 16, 16]
        assert info.labels == [str(i) for i in range(10)]
        assert info.mean and info.std and info.params.is_file()


@pytest.mark.parametrize("key", ["default", "legacy"])
def test_archive_converts_with_parity(tmp_path, models, cache_env, key):
    result, doc = _build(tmp_path, f"kind: mms-archive\n  path: {models[key]}")
    assert result.exit_code == 0, result.output
    src = doc["artifacts"][0]
    parity = src["info"]["parity"]
    assert parity["max_abs_diff"] <= 1e-4 and parity["top1_agreement"] == 1.0
    assert parity["samples"] == doc["dataset"]["splits"]["test"]
    assert src["info"]["archive"]["layout"] == ("model-0.x" if key == "legacy" else "mar-1.0")
    pre = json.loads((tmp_path / "out" / "preprocess.json").read_text())
    # the archive's contract reaches the handler: NCHW at its size, its mean/std
    assert pre["layout"] == "NCHW" and pre["size"] == [16, 16]
    style = "module" if key == "legacy" else "gluon"
    sig = json.loads((models[f"{style}-symbol"].parent / "signature.json").read_text())
    assert pre["mean"] == sig["inputs"][0]["mean"] and pre["std"] == sig["inputs"][0]["std"]
    assert pre["scale"] == 1.0  # MMS fed raw 0..255 pixels
    assert "## From MXNet" in (tmp_path / "out" / "report.md").read_text()


def test_module_checkpoint_source_and_parity_gate(tmp_path, models, cache_env):
    source = (f"kind: mxnet\n  symbol: {models['module-symbol']}\n  params: "
              f"{models['module-params']}\n  input_shape: [1, 3, 16, 16]")
    result, doc = _build(tmp_path, source)
    assert result.exit_code == 0, result.output
    # SoftmaxOutput head: the label input is dropped, outputs are probabilities
    assert doc["artifacts"][0]["info"]["parity"]["output_range"][0] >= 0
    # the same conversion under an impossible tolerance: the gate must stop it
    strict = source + "\n  parity: {max_abs_diff: 1.0e-12}"
    result, _ = _build(tmp_path, strict, out="strict")
    assert result.exit_code == 2
    assert "does not match MXNet" in result.output and "1e-12" in result.output
    assert not (tmp_path / "strict").exists()


def test_mxnet_never_enters_this_process(tmp_path, models, cache_env):
    class Refuse(importlib.abc.MetaPathFinder):
        def __init__(self) -> None:
            self.seen: list[str] = []

        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "mxnet":
                self.seen.append(name)
            return None

    finder = Refuse()
    sys.meta_path.insert(0, finder)
    try:
        result, _ = _build(tmp_path, f"kind: mms-archive\n  path: {models['tgz']}")
    finally:
        sys.meta_path.remove(finder)
    assert result.exit_code == 0, result.output
    assert finder.seen == [] and "mxnet" not in sys.modules
    # the main environment keeps its own numpy, newer than anything MXNet 1.9.1 accepts
    assert np.__version__ == metadata.version("numpy")
    assert tuple(int(p) for p in np.__version__.split(".")[:2]) >= (1, 24)
    env = envs.ensure(envs.MXNET)
    out = bridge.tool(["-c", "import numpy, mxnet; print(numpy.__version__, mxnet.__version__)"],
                      cwd=tmp_path)
    assert out.split() == ["1.23.5", "1.9.1"] and str(env.root) not in sys.path


def test_path_traversal_archive_refused(tmp_path, cache_env):
    evil = mar_zip(tmp_path / "evil.mar", {"../../escaped.txt": b"pwned", "m-symbol.json": b"{}"})
    result, _ = _build(tmp_path, f"kind: mms-archive\n  path: {evil}")
    assert result.exit_code == 2
    assert "path traversal" in result.output and "evil.mar" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.parent.rglob("escaped.txt"))


def test_hostile_archives_refused(tmp_path):
    cases = {
        "absolute": mar_zip(tmp_path / "abs.mar", {"/etc/cron.d/x": b"x"}),
        "link": mar_zip(tmp_path / "link.mar", {}, link="m-0000.params"),
        "twice": tmp_path / "twice.mar",
        "tar link": tmp_path / "link.tar.gz",
        "bomb": mar_zip(tmp_path / "bomb.mar", {"m-0000.params": b"\0" * 5_000_000}),
        "not an archive": tmp_path / "plain.mar",
    }
    with zipfile.ZipFile(cases["twice"], "w") as z:
        z.writestr("a.json", b"1")
        z.writestr("A.json", b"2")
    with tarfile.open(cases["tar link"], "w:gz") as t:
        info = tarfile.TarInfo("m/m-0000.params")
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/shadow"
        t.addfile(info)
        data = tarfile.TarInfo("m/MAR-INF/MANIFEST.json")
        data.size = 2
        t.addfile(data, io.BytesIO(b"{}"))
    cases["not an archive"].write_bytes(b"hello")
    expect = {"absolute": "absolute path", "link": "is a link", "twice": "appears twice",
              "tar link": "is a link", "bomb": "larger than", "not an archive": "neither a zip"}
    for case, path in cases.items():
        dest = tmp_path / f"x-{case.replace(' ', '-')}"
        with pytest.raises(BadInput, match=expect[case]):
            mar.unpack(path, dest, mar.Limits(member_bytes=1_000_000))
        assert not dest.exists(), case  # refused before anything was written


def test_archive_errors_name_what_is_wrong(tmp_path, models):
    no_manifest = tmp_path / "none.mar"
    with zipfile.ZipFile(no_manifest, "w") as z:
        z.writestr("x-symbol.json", "{}")
    with pytest.raises(BadInput, match=r"no MAR-INF/MANIFEST\.json"):
        mar.unpack(no_manifest, tmp_path / "a")
    gluon_imperative = tmp_path / "g.model"
    with zipfile.ZipFile(gluon_imperative, "w") as z:
        z.writestr("MANIFEST.json", json.dumps({"Model": {
            "Model-Name": "g", "Model-Format": "Gluon-Imperative", "Service": "s.py"}}))
    with pytest.raises(BadInput, match="Gluon imperative"):
        mar.unpack(gluon_imperative, tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_unsupported_operator_named(tmp_path, models):
    """A graph with an op mx2onnx 1.9.1 cannot convert (softsign) is refused by name."""
    graph = json.loads(models["gluon-symbol"].read_text())
    head = graph["heads"][0][0]
    graph["nodes"].append({"op": "softsign", "name": "squash", "inputs": [[head, 0, 0]]})
    graph["heads"] = [[len(graph["nodes"]) - 1, 0, 0]]
    graph.pop("node_row_ptr", None)
    sym = tmp_path / "odd-symbol.json"
    sym.write_text(json.dumps(graph))
    from optimizer.sources.mxnet import convert

    with pytest.raises(BadInput, match="softsign"):
        convert.inspect(sym, models["gluon-params"], [1, 3, 16, 16], None, print)


def test_corrupt_params_and_missing_shape(tmp_path, models, cache_env):
    bad = tmp_path / "bad-0000.params"
    bad.write_bytes(os.urandom(2000))
    source = (f"kind: mxnet\n  symbol: {models['gluon-symbol']}\n  params: {bad}\n"
              "  input_shape: [1, 3, 16, 16]")
    result, _ = _build(tmp_path, source)
    assert result.exit_code == 2 and "bad-0000.params" in result.output
    assert "not an MXNet params file" in result.output
    no_shape = (f"kind: mxnet\n  symbol: {models['gluon-symbol']}\n  params: "
                f"{models['gluon-params']}")
    result, _ = _build(tmp_path, no_shape)
    assert result.exit_code == 2 and "source.input_shape" in result.output


def test_broken_env_is_remade(tmp_path):
    """The env machinery on a one-package spec: whole, then broken two ways, then remade."""
    spec = envs.EnvSpec(name="probe", pins=("six==1.16.0",), key_files=("six.py",))
    lines: list[str] = []
    env = envs.ensure(spec, log=lines.append, root=tmp_path)
    assert env.whole() and any("creating" in ln for ln in lines)
    lines.clear()
    assert envs.ensure(spec, log=lines.append, root=tmp_path).root == env.root
    assert lines == []  # ready: nothing installed again
    (env.site_packages() / "six.py").unlink()  # a deleted file
    envs.ensure(spec, log=lines.append, root=tmp_path)
    assert any("broken" in ln for ln in lines) and (env.site_packages() / "six.py").is_file()
    (env.root / envs.READY).unlink()  # an install cut off before its marker
    lines.clear()
    envs.ensure(spec, log=lines.append, root=tmp_path)
    assert any("broken" in ln for ln in lines) and env.whole()


def test_env_without_a_suitable_python(monkeypatch):
    spec = envs.EnvSpec(name="never", pins=(), max_python=(3, 7))
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(envs.EnvFailed, match="OPTIMIZER_MXNET_PYTHON"):
        envs.find_python(spec)


def test_env_that_cannot_import_is_remade(tmp_path, models, monkeypatch):
    """A ready-looking env whose MXNet no longer imports: the call remakes it and succeeds."""
    import shutil

    real = envs.ensure(envs.MXNET)
    copy = tmp_path / real.root.name
    shutil.copytree(real.root, copy, symlinks=True, ignore=shutil.ignore_patterns("addons"))
    monkeypatch.setenv("OPTIMIZER_ENVS", str(tmp_path))
    damaged = envs.Env(envs.MXNET, copy)
    (damaged.site_packages() / "mxnet" / "__init__.py").write_text("raise ImportError('hit')\n")
    assert damaged.whole()  # the marker and key files cannot see it
    lines: list[str] = []
    info = bridge.call("inspect", {"symbol": str(models["gluon-symbol"]),
                                   "params": str(models["gluon-params"]),
                                   "input_shape": [1, 3, 16, 16]}, log=lines.append)
    assert info["mxnet"] == "1.9.1" and info["input_name"] == "data"
    assert any("cannot import" in ln and "hit" in ln for ln in lines)
    assert any("creating the mxnet environment" in ln for ln in lines)
