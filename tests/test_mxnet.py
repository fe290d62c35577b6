"""MXNet and MMS archives to ONNX: the isolated env, the real archivers, parity, hostile archives.

The models are Gluon model zoo ResNets with fresh weights, trained for two epochs on digits
inside the isolated environment, then packed by the real model-archiver 1.0.3 and MMS 0.4's
mxnet-model-export. Builds run in this process (CliRunner), which is what lets one test prove
MXNet never enters it.
"""

from __future__ import annotations

import base64
import importlib.abc
import io
import json
import os
import shutil
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
        # the Module checkpoint goes into MMS 0.4's layout with its stock vision service,
        # which fed raw pixels: trained on those, as its users' models were
        contract = example.train_resnet(ds, folder, NAME, size=16, layers=(1, 1, 1, 1),
                                        widths=(8, 8, 16, 24, 32), epochs=2, style=style,
                                        raw_pixels=style == "module")
        example.write_extras(folder, contract, service=style == "gluon")
        made[f"{style}-symbol"] = folder / f"{NAME}-symbol.json"
        made[f"{style}-params"] = folder / f"{NAME}-0000.params"
        if style == "gluon":
            made["contract"] = contract  # type: ignore[assignment]
    out = root / "out"
    for fmt in ("default", "tgz", "no-archive"):
        made[fmt] = example.model_archiver(root / "gluon", NAME, out, fmt)
    made["legacy"] = example.legacy_export(root / "module", NAME)
    # the same network and weights, its normalisation written in the handler's code
    shutil.copytree(root / "gluon", root / "in-code")
    example.write_extras(root / "in-code", made["contract"], normalise_in="handler")
    made["in-code"] = example.model_archiver(root / "in-code", NAME, root / "out-in-code")
    # a handler that needs a package the MXNet environment lacks
    shutil.copytree(root / "gluon", root / "broken")
    service = root / "broken" / example.SERVICE.name
    service.write_text("import boto3_ext  # noqa\n" + service.read_text())
    made["broken"] = example.model_archiver(root / "broken", NAME, root / "out-broken",
                                            "no-archive")
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
    sig = json.loads((models["gluon-symbol"].parent / "signature.json").read_text())
    if key == "legacy":  # MMS's stock vision service: OpenCV's bicubic, never normalised
        assert (pre["mean"], pre["std"], pre["resize"]) == ([0.0], [1.0], "bicubic-opencv")
    else:
        assert pre["mean"] == sig["inputs"][0]["mean"] and pre["std"] == sig["inputs"][0]["std"]
    assert pre["scale"] == 1.0  # MMS fed raw 0..255 pixels
    report = (tmp_path / "out" / "report.md").read_text()
    assert "## From MXNet" in report
    # the handler run by MMS 1.x's own loader: ours, or MMS 0.4's stock vision service
    handler = src["info"]["handler"]
    assert handler["verdict"] == "ok" and handler["top1_agreement"] == 100.0, handler
    assert handler["samples"] == min(200, doc["dataset"]["splits"]["test"])
    assert handler["max_score_diff"] < 1e-3
    label, score = ("class", "probability") if key == "legacy" else ("label", "score")
    keys = [score, label] if key == "legacy" else [label, score]  # each handler's own order
    assert handler["answer_shape"] == {"kind": "top-k list", "k": 5, "label": label,
                                       "score": score, "keys": keys}
    assert f"handler agreement: `{handler['handler']}` run on" in report
    assert doc["migration"]["conversion"]["handler"] == handler


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


def _rejected(tmp_path: Path, source: str, dataset: str, out: str):
    recipe = write_recipe(tmp_path, RECIPE.format(source=source, extra="").replace(
        "kind: sklearn-digits", dataset), name=f"{out}.yaml")
    result = runner.invoke(app, ["build", str(recipe), "--out", str(tmp_path / out), "--json"])
    return result, json.loads(result.stdout)


@pytest.mark.parametrize("labelled", [True, False])
def test_a_handler_that_normalises_in_code_stops_the_build_with_the_fix(
        tmp_path, models, cache_env, labelled):
    """signature.json lists no mean or std; the handler's code has them. The conversion is
    sound, so parity passes; the handler's answers show the pixels are wrong, with or
    without labels, and the variant that matches them is named."""
    contract = models["contract"]
    dataset = "kind: sklearn-digits"
    if not labelled:  # a user with images and no annotations
        from PIL import Image

        loose = tmp_path / "photos"
        loose.mkdir()
        ds = load_dataset(DigitsDataset(kind="sklearn-digits"))
        for i in range(300):
            Image.fromarray(ds.images[i]).save(loose / f"img{i:04d}.png")
        dataset = f"kind: folder\n  path: {loose}"
    source = f"kind: mms-archive\n  path: {models['in-code']}"
    result, doc = _rejected(tmp_path, source, dataset, "first")
    assert result.exit_code == 1, result.output
    assert not (tmp_path / "first").exists()
    check = doc["source_check"]
    assert check["verdict"] == "rejected" and check["top1_agreement"] < 50
    assert "the handler's code probably normalises the pixels itself" in result.output
    assert len(check["examples"]) == 3 and "handler '" in check["examples"][0]
    import yaml

    fix = yaml.safe_load(check["suggested_preprocess"])
    assert fix["scale"] == 1.0 and fix["mean"] == contract["mean"]
    assert fix["std"] == contract["std"]
    # pasted as the message says, the next build ships, answering as the handler does
    pasted = source + f"\n  preprocess: {check['suggested_preprocess']}"
    result, doc = _rejected(tmp_path, pasted, dataset, "second")
    assert result.exit_code == 0, result.output
    handler = doc["artifacts"][0]["info"]["handler"]
    assert handler["verdict"] == "ok" and handler["top1_agreement"] == 100.0
    assert doc["ship"] is not None


def test_a_handler_that_cannot_run_here_is_said_and_can_be_required(tmp_path, models,
                                                                     cache_env):
    source = f"kind: mms-archive\n  path: {models['broken']}"
    result, doc = _build(tmp_path, source)
    assert result.exit_code == 0, result.output
    handler = doc["artifacts"][0]["info"]["handler"]
    assert handler["verdict"] == "not run"
    assert "ModuleNotFoundError: No module named 'boto3_ext'" in handler["reason"]
    said = " ".join(result.output.split())  # the console wraps at its width
    assert ("warning: the archive's handler cannot run here (mms_service:handle failed to "
            "load: ModuleNotFoundError: No module named 'boto3_ext')") in said
    assert "validate.require_handler_parity makes this fail" in said
    result, _ = _build(tmp_path, source, "require_handler_parity: true", out="required")
    assert result.exit_code == 1
    assert "validate.require_handler_parity" in result.output and "boto3_ext" in result.output
    assert not (tmp_path / "required").exists()


def test_the_function_answers_in_the_handlers_shape(tmp_path, models, cache_env):
    """The old endpoint's clients need no change: the packaged handler's body for one image
    is the MMS handler's answer for the same bytes, key for key."""
    import importlib

    from optimizer.model import ModelRef
    from optimizer.package.function import assemble
    from optimizer.package.proof import output_kind
    from optimizer.preprocess_spec import Preprocess
    from optimizer.sources.mxnet import handler_check

    result, doc = _build(tmp_path, f"kind: mms-archive\n  path: {models['default']}")
    assert result.exit_code == 0, result.output
    shape = doc["artifacts"][0]["info"]["handler"]["answer_shape"]
    pre = Preprocess.model_validate_json((tmp_path / "out" / "preprocess.json").read_text())
    ds = load_dataset(DigitsDataset(kind="sklearn-digits"))
    images = handler_check.encode([ds.images[i] for i in ds.indices("test", 3)], "png")
    theirs = handler_check.run_handler(models["default"], images, print)["answers"]
    ref = ModelRef("onnx", tmp_path / "out" / "source.onnx", pre, ds.classes)
    assemble(tmp_path / "fn", ref, "mx", 1769, 5, 4, output_kind(ref, ds), answer=shape)
    mp = pytest.MonkeyPatch()
    mp.setenv("OPTIMIZER_MODEL_DIR", str(tmp_path / "fn" / "model"))
    try:
        import optimizer.handler.app as fn

        fn = importlib.reload(fn)
        for data, answer in zip(images, theirs, strict=True):
            event = {"image": base64.b64encode(data).decode()}
            resp = fn.lambda_handler(event, None)
            ours = json.loads(resp["body"])
            assert resp["statusCode"] == 200 and int(resp["headers"]["x-threads"]) >= 1
            assert [list(o) for o in ours] == [list(a) for a in answer]  # keys, in order
            assert [o["label"] for o in ours] == [a["label"] for a in answer]
            assert np.allclose([o["score"] for o in ours], [a["score"] for a in answer],
                               atol=1e-4)
    finally:
        mp.undo()


def test_opencv_bicubic_matches_mxnets_imresize(tmp_path):
    """MMS's stock vision services resized with MXNet's imresize (OpenCV's bicubic): the
    handler's `bicubic-opencv` gives the same pixels, so such an endpoint's answers can be
    reproduced; PIL's bicubic cannot (another kernel)."""
    from PIL import Image

    from optimizer.handler.pixels import cv_bicubic

    rng = np.random.RandomState(0)
    cases = [(8, 8, 16, 16), (30, 40, 16, 16), (17, 23, 224, 224), (300, 200, 224, 224)]
    for i, (h, w, _, _) in enumerate(cases):
        np.save(tmp_path / f"in{i}.npy", rng.randint(0, 256, (h, w, 3)).astype(np.uint8))
    script = ("import json, sys, numpy as np, mxnet as mx\n"
              "cases = json.loads(sys.argv[2])\n"
              "for i, (h, w, oh, ow) in enumerate(cases):\n"
              "    a = mx.nd.array(np.load(f'{sys.argv[1]}/in{i}.npy'), dtype=np.uint8)\n"
              "    out = mx.image.imresize(a, ow, oh, 2).asnumpy()\n"
              "    np.save(f'{sys.argv[1]}/out{i}.npy', out)\n")
    bridge.tool(["-c", script, str(tmp_path), json.dumps(cases)], cwd=tmp_path)
    for i, (h, w, oh, ow) in enumerate(cases):
        src = np.load(tmp_path / f"in{i}.npy")
        theirs = np.load(tmp_path / f"out{i}.npy").astype(int)
        ours = np.asarray(cv_bicubic(Image.fromarray(src), (ow, oh))).astype(int)
        pil = np.asarray(Image.fromarray(src).resize((ow, oh), Image.BICUBIC)).astype(int)
        # within one level of rounding, on a few pixels at most
        assert np.abs(ours - theirs).max() <= 1 and np.mean(ours != theirs) < 0.01, \
            ((h, w, oh, ow), np.mean(ours != theirs))
        assert np.abs(pil - theirs).max() > np.abs(ours - theirs).max()
