"""Sources: SavedModel and ONNX files in; unsafe or corrupt files refused with exit 2."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
from onnx.external_data_helper import convert_model_to_external_data
from typer.testing import CliRunner

from optimizer.cli import app
from optimizer.errors import BadInput
from optimizer.recipe.load import load_recipe
from optimizer.sources import SOURCES
from tests.conftest import SIZE, digits_16, write_recipe

runner = CliRunner()

RECIPE = """
name: src
source:
  kind: {kind}
  path: {path}
  preprocess: {{scale: 0.00392156862745098}}
dataset:
  kind: sklearn-digits
steps:
{steps}
validate:
  max_accuracy_drop: 5
  latency: {{warmup: 1, runs: 5}}
"""


def _recipe(tmp_path, kind, path, steps="  - step: quantize\n    calibration_samples: 32"):
    return write_recipe(tmp_path, RECIPE.format(kind=kind, path=path, steps=steps))


@pytest.fixture(scope="module")
def tiny_onnx(tiny_keras, tmp_path_factory):
    import tensorflow as tf
    import tf2onnx

    from optimizer.inference.tf import load_keras

    net = load_keras(tiny_keras)
    spec = (tf.TensorSpec((None, SIZE, SIZE, 3), tf.float32, "input"),)
    fn = tf.function(lambda x: net(x, training=False), input_signature=spec)
    proto, _ = tf2onnx.convert.from_function(fn, input_signature=spec, opset=17)
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    onnx.save(proto, str(path))
    return path


def test_savedmodel_source_builds(tmp_path, tiny_keras, cache_env):
    from optimizer.inference.tf import load_keras

    saved = tmp_path / "saved"
    load_keras(tiny_keras).export(str(saved))
    recipe = _recipe(tmp_path, "savedmodel", saved, "  - step: export_onnx")
    result = runner.invoke(app, ["build", str(recipe), "--out", str(tmp_path / "out"), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert [a["name"] for a in doc["artifacts"]] == ["source", "export_onnx"]
    assert doc["artifacts"][1]["validation"]["agreement"] == 100.0
    assert json.loads((tmp_path / "out" / "preprocess.json").read_text())["size"] == [SIZE, SIZE]


def test_onnx_source_quantized(tmp_path, tiny_onnx, cache_env):
    recipe = _recipe(tmp_path, "onnx", tiny_onnx)
    result = runner.invoke(app, ["build", str(recipe), "--out", str(tmp_path / "out"), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert [a["candidate"] for a in doc["artifacts"]] == [True, True]
    assert doc["ship"] in ("source", "quantize")
    # ORT format beside each ONNX artifact: same answers, and the operators it needs
    import onnxruntime as ort

    out = tmp_path / "out"
    x = np.random.default_rng(0).uniform(0, 1, (2, SIZE, SIZE, 3)).astype(np.float32)
    for name in ("source", "quantize"):
        runs = [ort.InferenceSession(str(out / f"{name}.{ext}"), providers=[
            "CPUExecutionProvider"]) for ext in ("onnx", "ort")]
        y = [s.run(None, {s.get_inputs()[0].name: x})[0] for s in runs]
        np.testing.assert_allclose(y[0], y[1], atol=1e-5)
        ops = (out / f"{name}.required_operators.config").read_text()
        assert "ai.onnx;" in ops and "Conv" in ops
        info = next(a for a in doc["artifacts"] if a["name"] == name)["validation"]
        assert info["ort_format"]["load_ms_ort"] > 0 and info["ort_format"]["operators"] > 0


def test_onnx_external_data_outside_folder_is_refused(tmp_path, tiny_onnx):
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    model = onnx.load(str(tiny_onnx))
    convert_model_to_external_data(model, location="weights.bin", size_threshold=0)
    onnx.save(model, str(model_dir / "m.onnx"))
    shutil.move(model_dir / "weights.bin", tmp_path / "weights.bin")
    for tensor in model.graph.initializer:
        for entry in tensor.external_data:
            if entry.key == "location":
                entry.value = "../weights.bin"
    onnx.save(model, str(model_dir / "m.onnx"))  # points outside its folder now
    ds = digits_16()[0]
    cfg = load_recipe(_recipe(tmp_path, "onnx", model_dir / "m.onnx")).source
    with pytest.raises(BadInput, match="outside the model's folder"):
        SOURCES["onnx"].load(cfg, ds, None)


def test_onnx_external_data_inside_folder_is_hashed(tmp_path, tiny_onnx):
    model = onnx.load(str(tiny_onnx))
    convert_model_to_external_data(model, location="weights.bin", size_threshold=0)
    onnx.save(model, str(tmp_path / "m.onnx"))
    ds = digits_16()[0]
    cfg = load_recipe(_recipe(tmp_path, "onnx", tmp_path / "m.onnx")).source
    first = SOURCES["onnx"].load(cfg, ds, None)
    data = bytearray((tmp_path / "weights.bin").read_bytes())
    data[-1] ^= 0xFF
    (tmp_path / "weights.bin").write_bytes(bytes(data))
    assert SOURCES["onnx"].load(cfg, ds, None).digest != first.digest


def test_corrupt_onnx_exits_2(tmp_path, cache_env):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x08\x07garbage" * 10)
    recipe = _recipe(tmp_path, "onnx", bad)
    result = runner.invoke(app, ["build", str(recipe), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "bad.onnx" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_keras_lambda_layer_refused_by_safe_mode(tmp_path, cache_env):
    import keras

    inp = keras.Input((SIZE, SIZE, 3))
    out = keras.layers.Dense(10, activation="softmax")(
        keras.layers.Flatten()(keras.layers.Lambda(lambda t: t * 2.0)(inp)))
    path = tmp_path / "lambda.keras"
    keras.Model(inp, out).save(path)
    recipe = _recipe(tmp_path, "keras", path, "  - step: export_onnx")
    result = runner.invoke(app, ["build", str(recipe), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "lambda.keras" in result.output and "Lambda layer" in result.output
    # Keras' own advice (safe_mode=False) is not something the tool offers
    assert "safe_mode=False" not in result.output and "source kind savedmodel" in result.output
    assert not (tmp_path / "out").exists()


def test_model_with_wrong_class_count_refused(tmp_path, cache_env):
    import keras

    inp = keras.Input((SIZE, SIZE, 3))
    out = keras.layers.Dense(3, activation="softmax")(keras.layers.Flatten()(inp))
    path = tmp_path / "three.keras"
    keras.Model(inp, out).save(path)
    recipe = _recipe(tmp_path, "keras", path, "  - step: export_onnx")
    result = runner.invoke(app, ["build", str(recipe)])
    assert result.exit_code == 2
    assert "3 outputs but the dataset has 10 classes" in result.output


def test_npz_dataset(tmp_path):
    from optimizer.data.load import load_dataset
    from optimizer.recipe.schema import NpzDataset

    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, size=(60, 12, 12), dtype=np.uint8)
    y = np.repeat(np.arange(3), 20)
    np.savez(tmp_path / "d.npz", x=x, y=y)
    ds = load_dataset(NpzDataset(kind="npz", path=tmp_path / "d.npz", classes=["a", "b", "c"]))
    assert ds.classes == ["a", "b", "c"]
    assert sorted(np.concatenate([ds.indices(s) for s in ("train", "val", "test")])) == list(
        range(60))
    assert np.bincount(ds.labels_of("test")).tolist() == [4, 4, 4]  # stratified
    np.savez(tmp_path / "bad.npz", x=x, y=y[:5])
    with pytest.raises(BadInput, match="one label per image"):
        load_dataset(NpzDataset(kind="npz", path=tmp_path / "bad.npz"))


def test_folder_dataset(tmp_path):
    from PIL import Image

    from optimizer.data.load import load_dataset
    from optimizer.recipe.schema import FolderDataset

    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir()
        for i in range(5):
            Image.new("RGB", (10 + i, 8), color=(i * 40, 0, 0)).save(tmp_path / cls / f"{i}.png")
    ds = load_dataset(FolderDataset(kind="folder", path=tmp_path))
    assert ds.classes == ["cat", "dog"] and len(ds.labels) == 10
    (tmp_path / "dog" / "broken.png").write_bytes(b"not an image")
    with pytest.raises(BadInput, match=r"broken\.png: not a readable image"):
        load_dataset(FolderDataset(kind="folder", path=tmp_path))


def test_splits_are_deterministic_and_disjoint():
    from optimizer.data.dataset import split_indices

    labels = np.repeat(np.arange(5), 30)
    a = split_indices(labels, 0.2, 0.1, seed=7)
    b = split_indices(labels, 0.2, 0.1, seed=7)
    c = split_indices(labels, 0.2, 0.1, seed=8)
    assert all(np.array_equal(a[s], b[s]) for s in a)
    assert not np.array_equal(a["test"], c["test"])
    joined = np.concatenate([a["train"], a["val"], a["test"]])
    assert sorted(joined.tolist()) == list(range(150))
    assert (len(a["test"]), len(a["val"])) == (30, 15)


def test_fashion_mnist_canonical_test_split(fashion_dir):
    from optimizer.data.load import load_dataset
    from optimizer.recipe.schema import FashionMnistDataset

    cfg = FashionMnistDataset(kind="fashion-mnist", path=fashion_dir, train_limit=200,
                              test_limit=50)
    ds = load_dataset(cfg)
    assert ds.classes[0] == "t-shirt/top" and len(ds.classes) == 10
    assert {s: len(ds.indices(s)) for s in ("train", "val", "test")} == {
        "train": 180, "val": 20, "test": 50}
    assert np.bincount(ds.labels_of("test")).tolist() == [5] * 10
    # images stay with their labels: each bar sits where its class puts it
    for i in ds.indices("test"):
        c = ds.labels[i]
        assert ds.images[i][3 + 2 * c, 10] == 230 and ds.images[i][3 + 2 * c, 2] < 40
    assert ds.images[0].shape == (28, 28) and ds.images[0].dtype == np.uint8
    assert load_dataset(cfg).digest == ds.digest
    pooled = load_dataset(cfg.model_copy(update={"canonical_test": False}))
    assert len(pooled.indices("test")) == round(250 * 0.2)


def test_fashion_mnist_debian_files():
    """The real files, where Debian's package is installed (CI installs it)."""
    from optimizer.data.load import load_dataset
    from optimizer.recipe.schema import FashionMnistDataset

    cfg = FashionMnistDataset(kind="fashion-mnist", train_limit=500, test_limit=100)
    if not (cfg.path / "t10k-labels-idx1-ubyte.gz").is_file():
        pytest.skip(f"no {cfg.path}: apt-get install dataset-fashion-mnist")
    ds = load_dataset(cfg)
    assert {s: len(ds.indices(s)) for s in ("train", "val", "test")} == {
        "train": 450, "val": 50, "test": 100}
    assert np.bincount(ds.labels_of("test")).tolist() == [10] * 10


def test_fashion_mnist_bad_idx_file(tmp_path, fashion_dir):
    import gzip

    from optimizer.data.fashion_mnist import FILES
    from optimizer.data.load import load_dataset
    from optimizer.recipe.schema import FashionMnistDataset

    for img, lbl in FILES.values():
        shutil.copy(fashion_dir / lbl, tmp_path / lbl)
        shutil.copy(fashion_dir / img, tmp_path / img)
    with gzip.open(tmp_path / FILES["test"][0], "wb") as f:
        f.write(b"\x00\x00\x08\x03" + (5).to_bytes(4, "big") * 3 + b"short")
    cfg = FashionMnistDataset(kind="fashion-mnist", path=tmp_path)
    with pytest.raises(BadInput, match="header says"):
        load_dataset(cfg)
    (tmp_path / FILES["train"][1]).write_bytes(b"not gzip at all")
    with pytest.raises(BadInput, match="unreadable idx file"):
        load_dataset(cfg)
    # the default path is not checked at recipe time; an absent package gets a hint
    missing = cfg.model_copy(update={"path": tmp_path / "nowhere"})
    with pytest.raises(BadInput, match="apt-get install dataset-fashion-mnist"):
        load_dataset(missing)
