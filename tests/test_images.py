"""Container images: Docker Engine builds, the daemonless writer, the TensorFlow fallback.

Each image is started with `docker run` and classifies a digit through its handler via the
local Runtime API. The base is a Debian + python3 image debootstrapped here (no registry is
reachable), built once and kept by tag.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from optimizer.cli import app
from tests.test_package import build, package_recipe, sha
from tests.test_template import lint

runner = CliRunner()


def _engine_ok() -> bool:
    try:
        import docker

        docker.from_env().ping()
        return True
    except Exception:
        return False


pytestmark = pytest.mark.skipif(not _engine_ok(), reason="no Docker Engine reachable")

IMAGE = """
image:
  template: debian
  base: local/debian-python:3.11
  python: "3.11"
  glibc: "2.36"
"""


@pytest.fixture(scope="module")
def image_cache(tmp_path_factory) -> Path:
    """One cache for this module's image builds: the dependencies for the base's Python are
    resolved once, as a user's second build would find them."""
    return tmp_path_factory.mktemp("image-cache")


@pytest.fixture(scope="session")
def base_image() -> str:
    """`optimizer base-image` as a user runs it (it says so when the engine has the tag)."""
    if shutil.which("debootstrap") is None:
        pytest.skip("debootstrap is not installed; it builds the local base image")
    tag = "local/debian-python:3.11"
    made = runner.invoke(app, ["base-image", "--tag", tag, "--suite", "bookworm"])
    assert made.exit_code == 0, made.output
    assert tag in made.output
    from optimizer.docker_client import client

    probe = client().containers.run(tag, ["-c", "import sys; print(sys.version_info[:2])"],
                                    entrypoint="python3", remove=True)
    assert probe.decode().strip() == "(3, 11)"
    return tag


def test_engine_image_and_daemonless_tarball_both_classify(tmp_path, tiny_keras, base_image,
                                                          image_cache):
    recipe = package_recipe(tmp_path, tiny_keras, IMAGE, name="img")
    first = build(recipe, tmp_path / "out1", image_cache)
    assert first.exit_code == 0, first.output
    doc = json.loads(first.stdout)
    kinds = {p["kind"]: p for p in doc["packages"]}
    image, tarball = kinds["image"], kinds["image-tarball"]
    for rec in (image, tarball):
        assert rec["proof"]["label"] == rec["proof"]["expected"]
        assert 400 <= rec["proof"]["bad_request_status"] < 500
        assert all(lim["ok"] for lim in rec["limits"])
    assert tarball["proof"]["loaded_with"] == "docker load"
    template = (tmp_path / "out1/package/template.yaml").read_text()
    assert lint(template) == [] and "PackageType: Image" in template
    assert f"ImageUri: {image['ref']}" in template and "SnapStart" not in template
    assert tarball["config_bytes"] < 16 * 1024
    assert [layer["from"] for layer in tarball["layers"]] == ["base", "optimizer", "optimizer"]

    second = build(recipe, tmp_path / "out2", image_cache)
    assert second.exit_code == 0, second.output
    again = {p["kind"]: p for p in json.loads(second.stdout)["packages"]}["image-tarball"]
    for key in ("config_digest", "manifest_digest", "sha256"):
        assert again[key] == tarball[key], key
    assert sha(tmp_path / "out1/package/image.tar") == sha(tmp_path / "out2/package/image.tar")

    inv = runner.invoke(app, ["invoke", f"docker://{image['ref']}", "--event",
                              str(tmp_path / "out1/package/sample-event.json"), "--json"])
    assert inv.exit_code == 0, inv.output
    run = json.loads(inv.stdout)
    label = json.loads(run["response"]["body"])["predictions"][0]["top"][0]["label"]
    assert label == image["proof"]["expected"] and run["init_ms"] > 0
    assert "Max Memory Used" in run["report"] and "--memory 1769m" in run["cap_method"]
    assert run["init_breakdown"]["model_load_ms"] > 0  # read from the container's log
    snap = runner.invoke(app, ["invoke", f"docker://{image['ref']}", "--snap-start"])
    assert snap.exit_code == 2 and "container images cannot use SnapStart" in snap.output
    # the build's folder is enough: it runs that build's image with its sample event
    folder = runner.invoke(app, ["invoke", str(tmp_path / "out1"), "--json"])
    assert folder.exit_code == 0, folder.output
    assert json.loads(folder.stdout)["response"]["statusCode"] == 200

    for target in (str(tmp_path / "out1/package/image.tar"), f"docker://{image['ref']}"):
        checked = runner.invoke(app, ["check-size", target, "--json", "--target", "x86_64"])
        assert checked.exit_code == 0, checked.output
        assert json.loads(checked.stdout)["ok"]

    # the tarball itself, loaded and run; a timeout shorter than a request is Lambda's
    event = str(tmp_path / "out1/package/sample-event.json")
    tar = runner.invoke(app, ["invoke", str(tmp_path / "out1/package/image.tar"), "--event",
                              event, "--timeout", "60", "--json"])
    assert tar.exit_code == 0, tar.output
    assert json.loads(tar.stdout)["response"]["statusCode"] == 200
    late = runner.invoke(app, ["invoke", f"docker://{image['ref']}", "--event", event,
                               "--timeout", "0.001", "--json"])
    assert late.exit_code == 1, late.output
    timed_out = json.loads(late.stdout)
    assert timed_out["status"] == "timeout" and "Task timed out" in timed_out["error"]

    # the memory sweep of an image, by cost, with cold starts on the bill
    tuned = runner.invoke(app, ["tune", f"docker://{image['ref']}", "--memory", "512,1769",
                                "--invocations", "2", "--strategy", "cost",
                                "--cold-per-1000", "100", "--event", event, "--out",
                                str(tmp_path / "tune"), "--json"])
    assert tuned.exit_code == 0, tuned.output
    doc = json.loads(tuned.stdout)
    assert doc["kind"] == "image" and [r["memory_mb"] for r in doc["rows"]] == [512, 1769]
    key = "cost_per_million_with_cold_usd"
    assert all(r[key] > r["cost_per_million_usd"] for r in doc["rows"])  # init is billed
    assert doc["recommended_memory_mb"] == min(doc["rows"], key=lambda r: (
        r[key], r["p50_ms"]))["memory_mb"]


def test_tensorflow_runtime_is_refused_as_zip_and_built_as_image(tmp_path, tiny_keras,
                                                                  base_image, image_cache):
    pkg = "model: source\nzip: {layers: 1}\n" + IMAGE.strip() + "\n  tarball: false"
    recipe = package_recipe(tmp_path, tiny_keras, pkg, name="tf")
    result = build(recipe, tmp_path / "out", image_cache)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    refused = next(p for p in doc["packages"] if "refused" in p)
    assert refused["kind"] == "zip" and refused["unzipped_bytes"] > refused["limit_bytes"]
    assert "tensorflow" in refused["refused"] and "250.0 MiB (262,144,000 B)" in \
        refused["refused"]
    image = next(p for p in doc["packages"] if p["kind"] == "image")
    assert image["proof"]["label"] == image["proof"]["expected"]
    assert not (tmp_path / "out" / "package" / "function.zip").exists()
    assert "built as a container image instead" in (tmp_path / "out/report.md").read_text()


def test_a_base_image_the_engine_lacks_is_a_clear_error(tmp_path, tiny_keras):
    pkg = IMAGE.replace("local/debian-python:3.11", "local/no-such-base:1")
    recipe = package_recipe(tmp_path, tiny_keras, pkg, name="nobase")
    checked = runner.invoke(app, ["check", str(recipe)])
    assert checked.exit_code == 2 and "optimizer base-image" in checked.output
    result = build(recipe, tmp_path / "out", tmp_path / "cache")
    assert result.exit_code == 2
    assert "base image local/no-such-base:1 is not in the local Docker Engine" in result.output
    assert not (tmp_path / "out").exists()
    # found before any step: nothing was exported, nothing measured, nothing cached
    assert "run " not in result.stderr and "measure" not in result.stderr
    assert not list((tmp_path / "cache").glob("objects/*/*"))


def test_default_lambda_template_on_a_lambda_like_base(tmp_path, tiny_keras, base_image,
                                                      image_cache):
    """The AWS base image cannot be pulled here; a local stand-in with its contract (entry
    point running the runtime client, /var/task) proves the lambda template's layout."""
    from optimizer.package.baseimage import ensure_lambda_like

    base = ensure_lambda_like("local/lambda-python:3.11", "bookworm")
    pkg = IMAGE.replace("template: debian", "template: lambda").replace(
        "local/debian-python:3.11", base)
    recipe = package_recipe(tmp_path, tiny_keras, pkg, name="lambdatpl")
    result = build(recipe, tmp_path / "out", image_cache)
    assert result.exit_code == 0, result.output
    for rec in json.loads(result.stdout)["packages"]:
        assert rec["template"] == "lambda"
        assert rec["proof"]["label"] == rec["proof"]["expected"]


def test_daemonless_writer_without_an_engine(tmp_path, tiny_keras, base_image, monkeypatch,
                                             image_cache):
    from optimizer.docker_client import client as engine
    from optimizer.lambda_local.instances import ContainerInstance
    from optimizer.lambda_local.run import run_events
    from optimizer.package.baseimage import save

    base_tar = save(base_image, tmp_path / "base.tar")
    pkg = IMAGE + f"  engine: false\n  base_tarball: {base_tar}\n"
    recipe = package_recipe(tmp_path, tiny_keras, pkg, name="nodaemon")
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/no-such.sock")
    result = build(recipe, tmp_path / "out", image_cache)
    assert result.exit_code == 0, result.output
    [rec] = json.loads(result.stdout)["packages"]
    assert rec["kind"] == "image-tarball" and "none here to load" in rec["proof"]["skipped"]
    monkeypatch.delenv("DOCKER_HOST")

    with (tmp_path / "out/package/image.tar").open("rb") as f:  # now load and run it
        engine().images.load(f)
    from tests.test_handler import _b64, _png

    run = run_events(ContainerInstance(rec["ref"], 1769, 1.0, 120.0),
                     [{"image": _b64(_png(0))}], 1769, 120.0, "the loaded tarball")
    body = json.loads(run["responses"][0]["body"])
    assert run["responses"][0]["statusCode"] == 200 and len(body["predictions"]) == 1
