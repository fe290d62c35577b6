"""Features through the real command, as a user runs them: every quantization mode in one
build, crop and BGR preprocessing into the packaged function, a step's artifact packaged
over three layers, the default output folder, `--force`, `--retry`, and a Fashion-MNIST
dataset with letterbox preprocessing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

from conftest import SIZE, keras_recipe, write_recipe

QUANTIZE_ALL = """
- step: export_onnx
  name: fp32
- step: quantize
  name: entropy
  calibration: entropy
  calibration_samples: 32
- step: quantize
  name: percentile
  input: fp32
  calibration: percentile
  calibration_samples: 32
- step: quantize
  name: dyn
  input: fp32
  mode: dynamic
- step: quantize
  name: qop
  input: fp32
  format: qoperator
  calibration_samples: 32
"""


def cli(*args: str, cwd: Path, cache: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OPTIMIZER_CACHE": str(cache)}
    return subprocess.run([sys.executable, "-m", "optimizer", *args], cwd=cwd, env=env,
                          capture_output=True, text=True)


def test_every_quantizer_a_step_packaged_over_three_layers_crop_bgr_and_retry(
        tmp_path, tiny_keras, zip_build):
    """One build: the four quantizations a recipe can ask for, the dynamic one packaged
    (`package.model: dyn`) in three layers and proved through the handler with crop and
    BGR preprocessing, into artifacts/NAME by default; a runtime with no wheels for the
    target is remembered, and `--retry` asks again."""
    root, _, _ = zip_build  # its cache holds the target's onnxruntime wheels
    recipe = keras_recipe(
        tmp_path, tiny_keras, name="feat", steps=QUANTIZE_ALL, gates="max_accuracy_drop: 3",
        tail="target: {name: x86_64, runtime: python3.12, memory_mb: 1769}\n"
             "runtimes: {candidates: [onnxruntime, intel-tensorflow]}\n"
             "package: {model: dyn, zip: {layers: 3}}")
    text = recipe.read_text().replace(
        "preprocess: {scale: 0.00392156862745098}",
        f"preprocess: {{scale: 0.00392156862745098, size: [{SIZE}, {SIZE}], fit: crop, "
        f"resize_to: {SIZE + 2}, channel_order: BGR}}")
    recipe.write_text(text)
    built = cli("build", str(recipe), "--json", cwd=tmp_path, cache=root / "cache")
    assert built.returncode == 0, built.stderr[-3000:]
    doc = json.loads(built.stdout)
    out = tmp_path / "artifacts" / "feat"
    assert Path(doc["out_dir"]) == Path("artifacts/feat") and (out / "report.json").is_file()
    by = {a["name"]: a for a in doc["artifacts"]}
    ops = {n: set(by[n]["info"]["ops"]) for n in ("entropy", "percentile", "dyn", "qop")}
    assert by["entropy"]["info"]["calibration"] == "entropy" and "QuantizeLinear" in \
        ops["entropy"]
    assert by["percentile"]["info"]["calibration"] == "percentile"
    assert by["dyn"]["info"]["mode"] == "dynamic" and by["dyn"]["info"]["calibration"] is None
    assert ops["dyn"] & {"ConvInteger", "MatMulInteger", "DynamicQuantizeLinear"}
    assert "QLinearConv" in ops["qop"] and "QuantizeLinear" in ops["qop"]
    assert "QLinearConv" not in ops["entropy"]
    for name in ("entropy", "percentile", "dyn", "qop"):  # each measured and gated
        assert abs(by["source"]["validation"]["accuracy"]
                   - by[name]["validation"]["accuracy"]) <= 3.0, name

    zips = {p["file"]: p for p in doc["packages"] if p["kind"] in ("zip", "layer")}
    assert set(zips) == {"function.zip", "layer-1.zip", "layer-2.zip", "layer-3.zip"}
    fn = zips["function.zip"]
    assert fn["model"] == "dyn" and fn["proof"]["label"] == fn["proof"]["expected"]
    assert fn["proof"]["classes_checked"] >= 8
    with zipfile.ZipFile(out / "package" / "function.zip") as z:
        shipped = json.loads(z.read("model/package.json"))
    pre = shipped["preprocess"]
    assert (pre["fit"], pre["resize_to"], pre["channel_order"]) == ("crop", SIZE + 2, "BGR")
    assert shipped["digest"] == by["dyn"]["digest"]

    itf = next(r for r in doc["runtimes"]["targets"]["x86_64"]["best_per_runtime"]
               if r["runtime"] == "intel-tensorflow")
    assert not itf["available"] and "no wheels" in itf["reason"]
    again = cli("build", str(recipe), "--json", cwd=tmp_path, cache=root / "cache")
    assert again.returncode == 0 and "failed before (--retry asks again)" in again.stderr
    assert json.loads(again.stdout)["cache"]["misses"] == 0
    retried = cli("build", str(recipe), "--retry", "--json", cwd=tmp_path, cache=root / "cache")
    assert retried.returncode == 0, retried.stderr[-2000:]
    assert "failed before" not in retried.stderr
    assert "run    wheel sizes of intel-tensorflow" in retried.stderr
    assert json.loads(retried.stdout)["cache"]["misses"] >= 1


def test_force_makes_everything_again_to_the_same_bytes(tmp_path, tiny_keras):
    recipe = keras_recipe(tmp_path, tiny_keras, name="forced",
                          steps="- {step: export_onnx, name: fp32}\n"
                                "- {step: quantize, name: int8, calibration_samples: 32}")
    cache = tmp_path / "cache"
    first = cli("build", str(recipe), "--out", "out", "--json", cwd=tmp_path, cache=cache)
    assert first.returncode == 0, first.stderr[-2000:]
    forced = cli("build", str(recipe), "--out", "out", "--json", "--force", cwd=tmp_path,
                 cache=cache)
    assert forced.returncode == 0, forced.stderr[-2000:]
    a, b = json.loads(first.stdout), json.loads(forced.stdout)
    assert b["cache"]["hits"] == 0 and b["cache"]["misses"] == a["cache"]["misses"]
    assert "cached" not in forced.stderr.replace("all_cached", "")
    assert [x["sha256"] for x in a["artifacts"]] == [x["sha256"] for x in b["artifacts"]]


def test_a_fashion_mnist_build(tmp_path, fashion_dir):
    """Fashion-MNIST's own class names, its canonical test split, grey 28 px images, through
    a build of a small model trained on it here."""
    import keras
    import numpy as np

    from optimizer.data.dataset import prepared
    from optimizer.data.load import load_dataset
    from optimizer.preprocess_spec import Preprocess
    from optimizer.recipe.schema import FashionMnistDataset

    ds = load_dataset(FashionMnistDataset(kind="fashion-mnist", path=fashion_dir))
    pre = Preprocess(size=(28, 28), channels=1, scale=1 / 255)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([  # the class is where the bar is: no pooling that forgets it
        keras.Input((28, 28, 1)), keras.layers.Conv2D(4, 3, activation="relu"),
        keras.layers.Flatten(), keras.layers.Dense(10, activation="softmax")])
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
    model.fit(prepared(ds, "train", pre), ds.labels_of("train"), epochs=30, verbose=0)
    model.save(tmp_path / "fashion.keras")
    recipe = write_recipe(tmp_path, f"""
        name: fashion
        source:
          kind: keras
          path: {tmp_path / "fashion.keras"}
          preprocess: {{channels: 1, scale: 0.00392156862745098, fit: letterbox,
                        pad_color: [0, 0, 0]}}
        dataset: {{kind: fashion-mnist, path: {fashion_dir}}}
        steps:
          - {{step: export_onnx, name: fp32}}
          - {{step: quantize, name: int8, calibration_samples: 64}}
        validate: {{max_accuracy_drop: 2, min_source_accuracy: 90,
                    latency: {{warmup: 1, runs: 5}}}}
        """)
    built = cli("build", str(recipe), "--out", "out", "--json", cwd=tmp_path,
                cache=tmp_path / "cache")
    assert built.returncode == 0, built.stderr[-3000:]
    doc = json.loads(built.stdout)
    assert doc["dataset"]["name"] == "fashion-mnist" and doc["classes"][9] == "ankle boot"
    assert doc["dataset"]["splits"]["test"] == 100  # t10k, as the files hold it
    assert doc["source_check"]["verdict"] == "ok" and doc["ship"] in ("fp32", "int8")
    assert [r["class"] for r in doc["per_class"]["rows"]][:2] == ["t-shirt/top", "trouser"]
    assert np.sum([r["n"] for r in doc["per_class"]["rows"]]) == 100
    shipped = json.loads((tmp_path / "out" / "preprocess.json").read_text())
    assert (shipped["fit"], shipped["channels"], shipped["size"]) == ("letterbox", 1, [28, 28])
