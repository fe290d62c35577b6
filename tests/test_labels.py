"""The label contract: classes in the model's order, a source the build can vouch for,
validation without labels, and the packaged function naming every class as the build does.

Built as a user brings them: a Keras CNN trained on digits in digit order with its own
Rescaling layer, and class folders named `zero` ... `nine`, which sort in another order.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from optimizer.cli import app
from tests.conftest import write_recipe

runner = CliRunner()
WORDS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
LATENCY = "latency: {warmup: 2, runs: 10}"


@pytest.fixture(scope="module")
def word_folders(tmp_path_factory) -> Path:
    """scikit-learn's digits as 8x8 PNGs in folders named by the word for each digit."""
    from sklearn.datasets import load_digits

    root = tmp_path_factory.mktemp("words") / "digits"
    d = load_digits()
    imgs = np.clip(np.rint(d.images * (255.0 / 16.0)), 0, 255).astype(np.uint8)
    for i, (img, y) in enumerate(zip(imgs, d.target, strict=True)):
        folder = root / WORDS[y]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(folder / f"{i:04d}.png")
    return root


def _recipe(folder: Path, model: Path, data: Path, extra: str = "", name: str = "words",
            tail: str = "", gates: str = "") -> Path:
    return write_recipe(folder, f"""
        name: {name}
        source: {{kind: keras, path: {model}}}
        dataset:
          kind: folder
          path: {data}
          {extra}
        steps:
          - {{step: export_onnx, name: fp32}}
        validate: {{{LATENCY}{', ' + gates if gates else ''}}}
        {tail}
        """, name=f"{name}.yaml")


def _build(recipe: Path, out: Path, *args: str):
    return runner.invoke(app, ["build", str(recipe), "--out", str(out), *args])


def test_mislabelled_folder_stops_in_seconds_with_the_order_to_paste(tmp_path, cache_env,
                                                                     digit_cnn, word_folders):
    recipe = _recipe(tmp_path, digit_cnn, word_folders, tail="package: {zip: {layers: 1}}")
    t0 = time.perf_counter()
    bad = _build(recipe, tmp_path / "out", "--json")
    seconds = time.perf_counter() - t0
    assert bad.exit_code == 1, bad.output
    doc = json.loads(bad.stdout)
    assert doc["ok"] is False and doc["exit_code"] == 1
    assert "near chance" in doc["error"] and "classes: [" in doc["error"]
    check = doc["source_check"]
    assert check["suggested_classes"] == WORDS and check["best_order_accuracy"] >= 97
    assert check["accuracy"] < 20
    assert not (tmp_path / "out").exists()  # nothing built, nothing published
    assert seconds < 60, seconds

    # the suggested line, pasted as the message says, gives a correct function
    pasted = doc["error"].split("classes: ", 1)[1]
    fixed = _recipe(tmp_path, digit_cnn, word_folders, extra=f"classes: {pasted}",
                    name="words-fixed", tail="package: {zip: {layers: 1}}")
    good = _build(fixed, tmp_path / "fixed", "--json")
    assert good.exit_code == 0, good.output
    report = json.loads(good.stdout)
    assert report["classes"] == WORDS
    # readable by others as umask allows (mkdtemp made it 0700), and the user's own Keras
    # file is named where it is, not as a file the output folder does not hold
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "fixed").stat().st_mode & 0o777 == 0o777 & ~umask
    source = report["artifacts"][0]
    assert source["file"] is None and source["path"] == str(digit_cnn)
    assert report["source_check"]["verdict"] == "ok"
    assert report["artifacts"][0]["validation"]["accuracy"] >= 97
    fn = next(p for p in report["packages"] if p["kind"] == "zip")
    # the proof asked the packaged handler for one test image of every class
    assert fn["proof"]["classes_checked"] == 10
    assert fn["proof"]["labels_checked"] == WORDS
    event = json.loads((tmp_path / "fixed/package/sample-event.json").read_text())
    assert len(json.loads(event["body"])["images"]) >= 5
    inv = runner.invoke(app, ["invoke", str(tmp_path / "fixed"), "--json"])
    assert inv.exit_code == 0, inv.output
    answers = [p["top"][0]["label"] for p in
               json.loads(json.loads(inv.stdout)["response"]["body"])["predictions"]]
    assert answers == WORDS[:len(answers)]
    # per-class results, in output order, and the confusion matrix beside them
    rows = report["per_class"]["rows"]
    assert [r["class"] for r in rows] == WORDS and all(r["n"] > 0 for r in rows)
    assert (tmp_path / "fixed/confusion.svg").read_text().startswith("<?xml")
    md = (tmp_path / "fixed/report.md").read_text()
    assert "| 7 | seven |" in md and "confusion.svg" in md
    manifest = json.loads((tmp_path / "fixed/manifest.json").read_text())
    assert "confusion.svg" in {f["path"] for f in manifest["artifacts"]}


def test_class_list_is_checked_against_the_folders_at_load(tmp_path, digit_cnn, word_folders):
    wrong = [*WORDS[:9], "nein"]
    recipe = _recipe(tmp_path, digit_cnn, word_folders, extra=f"classes: {json.dumps(wrong)}")
    result = runner.invoke(app, ["check", str(recipe)])
    assert result.exit_code == 2
    line = recipe.read_text().splitlines().index(f"  classes: {json.dumps(wrong)}") + 1
    assert f"words.yaml:{line}: dataset.classes" in result.output
    assert "no folder for ['nein']" in result.output and "['nine'] not in the list" in \
        result.output
    digits = write_recipe(tmp_path, f"""
        name: d
        source: {{kind: keras, path: {digit_cnn}}}
        dataset: {{kind: sklearn-digits, classes: [a, '1', '2', '3', '4', '5', '6', '7', '8',
                   '9']}}
        steps: [{{step: export_onnx}}]
        """, name="d.yaml")
    result = runner.invoke(app, ["check", str(digits)])
    assert result.exit_code == 2 and "d.yaml:3: dataset.classes" in result.output


def test_a_model_that_is_simply_bad_is_refused(tmp_path, cache_env, word_folders):
    import keras

    keras.utils.set_random_seed(3)
    net = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Rescaling(1 / 255),
                            keras.layers.Flatten(), keras.layers.Dense(10, activation="softmax")])
    path = tmp_path / "untrained.keras"
    net.save(path)
    result = _build(_recipe(tmp_path, path, word_folders,
                            extra=f"classes: {json.dumps(WORDS)}"), tmp_path / "out", "--json")
    assert result.exit_code == 1, result.output
    doc = json.loads(result.stdout)
    assert "near chance" in doc["error"] and "preprocessing" in doc["error"]
    assert doc["source_check"]["suggested_classes"] is None
    assert not (tmp_path / "out").exists()


def test_min_source_accuracy(tmp_path, cache_env, digit_cnn, word_folders):
    recipe = _recipe(tmp_path, digit_cnn, word_folders, extra=f"classes: {json.dumps(WORDS)}",
                     gates="min_source_accuracy: 99.9")
    result = _build(recipe, tmp_path / "out")
    assert result.exit_code == 1 and "below validate.min_source_accuracy 99.9%" in \
        result.output


def test_swapped_pair_is_caught_though_accuracy_looks_fine(tmp_path, cache_env, digit_cnn,
                                                           word_folders):
    """Two of ten classes swapped: 80% looks like a model, not like a wrong order."""
    order = [*WORDS]
    order[3], order[8] = order[8], order[3]
    result = _build(_recipe(tmp_path, digit_cnn, word_folders,
                            extra=f"classes: {json.dumps(order)}"), tmp_path / "out", "--json")
    assert result.exit_code == 1
    check = json.loads(result.stdout)["source_check"]
    assert 70 < check["accuracy"] < 85 and check["suggested_classes"] == WORDS


def test_labels_the_model_carries_order_the_dataset(tmp_path, cache_env, digit_cnn,
                                                    word_folders):
    """An ONNX model with its labels in metadata_props, and a labels file for a Keras one:
    sorted folder names are put in the model's order; an explicit list must agree."""
    import onnx

    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(WORDS) + "\n")
    ok = _build(write_recipe(tmp_path, f"""
        name: lf
        source: {{kind: keras, path: {digit_cnn}, labels: {labels}}}
        dataset: {{kind: folder, path: {word_folders}}}
        steps: [{{step: export_onnx, name: fp32}}]
        validate: {{{LATENCY}}}
        """, name="lf.yaml"), tmp_path / "lf", "--json")
    assert ok.exit_code == 0, ok.output
    doc = json.loads(ok.stdout)
    assert doc["classes"] == WORDS and str(labels) in doc["dataset"]["classes_from"]
    exported = tmp_path / "lf" / "fp32.onnx"
    props = {p.key: p.value for p in onnx.load(str(exported)).metadata_props}
    assert json.loads(props["labels"]) == WORDS  # our ONNX carries its labels onward

    src = write_recipe(tmp_path, f"""
        name: ox
        source: {{kind: onnx, path: {exported}}}
        dataset: {{kind: folder, path: {word_folders}}}
        steps: [{{step: quantize, name: int8, calibration_samples: 32}}]
        validate: {{{LATENCY}}}
        """, name="ox.yaml")
    result = _build(src, tmp_path / "ox", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["artifacts"][0]["validation"]["accuracy"] >= 97

    backwards = json.dumps(WORDS[::-1])
    (tmp_path / "ox.yaml").write_text(src.read_text().replace(
        f"path: {word_folders}}}", f"path: {word_folders}, classes: {backwards}}}"))
    result = _build(src, tmp_path / "ox2")
    assert result.exit_code == 2
    assert "output 0 is 'nine' in dataset.classes but 'zero' in the model's" in result.output
    assert "metadata_props" in result.output


def test_unlabeled_folder_is_judged_by_agreement(tmp_path, cache_env, digit_cnn, word_folders):
    """Images without class folders: gated on agreement with the source and KL; the report
    says no labels; the function still answers with the model's names (its labels file)."""
    loose = tmp_path / "loose"
    loose.mkdir()
    for i, f in enumerate(sorted(word_folders.rglob("*.png"))[::4]):
        (loose / f"img{i:04d}.png").write_bytes(f.read_bytes())
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps(WORDS))
    recipe = write_recipe(tmp_path, f"""
        name: nolabels
        source: {{kind: keras, path: {digit_cnn}, labels: {labels}}}
        dataset: {{kind: folder, path: {loose}}}
        steps:
          - {{step: export_onnx, name: fp32}}
          - {{step: quantize, name: int8, calibration_samples: 64}}
        validate: {{{LATENCY}, max_class_drop: 10}}
        package: {{zip: {{layers: 1}}}}
        """, name="nolabels.yaml")
    result = _build(recipe, tmp_path / "out", "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["dataset"]["labeled"] is False and doc["source_check"]["verdict"] == "no labels"
    int8 = next(a for a in doc["artifacts"] if a["name"] == "int8")
    gates = {g["gate"]: g for g in int8["gates"]}
    assert set(gates) >= {"min_agreement", "max_mean_kl", "max_class_drop"}
    assert gates["min_agreement"]["limit"] == 99.0 and int8["validation"]["accuracy"] is None
    # the gate judged the measured number; int8 moves probabilities a little, not to zero
    assert gates["max_mean_kl"]["value"] == round(int8["validation"]["mean_kl"], 4)
    assert 0 < int8["validation"]["mean_kl"] <= gates["max_mean_kl"]["limit"]
    assert 0 < int8["validation"]["max_prob_diff"] < 1
    assert doc["per_class"]["basis"].startswith("agreement")
    assert sum(r["n"] for r in doc["per_class"]["rows"]) == doc["dataset"]["splits"]["test"]
    md = (tmp_path / "out/report.md").read_text()
    assert "no labels" in md and "Accuracy is top-1" not in md
    proof = next(p for p in doc["packages"] if p["kind"] == "zip")["proof"]
    assert set(proof["labels_checked"]) <= set(WORDS) and proof["classes_checked"] >= 8

    # a swap trains on labels: refused with a reason, not a crash
    swap = recipe.read_text().replace(
        "- {step: export_onnx, name: fp32}",
        "- {step: swap, student: {architecture: MobileNetV2, alpha: 0.35, input_size: 32}}\n"
        "  - {step: export_onnx, name: fp32}")
    (tmp_path / "swap.yaml").write_text(swap)
    refused = _build(tmp_path / "swap.yaml", tmp_path / "swap")
    assert refused.exit_code == 2 and "swap trains on labels" in refused.output


def test_mixed_folder_and_labels_none(tmp_path, cache_env, digit_cnn, word_folders):
    from optimizer.data.load import load_dataset
    from optimizer.errors import BadInput
    from optimizer.recipe.schema import FolderDataset

    mixed = tmp_path / "mixed"
    (mixed / "a").mkdir(parents=True)
    (mixed / "b").mkdir()
    for name in ("a/1.png", "b/2.png", "3.png"):
        Image.new("L", (8, 8), 40).save(mixed / name)
    with pytest.raises(BadInput, match="labels: none"):
        load_dataset(FolderDataset(kind="folder", path=mixed))
    ds = load_dataset(FolderDataset(kind="folder", path=mixed, labels="none"))
    assert not ds.labeled and len(ds.images) == 3 and ds.classes == []
    flat = load_dataset(FolderDataset(kind="folder", path=word_folders / "seven"))
    assert not flat.labeled and flat.classes_from == "the model's outputs"


def test_npz_without_y_and_class_reorder(tmp_path):
    from optimizer.data.load import load_dataset
    from optimizer.recipe.schema import DigitsDataset, NpzDataset

    x = np.random.default_rng(0).integers(0, 256, (30, 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "x.npz", x=x)
    ds = load_dataset(NpzDataset(kind="npz", path=tmp_path / "x.npz"))
    assert not ds.labeled and sum(len(ds.indices(s)) for s in ("train", "val", "test")) == 30
    base = load_dataset(DigitsDataset(kind="sklearn-digits"))
    order = [str(d) for d in (9, 8, 7, 6, 5, 4, 3, 2, 1, 0)]
    flipped = load_dataset(DigitsDataset(kind="sklearn-digits", classes=order))
    # the same images in every split; each keeps its digit's name
    assert all(np.array_equal(base.splits[s], flipped.splits[s]) for s in base.splits)
    assert all(flipped.classes[flipped.labels[i]] == base.classes[base.labels[i]]
               for i in range(0, 1797, 97))
    renamed = load_dataset(DigitsDataset(kind="sklearn-digits", classes=WORDS))
    assert renamed.classes[renamed.labels[7]] == WORDS[base.labels[7]]


def test_label_files_in_the_forms_exporters_write(tmp_path):
    from optimizer.data.label_names import parse
    from optimizer.errors import BadInput

    assert parse("cat\ndog\n\n", "f") == ["cat", "dog"]
    assert parse('["cat", "dog"]', "f") == ["cat", "dog"]
    assert parse("{0: 'person', 1: 'bicycle'}", "f") == ["person", "bicycle"]  # YOLO's
    assert parse('{"1": "b", "0": "a"}', "f") == ["a", "b"]
    for bad, why in (("{0: 'a', 2: 'c'}", "0..1"), ("a\na\n", "more than once"),
                     ("[1, [2]]", "list of names"), ("", "no labels")):
        with pytest.raises(BadInput, match=why):
            parse(bad, "f")
