"""What a new user meets in the first hour: every printed line true and whole."""

from __future__ import annotations

import io
import json

from rich.console import Console
from typer.testing import CliRunner

from optimizer.cli import app
from tests.conftest import package_recipe, write_recipe

runner = CliRunner()


def test_every_recipe_error_is_shown_not_just_the_first(tmp_path):
    recipe = write_recipe(tmp_path, """
        name: typo
        source: {kind: architecture, architecture: MobileNetV2, input_size: 32}
        dataset: {kind: sklearn-digits}
        step:
          - {step: export_onnx}
        validate: {max_acuracy_drop: 1}
        """)
    result = runner.invoke(app, ["check", str(recipe)])
    assert result.exit_code == 2
    errors = [ln for ln in result.output.splitlines() if ln.startswith("error: ")]
    assert any("steps: required key is missing" in ln for ln in errors)
    assert any(":4: step: unknown key 'step' (did you mean 'steps'?)" in ln for ln in errors)
    assert any("did you mean 'max_accuracy_drop'" in ln for ln in errors)
    assert "more)" not in result.output
    doc = json.loads(runner.invoke(app, ["check", str(recipe), "--json"]).stdout)
    assert doc["exit_code"] == 2 and len(doc["errors"]) == 3 and doc["error"] == doc["errors"][0]


def test_check_takes_several_recipes(tmp_path):
    good = write_recipe(tmp_path, """
        name: good
        source: {kind: architecture, architecture: MobileNetV2, input_size: 32}
        dataset: {kind: sklearn-digits}
        steps: [{step: export_onnx}]
        """, name="good.yaml")
    bad = write_recipe(tmp_path, "name: bad\n", name="bad.yaml")
    result = runner.invoke(app, ["check", str(good), str(bad)])
    assert result.exit_code == 2
    assert "good.yaml: ok" in result.output and "bad.yaml:1: source" in result.output
    assert "1 of 2 recipes ok" in result.output
    doc = json.loads(runner.invoke(app, ["check", str(good), str(bad), "--json"]).stdout)
    assert [r["ok"] for r in doc["recipes"]] == [True, False] and doc["ok"] is False


def test_log_lines_keep_brackets_from_names():
    from optimizer.progress import Progress

    progress = Progress()
    progress.console = Console(file=io.StringIO(), width=200)
    progress.log("[cyan]measure[/] latency of source, fp32, fp32 [openvino], int8 [bold]")
    out = progress.console.file.getvalue()
    assert "fp32 [openvino], int8 [bold]" in out and "measure latency" in out


def test_targets_table_is_whole_when_piped():
    result = runner.invoke(app, ["targets"])
    assert result.exit_code == 0
    assert "Lambda documents AVX2 only; no VNNI, so int8 matmuls may saturate" in result.output
    assert "0.0000166667" in result.output


def test_a_missing_proof_is_said_on_the_console_and_can_be_required(tmp_path, tiny_keras,
                                                                    monkeypatch, zip_build):
    """No qemu-user here (as on a fresh machine): the console says what was not proved and
    what to install; --require-proof turns that into exit 1."""
    import shutil

    from optimizer.emulation import qemu as isa

    real = shutil.which
    monkeypatch.setattr(isa.shutil, "which",
                        lambda name, *a, **k: None if name.startswith("qemu-") else real(name))
    recipe = package_recipe(tmp_path, tiny_keras, "zip: {layers: 1}", name="noqemu")
    cache = zip_build[0] / "cache"  # the suite's built zip's: its wheels are there
    plain = runner.invoke(app, ["build", str(recipe), "--out", str(tmp_path / "a"),
                                "--cache-dir", str(cache)])
    assert plain.exit_code == 0, plain.output
    # a proof made without qemu is another proof: the zip is proved again, not reused
    assert "run    zip package" in plain.output and "everything came" not in plain.output
    line = next(ln for ln in plain.output.splitlines() if ln.startswith("not proved: "))
    assert "function.zip was not run on the x86_64 target's CPU (avx2)" in line
    assert "apt-get install qemu-user" in line
    strict = runner.invoke(app, ["build", str(recipe), "--out", str(tmp_path / "b"),
                                 "--cache-dir", str(cache), "--require-proof", "--json"])
    assert strict.exit_code == 1
    doc = json.loads(strict.stdout)
    assert doc["ok"] is False and doc["ship"] and "a proof was required" in doc["failure"]
    assert (tmp_path / "b" / "report.json").is_file()  # the report still says why
    assert doc["cache"]["misses"] == 0 and doc["cache"]["all_cached"]
    # with qemu installed the next build proves the package instead of reusing "skipped"
    monkeypatch.undo()
    if not real("qemu-x86_64"):
        import pytest

        pytest.skip("qemu-user is not installed here: the proof as a Haswell cannot run")
    again = runner.invoke(app, ["build", str(recipe), "--out", str(tmp_path / "c"),
                                "--cache-dir", str(cache), "--require-proof", "--json"])
    assert again.exit_code == 0, again.output
    zip_rec = next(p for p in json.loads(again.stdout)["packages"] if p["kind"] == "zip")
    assert zip_rec["proof"]["isa"]["emulator"] == "qemu-x86_64 -cpu Haswell"



def test_base_image_errors_are_its_own_not_a_build_steps(monkeypatch):
    import shutil

    from optimizer import docker_client
    from optimizer.package import baseimage

    try:
        docker_client.client()
    except Exception:
        import pytest

        pytest.skip("no Docker Engine reachable")
    real = shutil.which
    monkeypatch.setattr(baseimage.shutil, "which",
                        lambda name, *a, **k: None if name == "debootstrap" else real(name))
    result = runner.invoke(app, ["base-image", "--tag", "local/never-built:0"])
    assert result.exit_code == 2
    assert "error: debootstrap is not installed (apt-get install debootstrap)" in result.output
    assert "step 'package'" not in result.output


def test_report_md_reads_as_text(zip_build):
    """No Python lists, dicts or None in report.md, and the host's extra extensions said once."""
    import re

    root, _, _ = zip_build
    md = (root / "out" / "report.md").read_text()
    assert not re.search(r"\['|\{'|\bNone\b", md), [ln for ln in md.splitlines()
                                                    if re.search(r"\['|\{'|\bNone\b", ln)]
    assert "host extras" not in md and md.count("Host extensions the target does not") == 1
    assert "first load ms" in md


def test_failed_lookups_are_remembered_and_counted(tmp_path):
    """A wheel the index lacks is asked for once: the next build reuses the answer (and says
    so), --retry asks again; every run is counted, failed or not."""
    import pytest

    from optimizer.build.ledger import Ledger
    from optimizer.cache import Cache
    from optimizer.errors import BadInput, PackageFailed
    from optimizer.progress import Progress

    calls = []

    def lookup(tmp):
        calls.append(1)
        raise PackageFailed("pip: no matching distribution for intel-tensorflow")

    def builder(**kw) -> Ledger:
        return Ledger(Cache(tmp_path / "c"), Progress(quiet=True), **kw)

    first = builder()
    with pytest.raises(PackageFailed):
        first.cached_dir("k" * 64, "dependencies intel-tensorflow", lookup,
                         remember_failure=True)
    assert (first.misses, first.hits, len(calls)) == (1, 0, 1)
    second = builder()
    with pytest.raises(BadInput, match="no matching distribution"):
        second.cached_dir("k" * 64, "dependencies intel-tensorflow", lookup,
                          remember_failure=True)
    assert (second.misses, second.hits, len(calls)) == (0, 1, 1)
    third = builder(retry=True)
    with pytest.raises(PackageFailed):
        third.cached_dir("k" * 64, "dependencies intel-tensorflow", lookup,
                         remember_failure=True)
    assert len(calls) == 2
    # an entry made and used again in one build is "shared", not "reused from earlier"
    b = builder()
    b.cached_dir("s" * 64, "x", lambda tmp: (tmp / "f").write_text("1"))
    b.cached_dir("s" * 64, "x", lambda tmp: None)
    assert (b.misses, b.hits, b.shared) == (1, 0, 1)
