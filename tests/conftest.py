"""Shared fixtures: a tiny real Keras model trained on digits, and recipe helpers."""

from __future__ import annotations

import hashlib
import json
import os
import textwrap
from pathlib import Path

import pytest

from optimizer.preprocess_spec import Preprocess

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# the isolated MXNet env outlives any one test's cache (made once per machine, ~30 s)
os.environ.setdefault("OPTIMIZER_ENVS", str(Path.home() / ".cache" / "optimizer" / "envs"))

SIZE = 16


def digits_16():
    from optimizer.data.dataset import prepared
    from optimizer.data.digits import load
    from optimizer.recipe.schema import DigitsDataset

    ds = load(DigitsDataset(kind="sklearn-digits"))
    pre = Preprocess(size=(SIZE, SIZE), channels=3, scale=1 / 255)
    return ds, pre, prepared(ds, "train", pre), ds.labels_of("train")


@pytest.fixture(scope="session")
def tiny_keras(tmp_path_factory) -> Path:
    """A small CNN (not an application) so the suite trains it in seconds."""
    return train_tiny_keras(tmp_path_factory.mktemp("model") / "tiny.keras")


def train_tiny_keras(path: Path) -> Path:
    """The suite's teacher: a two-convolution CNN on digits at 16 px (92% on test)."""
    import keras

    keras.utils.set_random_seed(0)
    _, _, x, y = digits_16()
    model = keras.Sequential([
        keras.Input((SIZE, SIZE, 3), name="input"),
        keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu"),
        keras.layers.GlobalAveragePooling2D(),
        keras.layers.Dense(10, activation="softmax"),
    ])
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=30, batch_size=32, verbose=0)
    model.save(path)
    return path


def user_model_maker():
    """recipes/models/make_user_model.py as a module (it is a script, not a package)."""
    import importlib.util

    maker = Path(__file__).resolve().parent.parent / "recipes" / "models" / "make_user_model.py"
    spec = importlib.util.spec_from_file_location("make_user_model", maker)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def digit_cnn(tmp_path_factory) -> Path:
    """A user's model (recipes/models/make_user_model.py's): digits in digit order, 16 px
    RGB, its own Rescaling(1/255), 98% on the test split (trained on the train split)."""
    from optimizer.data.dataset import prepared

    module = user_model_maker()
    ds, _, _, y = digits_16()
    x = prepared(ds, "train", Preprocess(size=(SIZE, SIZE), channels=3))
    path = tmp_path_factory.mktemp("user-model") / "digit-cnn.keras"
    module.cnn(SIZE, x, y).save(path)
    return path


def write_idx(path: Path, array) -> Path:
    """An idx file of unsigned bytes, gzipped as Debian ships them."""
    import gzip

    import numpy as np

    arr = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(d.to_bytes(4, "big") for d in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.tobytes())
    return path


def fashion_like(folder: Path, train: int = 300, test: int = 100) -> Path:
    """Fashion-MNIST's four idx files in Debian's layout, small: 28x28 images of a bar whose
    position is the class, with noise, so a small model can learn them in seconds."""
    import numpy as np

    from optimizer.data.fashion_mnist import FILES

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for split, n in (("train", train), ("test", test)):
        labels = np.arange(n) % 10
        images = rng.integers(0, 40, (n, 28, 28))
        for i, c in enumerate(labels):
            images[i, 2 + 2 * c: 5 + 2 * c, 4:24] = 230
        img_file, lbl_file = FILES[split]
        write_idx(folder / img_file, images)
        write_idx(folder / lbl_file, labels)
    return folder


@pytest.fixture(scope="session")
def fashion_dir(tmp_path_factory) -> Path:
    return fashion_like(tmp_path_factory.mktemp("fashion-mnist"))


@pytest.fixture
def cache_env(tmp_path, monkeypatch) -> Path:
    root = tmp_path / "cache"
    monkeypatch.setenv("OPTIMIZER_CACHE", str(root))
    return root


def write_recipe(folder: Path, body: str, name: str = "recipe.yaml") -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(body).lstrip())
    return path


TINY_STEPS = """
- step: export_onnx
  name: fp32
- step: optimize_graph
  name: fp32-opt
- step: quantize
  name: int8
  calibration_samples: 64
- step: fp16
  input: fp32-opt
"""


def _block(text: str, indent: int) -> str:
    return "\n".join(" " * indent + line for line in text.strip().splitlines()).lstrip()


def keras_recipe(folder: Path, model: Path, *, name: str = "tiny", steps: str = TINY_STEPS,
                 gates: str = "max_accuracy_drop: 5", tail: str = "") -> Path:
    """A recipe for a Keras file on digits; `tail` adds top-level sections (target, package)."""
    return write_recipe(folder, f"""
        name: {name}
        source:
          kind: keras
          path: {model}
          preprocess: {{scale: 0.00392156862745098}}
        dataset:
          kind: sklearn-digits
        steps:
          {_block(steps, 10)}
        validate:
          {_block(gates, 10)}
          latency: {{warmup: 2, runs: 10}}
        {_block(tail, 8)}
        """, name=f"{name}.yaml")


def tiny_recipe(folder: Path, model: Path, gates: str = "max_accuracy_drop: 5") -> Path:
    return keras_recipe(folder, model, gates=gates)


def mar_zip(path: Path, members: dict[str, bytes], link: str | None = None) -> Path:
    """An MMS-looking archive with the given members, and a symlink member if `link`."""
    import json
    import zipfile

    with zipfile.ZipFile(path, "w") as z:
        z.writestr("MAR-INF/MANIFEST.json", json.dumps({"model": {"modelName": "m"}}))
        for name, data in members.items():
            z.writestr(name, data)
        if link:
            info = zipfile.ZipInfo(link)
            info.create_system = 3
            info.external_attr = 0o120777 << 16
            z.writestr(info, "/etc/passwd")
    return path


def package_recipe(folder: Path, model: Path, package: str, name: str = "pkg") -> Path:
    """One ONNX export of the tiny model, packaged as `package` says, for x86_64 Python 3.12."""
    pkg = "\n".join("  " + line for line in package.strip().splitlines())
    return keras_recipe(folder, model, name=name, steps="- {step: export_onnx, name: fp32}",
                        tail="target: {name: x86_64, runtime: python3.12, memory_mb: 1769}\n"
                        f"package:\n{pkg}")


def build(recipe: Path, out: Path, cache: Path):
    from typer.testing import CliRunner

    from optimizer.cli import app

    return CliRunner().invoke(app, ["build", str(recipe), "--out", str(out), "--json",
                                    "--cache-dir", str(cache)])


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="session")
def zip_build(tmp_path_factory, tiny_keras):
    root = tmp_path_factory.mktemp("zipbuild")
    recipe = package_recipe(root, tiny_keras, "zip: {layers: 1}")
    result = build(recipe, root / "out", root / "cache")
    assert result.exit_code == 0, result.output
    return root, recipe, json.loads(result.stdout)
