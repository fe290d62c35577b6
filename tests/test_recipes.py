"""Shipped recipes, built as a user would build them (the small ones; mobilenet-lambda is
built by README line 1 and CI)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from optimizer.cli import app
from tests.conftest import user_model_maker

runner = CliRunner()
RECIPES = Path(__file__).resolve().parent.parent / "recipes"


def test_user_photos_recipe_ships_and_reads_every_photo_format(tmp_path, monkeypatch,
                                                               zip_build):
    """A model trained elsewhere, photos without labels: the build ships, and the packaged
    function names the digits in photos of every format right (the generator knows them)."""
    monkeypatch.setenv("OPTIMIZER_CACHE", str(zip_build[0] / "cache"))  # its wheels
    result = runner.invoke(app, ["build", str(RECIPES / "user-photos.yaml"), "--out",
                                 str(tmp_path / "out"), "--json"])
    assert result.exit_code == 0, result.output[-3000:]
    doc = json.loads(result.stdout)
    assert doc["dataset"]["labeled"] is False and doc["ship"]
    assert doc["classes"][7] == "seven"
    fn = next(p for p in doc["packages"] if p["kind"] == "zip")
    assert fn["proof"]["classes_checked"] == 10

    maker = user_model_maker()
    images, labels = maker._digits()
    order = np.random.default_rng(0).permutation(len(images))
    truth = labels[order[maker.TRAIN:]]
    files = sorted((RECIPES / "data" / "digit-photos").iterdir())
    picked = list(range(0, 7 * 2))  # two photos of each of the seven formats
    event = tmp_path / "photos.json"
    event.write_text(json.dumps({"images": [base64.b64encode(files[i].read_bytes()).decode()
                                            for i in picked]}))
    inv = runner.invoke(app, ["invoke", str(tmp_path / "out"), "--event", str(event),
                              "--json"])
    assert inv.exit_code == 0, inv.output[-2000:]
    body = json.loads(json.loads(inv.stdout)["response"]["body"])
    said = [p["top"][0]["label"] for p in body["predictions"]]
    right = [maker.WORDS[truth[i]] for i in picked]
    assert sum(a == b for a, b in zip(said, right, strict=True)) >= len(picked) - 1, (said,
                                                                                     right)
