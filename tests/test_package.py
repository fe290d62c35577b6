"""Zip packages: platform wheels, slimming proved by running, layers, limits, reproducibility,
and `optimizer check-size` on packages optimizer did not build."""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from optimizer import archive, targets
from optimizer.cli import app
from optimizer.emulation import interpreters
from optimizer.emulation import qemu as isa
from optimizer.errors import BadInput
from optimizer.package import elfcheck, lambda_zip, layers, sizes
from optimizer.package.slim import ORPHAN_RULE
from tests.conftest import build, package_recipe, sha

runner = CliRunner()


def test_zip_package_fits_and_runs_its_handler(zip_build):
    root, _, doc = zip_build
    kinds = {p["kind"]: p for p in doc["packages"]}
    fn, layer = kinds["zip"], kinds["layer"]
    assert fn["file"] == "function.zip" and layer["file"] == "layer-1.zip"
    for rec in (fn, layer):
        assert (root / "out" / "package" / rec["file"]).is_file()
        assert rec["zipped_bytes"] < targets.LIMITS.zip_upload_bytes
        assert rec["sha256"] == sha(root / "out" / "package" / rec["file"])
    assert fn["unzipped_bytes"] + layer["unzipped_bytes"] < targets.LIMITS.unzipped_bytes
    proof = fn["proof"]
    assert proof["python"].startswith("3.12.") and proof["label"] == proof["expected"]
    assert 400 <= proof["bad_request_status"] < 500
    # the same answer again with only the CPU Lambda promises (qemu -cpu Haswell)
    if isa.emulator("x86_64") is None:
        assert "qemu-x86_64 is not installed" in proof["isa"]["skipped"]
    else:
        assert proof["isa"]["emulator"] == "qemu-x86_64 -cpu Haswell"
        assert proof["isa"]["label"] == proof["label"]
        assert abs(proof["isa"]["score"] - proof["score"]) < 1e-3
    slim = fn["slim"]
    assert slim["dependencies_after"] < slim["dependencies_before"]
    assert any("libonnxruntime" in rule for rule in slim["removed_by_rule"])
    names = zipfile.ZipFile(root / "out" / "package" / "function.zip").namelist()
    assert "handler/app.py" in names and "model/model.onnx" in names
    layer_names = zipfile.ZipFile(root / "out" / "package" / "layer-1.zip").namelist()
    assert all(n.startswith("python/") for n in layer_names)
    assert not any("/tests/" in n for n in layer_names)
    # slimmed further than the wheels' own needs: no AVIF, fonts, colour management, unused
    # numpy parts or protobuf, and no vendored library that only those needed
    for gone in ("python/PIL/_avif", "python/PIL/_imagingft", "python/PIL/_imagingcms",
                 "python/numpy/random/", "python/numpy/fft/", "python/google/protobuf/"):
        assert not any(n.startswith(gone) for n in layer_names), gone
    assert not any(lib in n for n in layer_names for lib in ("libavif", "libfreetype",
                                                              "liblcms2", "libharfbuzz"))
    assert any(n.startswith("python/pillow.libs/libtiff") for n in layer_names)  # _imaging's
    assert slim["removed_by_rule"][ORPHAN_RULE] > 0
    # bytecode for what init imports, compiled by Python 3.12 as unchecked-hash pycs
    pycs = [n for n in names + layer_names if n.endswith(".pyc")]
    assert fn["bytecode"]["selected"] == "imported during init"
    assert fn["bytecode"]["pyc_files"] == len(pycs) and not fn["bytecode"]["compile_errors"]
    assert "handler/__pycache__/app.cpython-312.pyc" in names
    numpy_init = "python/numpy/__pycache__/__init__.cpython-312.pyc"
    with zipfile.ZipFile(root / "out" / "package" / "layer-1.zip") as z:
        assert int.from_bytes(z.read(numpy_init)[4:8], "little") == 0b01  # PEP 552
    assert not any(n.startswith("python/numpy/ma/") for n in pycs)  # never imported
    md = (root / "out" / "report.md").read_text()
    assert "## Packages" in md and "function.zip" in md
    assert "Dependencies by distribution, unpacked (MiB)" in md and "of bytecode" in md


def test_two_builds_give_byte_identical_zips(zip_build, tmp_path):
    root, recipe, doc = zip_build
    again = build(recipe, tmp_path / "out", tmp_path / "cache")  # nothing reused
    assert again.exit_code == 0, again.output
    redo = json.loads(again.stdout)
    assert redo["cache"]["hits"] == 0
    assert {p["file"]: p["sha256"] for p in redo["packages"]} == \
        {p["file"]: p["sha256"] for p in doc["packages"]}
    for name in ("function.zip", "layer-1.zip"):
        assert sha(tmp_path / "out" / "package" / name) == sha(root / "out" / "package" / name)


def test_check_size_passes_the_built_package(zip_build):
    root, _, _ = zip_build
    result = runner.invoke(app, ["check-size", str(root / "out" / "package"), "--target",
                                 "x86_64", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["ok"] and doc["elf"]["files_checked"] > 10
    assert [p["ref"].rsplit("/", 1)[-1] for p in doc["parts"]] == ["function.zip", "layer-1.zip"]
    assert len(doc["parts"][1]["largest"]) == sizes.TOP
    wrong_arch = runner.invoke(app, ["check-size", str(root / "out" / "package"), "--target",
                                     "arm64", "--json"])
    assert wrong_arch.exit_code == 1
    assert "built for EM_X86_64" in " ".join(json.loads(wrong_arch.stdout)["problems"])


def test_check_size_fails_a_260mb_folder(tmp_path):
    big = tmp_path / "big"
    big.mkdir()
    for i in range(13):  # 260 MB as AWS counts (MiB), of zeros, sparse on disk
        with (big / f"blob{i}.bin").open("wb") as f:
            f.truncate(20 * 1024 * 1024)
    result = runner.invoke(app, ["check-size", str(big), "--json"])
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    over = [x for x in doc["limits"] if not x["ok"]]
    assert [x["what"] for x in over] == ["unzipped, function plus layers"]
    assert over[0]["size"] == 260 * 1024 * 1024 and over[0]["limit"] == 250 * 1024 * 1024
    text = runner.invoke(app, ["check-size", str(big)])
    assert text.exit_code == 1 and "does not fit" in text.output


def test_check_size_refuses_a_path_traversal_zip(tmp_path):
    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as zf:
        zf.writestr("ok.txt", "fine")
        zf.writestr("../../etc/cron.d/evil", "nope")
    result = runner.invoke(app, ["check-size", str(evil)])
    assert result.exit_code == 2
    assert "path traversal" in result.output and "../../etc/cron.d/evil" in result.output
    with pytest.raises(BadInput):
        archive.extract_zip(evil, tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_upload_and_layer_count_limits():
    mib = 1024 * 1024
    parts = [sizes.Part("zip", "function.zip", 60 * mib, 51 * mib)] + [
        sizes.Part("zip", f"layer-{i}.zip", mib, mib) for i in range(6)]
    rows = {r.what: r.ok for r in sizes.limits_for(parts)}
    assert rows["function.zip zipped"] is False and rows["layers"] is False
    assert rows["unzipped, function plus layers"] is True


def test_elf_check_names_the_file_and_the_symbol():
    import numpy

    so = next(Path(numpy.__file__).parent.glob("_core/_multiarray_umath*.so"))
    problems = elfcheck.check_file(so, so.name, "x86_64", "2.2")
    assert problems and all(so.name in str(p) for p in problems)
    assert any("needs GLIBC_" in p.problem and "symbol" in p.problem for p in problems)
    assert elfcheck.check_file(so, so.name, "x86_64", "2.99") == []
    wrong = elfcheck.check_file(so, so.name, "aarch64", "2.99")
    assert "built for EM_X86_64" in wrong[0].problem


def test_zip_writer_is_deterministic(tmp_path):
    src = tmp_path / "src"
    (src / "pkg").mkdir(parents=True)
    (src / "pkg" / "a.py").write_text("x = 1\n")
    (src / "run.sh").write_text("#!/bin/sh\n")
    (src / "run.sh").chmod(0o775)
    archive.zip_tree(tmp_path / "one.zip", src)
    os.utime(src / "pkg" / "a.py", (1, 1))
    (src / "pkg" / "a.py").chmod(0o600)
    archive.zip_tree(tmp_path / "two.zip", src)
    assert sha(tmp_path / "one.zip") == sha(tmp_path / "two.zip")
    info = {i.filename: i for i in zipfile.ZipFile(tmp_path / "one.zip").infolist()}
    assert list(info) == ["pkg/a.py", "run.sh"]
    assert (info["run.sh"].external_attr >> 16) & 0o777 == 0o755
    assert info["pkg/a.py"].date_time == archive.ZIP_TIME


def _fake_deps(root: Path) -> None:
    for dist, files, size in (("big", ["big/core.so", "big.libs/x.so"], 5000),
                              ("mid", ["mid/__init__.py"], 3000), ("small", ["small.py"], 100)):
        info = root / f"{dist}-1.0.dist-info"
        info.mkdir(parents=True)
        (info / "RECORD").write_text("".join(f"{f},,\n" for f in files))
        for f in files:
            (root / f).parent.mkdir(parents=True, exist_ok=True)
            (root / f).write_bytes(b"x" * size)


def test_layers_keep_distributions_whole(tmp_path):
    deps = tmp_path / "deps"
    _fake_deps(deps)
    groups = layers.split(deps, 2)
    names = [sorted(p.name for p in g) for g in groups]
    assert names == [["big", "big-1.0.dist-info", "big.libs"],
                     ["mid", "mid-1.0.dist-info", "small-1.0.dist-info", "small.py"]]
    fn = tmp_path / "fn"
    (fn / "handler").mkdir(parents=True)
    (fn / "handler" / "app.py").write_text("")
    plan = lambda_zip.ZipPlan("3.12", "x86_64", 1769, 0)
    (tmp_path / "z").mkdir()
    zips = lambda_zip.write(fn, deps, plan, tmp_path / "z")
    assert [z.name for z in zips] == ["function.zip"]
    assert "big/core.so" in zipfile.ZipFile(zips[0]).namelist()


def test_a_slimming_rule_that_breaks_the_import_fails_the_build(tmp_path, tiny_keras,
                                                                monkeypatch):
    from optimizer.package import slim

    monkeypatch.setattr(slim, "RULES", (*slim.RULES, ("numpy/_core/_multiarray_umath*",
                                                      "a rule that goes too far")))
    recipe = package_recipe(tmp_path, tiny_keras, "zip: {layers: 1}")
    result = build(recipe, tmp_path / "out", tmp_path / "cache")
    assert result.exit_code == 2
    assert "packaged handler failed under Python 3.12" in result.output
    assert not (tmp_path / "out").exists()


def test_package_section_errors_point_at_the_line(tmp_path, tiny_keras):
    recipe = package_recipe(tmp_path, tiny_keras, "model: nope\nzip: {}")
    result = runner.invoke(app, ["check", str(recipe)])
    assert result.exit_code == 2
    assert "package.model" in result.output and "'nope' is not an artifact" in result.output
    recipe = package_recipe(tmp_path, tiny_keras, "zip: {layers: 6}")
    result = runner.invoke(app, ["check", str(recipe)])
    assert result.exit_code == 2 and "package.zip.layers" in result.output


def test_vendored_libraries_nothing_needs_are_found_through_their_dependents(tmp_path):
    import PIL

    from optimizer.package.slim import orphans

    site = Path(PIL.__file__).parent.parent
    root = tmp_path / "deps"
    (root / "PIL").mkdir(parents=True)
    imaging = next((site / "PIL").glob("_imaging.cpython*.so"))
    (root / "PIL" / imaging.name).write_bytes(imaging.read_bytes())
    shutil.copytree(site / "pillow.libs", root / "pillow.libs")
    gone = {p.name.split("-")[0] for p in orphans(root)}
    # _imaging needs libtiff, which needs libzstd and liblzma: kept; the font and AVIF
    # libraries only their own (absent) modules needed
    assert {"libfreetype", "libharfbuzz", "libavif"} <= gone
    assert not gone & {"libtiff", "libjpeg", "libzstd", "liblzma"}


def test_slimming_never_removes_a_library_a_kept_one_needs(tmp_path, monkeypatch):
    import numpy

    from optimizer.package import slim

    site = Path(numpy.__file__).parent.parent
    umath = next((site / "numpy" / "_core").glob("_multiarray_umath*.so"))
    needs = set(elfcheck.needed(umath))
    libs = [p for p in (site / "numpy.libs").iterdir() if p.name in needs]
    assert libs, "numpy's extension links a bundled BLAS from numpy.libs"
    root = tmp_path / "deps"
    (root / "numpy" / "_core").mkdir(parents=True)
    (root / "numpy.libs").mkdir()
    (root / "numpy" / "_core" / umath.name).write_bytes(umath.read_bytes())
    for lib in libs:
        (root / "numpy.libs" / lib.name).write_bytes(lib.read_bytes())
    (root / "numpy" / "_core" / "tests").mkdir()
    (root / "numpy" / "_core" / "tests" / "test_x.py").write_text("")
    monkeypatch.setattr(slim, "RULES", (("numpy.libs", "too greedy"), ("**/tests", "tests")))
    report = slim.slim(root)
    assert (root / "numpy.libs").is_dir() and not (root / "numpy/_core/tests").exists()
    assert {Path(k).name for k in report["kept_because_needed"]} == {lib.name for lib in libs}
    assert report["by_distribution"]


@pytest.mark.parametrize(("target", "runtime"), [("x86_64", "python3.13"),
                                                 ("arm64", "python3.13"),
                                                 ("arm64", "python3.12"),
                                                 ("x86_64", "python3.14")])
def test_other_runtimes_and_architectures(tmp_path, tiny_keras, target, runtime):
    recipe = package_recipe(tmp_path, tiny_keras, "zip: {layers: 0}", name="other")
    text = recipe.read_text().replace("name: x86_64, runtime: python3.12",
                                      f"name: {target}, runtime: {runtime}")
    recipe.write_text(text)
    result = build(recipe, tmp_path / "out", tmp_path / "cache")
    assert result.exit_code == 0, result.output
    [fn] = json.loads(result.stdout)["packages"]  # layers: 0, so one zip holds everything
    assert fn["runtime"] == runtime and fn["architecture"] == targets.TARGETS[target].arch
    names = zipfile.ZipFile(tmp_path / "out/package/function.zip").namelist()
    assert "handler/app.py" in names and any(n.startswith("onnxruntime/") for n in names)
    if runtime == "python3.14" and interpreters.find_python("3.14") is None:
        assert "no Python 3.14" in fn["proof"]["skipped"], fn["proof"]
        assert any("cpython-314" in n for n in names if n.endswith(".so"))  # its wheels
    elif target == "arm64" and runtime == "python3.12":  # no aarch64 3.12 to emulate
        assert "cannot run it natively" in fn["proof"]["skipped"]
        assert "no aarch64 Python 3.12" in fn["proof"]["skipped"]
        assert any("aarch64" in n for n in names if n.endswith(".so"))
    elif target == "arm64" and shutil.which("qemu-aarch64") is None:
        assert "qemu-aarch64 is not installed" in fn["proof"]["skipped"]
    elif target == "arm64":  # proved under qemu-aarch64 as a Neoverse N1, with trixie's 3.13
        assert fn["proof"]["isa"]["emulator"] == "qemu-aarch64 -cpu neoverse-n1"
        assert fn["proof"]["python"].startswith("3.13.")
        assert fn["proof"]["label"] == fn["proof"]["expected"]
        assert any("aarch64" in n for n in names if n.endswith(".so"))
    else:
        assert fn["proof"]["python"].startswith("3.13.")
        assert fn["proof"]["label"] == fn["proof"]["expected"]
    checked = runner.invoke(app, ["check-size", str(tmp_path / "out/package/function.zip"),
                                  "--target", target, "--runtime", runtime, "--json"])
    assert checked.exit_code == 0, checked.output


def test_invoke_runs_the_built_zip_and_prints_a_report_line(zip_build):
    root, _, doc = zip_build
    result = runner.invoke(app, ["invoke", str(root / "out"), "--memory", "1024", "--json"])
    assert result.exit_code == 0, result.output
    inv = json.loads(result.stdout)
    body = json.loads(inv["response"]["body"])
    expected = next(p for p in doc["packages"] if p["kind"] == "zip")["proof"]["expected"]
    assert body["predictions"][0]["top"][0]["label"] == expected
    for part in ("Duration:", "Billed Duration:", "Memory Size: 1024 MB", "Max Memory Used:",
                 "Init Duration:"):
        assert part in inv["report"]
    parts = inv["init_breakdown"]  # the handler's own timing, read from its log
    for key in ("runtime_start_ms", "numpy_ms", "image_library_ms", "runtime_import_ms",
                "model_load_ms", "warmup_ms", "handler_ms", "other_ms"):
        assert parts[key] is not None and parts[key] >= 0, key
    assert parts["runtime_import_ms"] > 0 and parts["warmup_ms"] > 0
    # the process start time has 10 ms resolution (/proc/self/stat)
    assert parts["runtime_start_ms"] + parts["handler_ms"] + parts["other_ms"] == \
        pytest.approx(inv["init_ms"], abs=15.0)
    text = runner.invoke(app, ["invoke", str(root / "out")])
    assert text.exit_code == 0 and "REPORT RequestId" in text.output
    assert "init: interpreter and runtime client" in text.output and "warm-up" in text.output


def test_invoke_as_a_snap_start_version(zip_build):
    """The packaged handler's hooks under the real runtime client: the model is warmed up
    before the snapshot and the thread count re-read after the restore."""
    root, _, _ = zip_build
    result = runner.invoke(app, ["invoke", str(root / "out"), "--snap-start", "--json",
                                 "--memory", "3008"])
    assert result.exit_code == 0, result.output
    inv = json.loads(result.stdout)
    body = json.loads(inv["response"]["body"])
    assert inv["restore_ms"] >= 0 and "Restore Duration:" in inv["report"]
    assert inv["restore"]["before_snapshot"]["warmup_ms"] > 0
    after = inv["restore"]["after_restore"]
    assert after["threads"] == body["threads"] == 2 and after["reloaded"] is False
    text = runner.invoke(app, ["invoke", str(root / "out"), "--snap-start"])
    assert text.exit_code == 0 and "SnapStart: init" in text.output


def test_invoke_function_zip_brings_its_layers_and_sample(zip_build, tmp_path):
    """Naming package/function.zip runs it with the layers and sample event beside it; a
    function.zip copied away from its layers fails to import, and the output says why."""
    root, _, _ = zip_build
    fn = root / "out" / "package" / "function.zip"
    ok = runner.invoke(app, ["invoke", str(fn), "--json"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["response"]["statusCode"] == 200
    alone = tmp_path / "function.zip"
    shutil.copyfile(fn, alone)
    event = root / "out" / "package" / "sample-event.json"
    bad = runner.invoke(app, ["invoke", str(alone), "--event", str(event)])
    assert bad.exit_code == 1
    assert "No module named" in bad.output and "hint: the zip was run without layers" in \
        bad.output


def test_tune_over_five_sizes_writes_json_and_plot(zip_build, tmp_path):
    root, _, _ = zip_build
    result = runner.invoke(app, [
        "tune", str(root / "out"), "--memory", "256,512,1024,1769,3008", "--invocations", "3",
        "--concurrency", "2", "--instance-price", "0.0416", "--instance-vcpus", "1",
        "--out", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert [r["memory_mb"] for r in doc["rows"]] == [256, 512, 1024, 1769, 3008]
    for row in doc["rows"]:
        assert row["cap_method"] and row["invocations"] == 4 and not row["errors"]
        assert row["init_ms"] > 0 and row["p95_ms"] >= row["p50_ms"] > 0
        assert row["cost_per_million_usd"] > targets.PRICE_PER_REQUEST * 1e6
    # balanced: the least of cost (with cold starts) and warm p50, each against its best
    key = "cost_per_million_with_cold_usd"
    c0, d0 = min(r[key] for r in doc["rows"]), min(r["p50_ms"] for r in doc["rows"])
    best = min(doc["rows"], key=lambda r: r[key] / c0 + r["p50_ms"] / d0)
    assert doc["recommended_memory_mb"] == best["memory_mb"]
    assert all(row["init_breakdown"]["model_load_ms"] > 0 for row in doc["rows"])
    assert doc["concurrency"]["errors"] == 0 and doc["concurrency"]["requests"] == 6
    assert doc["always_on"]["crossover_requests_per_month"] > 0
    saved = json.loads((tmp_path / "tune.json").read_text())
    assert saved["rows"] == doc["rows"]
    page = (tmp_path / "tune.html").read_text()
    assert "<svg" in page and "Init Duration by part" in page and "inference runtime" in page


def test_invoke_rejects_a_missing_event_and_a_bad_memory_size(zip_build, tmp_path):
    root, _, _ = zip_build
    result = runner.invoke(app, ["invoke", str(root / "out"), "--event",
                                 str(tmp_path / "nope.json")])
    assert result.exit_code == 2 and "nope.json" in result.output
    for memory in ("99999", "64"):
        result = runner.invoke(app, ["invoke", str(root / "out"), "--memory", memory])
        assert result.exit_code == 2 and "outside Lambda's 128..10240 MB" in result.output


def test_build_runs_the_memory_sweep_as_validation(zip_build, tmp_path, tiny_keras):
    root, _, _ = zip_build
    recipe = package_recipe(tmp_path, tiny_keras, "zip: {layers: 1}\ntune:\n  memory: [512, 1769]"
                            "\n  invocations: 2\n  strategy: speed", name="tuned")
    result = build(recipe, tmp_path / "out", root / "cache")  # reuses the resolved wheels
    assert result.exit_code == 0, result.output
    tune = json.loads(result.stdout)["tune"]
    assert [r["memory_mb"] for r in tune["rows"]] == [512, 1769]
    fastest = min(tune["rows"], key=lambda r: (r["p50_ms"], r["cost_per_million_with_cold_usd"]))
    assert tune["strategy"] == "speed" and tune["recommended_memory_mb"] == fastest["memory_mb"]
    assert all(not r["errors"] and r["init_ms"] > 0 for r in tune["rows"])
    assert (tmp_path / "out/package/tune.html").is_file()
    md = (tmp_path / "out/report.md").read_text()
    assert "## Memory sweep" in md and "Init Duration by part (ms)" in md
    # the report's cost bills the sweep's cold start at the target's size, in the stated share
    cost = json.loads(result.stdout)["cost"]
    row = next(x for x in tune["rows"] if x["memory_mb"] == 1769)
    assert cost["cold_from"].startswith("memory sweep at 1769 MB")
    assert cost["cold_request_ms"] == pytest.approx(row["init_ms"] + row["cold_duration_ms"],
                                                    abs=0.1)
    assert cost["usd"] > cost["warm_only_usd"] and cost["cold_starts_per_1000"] == 10
    assert "with 10 cold starts per 1,000 requests" in md
    assert all(x["cost_per_million_with_cold_usd"] > x["cost_per_million_usd"]
               for x in tune["rows"])
    assert "function.zip proof (Python 3.12" in md and "model load" in md
