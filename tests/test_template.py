"""template.yaml: the SAM application a build writes beside its packages, cfn-lint clean."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest
import yaml

from optimizer import targets
from optimizer.package import sam
from optimizer.recipe.schema import DeployConfig

ZIP = [{"kind": "zip", "file": "function.zip", "handler": "handler.app.lambda_handler",
        "architecture": "aarch64"}, {"kind": "layer", "file": "layer-1.zip"},
       {"kind": "layer", "file": "layer-2.zip"}]


def lint(text: str) -> list[str]:
    from cfnlint.api import lint as cfn_lint

    return [str(m) for m in cfn_lint(text)]


def resources(text: str) -> dict:
    return yaml.safe_load(text)["Resources"]


def test_a_zip_build_writes_a_clean_template_for_its_files(zip_build):
    root, _, doc = zip_build
    folder = root / "out" / "package"
    text = (folder / "template.yaml").read_text()
    assert lint(text) == []
    res = resources(text)
    fn = res["Function"]["Properties"]
    zips = {p["kind"]: p for p in doc["packages"] if p["kind"] in ("zip", "layer")}
    assert fn["CodeUri"] == "function.zip" and fn["Handler"] == zips["zip"]["handler"]
    assert fn["Runtime"] == "python3.12" and fn["Architectures"] == ["x86_64"]
    assert fn["MemorySize"] == 1769 and fn["Timeout"] == 30
    assert fn["SnapStart"] == {"ApplyOn": "PublishedVersions"}
    assert fn["AutoPublishAlias"] == "live"
    assert fn["FunctionUrlConfig"] == {"AuthType": "AWS_IAM"}
    layer = res["Layer1"]["Properties"]
    assert fn["Layers"] == [{"Ref": "Layer1"}] and layer["ContentUri"] == "layer-1.zip"
    assert layer["CompatibleRuntimes"] == ["python3.12"]
    for uri in (fn["CodeUri"], layer["ContentUri"]):  # relative to the template's folder
        assert (folder / uri).is_file()
    manifest = json.loads((root / "out" / "manifest.json").read_text())
    kinds = {f["path"]: f["kind"] for f in manifest["artifacts"]}
    assert kinds["package/template.yaml"] == "package/sam-template"


def test_template_follows_the_runtime_the_architecture_and_the_recipe():
    text, notes = sam.render("r", "int8", ZIP, "python3.12", 3008,
                             DeployConfig(function_url=None, timeout_s=60), "the sweep")
    assert lint(text) == [] and notes == []
    fn = resources(text)["Function"]["Properties"]
    assert fn["Architectures"] == ["arm64"] and fn["MemorySize"] == 3008
    assert fn["Layers"] == [{"Ref": "Layer1"}, {"Ref": "Layer2"}] and fn["Timeout"] == 60
    assert "FunctionUrlConfig" not in fn and "FunctionUrl" not in yaml.safe_load(text)["Outputs"]
    assert "memory 3008 MB (the sweep)" in yaml.safe_load(text)["Description"]
    # Python 3.11 has no SnapStart (off, and said so) and AWS is retiring it
    old, notes = sam.render("r", "int8", ZIP, "python3.11", 1769, DeployConfig(), "recipe")
    assert "SnapStart" not in resources(old)["Function"]["Properties"]
    assert notes[0] == "SnapStart off: SnapStart needs Python 3.12 or later (python3.11 here)"
    assert "deprecated on 2027-06-30" in notes[1] and "choose a newer" in notes[1]
    # cfn-lint carries AWS's schedule too: the same dates, and its error once updates stop
    from cfnlint.data import AdditionalSpecs
    from cfnlint.helpers import load_resource

    aws = load_resource(AdditionalSpecs, "LmbdRuntimeLifecycle.json")["python3.11"]
    ours = targets.RUNTIMES["python3.11"]
    assert (ours.deprecated, ours.create_block, ours.update_block) == (
        aws["deprecated"], aws["create-block"], aws["update-block"])
    blocked = date.today().isoformat() >= aws["update-block"]
    assert [m[:6] for m in lint(old)] == (["[E2533"] if blocked else [])


@pytest.mark.parametrize(("today", "says"), [
    ("2026-12-03", "python3.11 is deprecated on 2027-06-30: Lambda creates no new functions "
                   "on it from 2027-07-31 and updates none from 2027-08-31"),
    ("2027-07-01", "python3.11 was deprecated on 2027-06-30: Lambda creates no new"),
    ("2027-08-01", "since 2027-07-31 Lambda creates no new functions on it, and from "
                   "2027-08-31 it updates none"),
    ("2027-09-01", "since 2027-08-31 Lambda neither creates nor updates functions on it"),
])
def test_the_runtime_note_follows_the_date(today, says):
    _, notes = sam.render("r", "int8", ZIP, "python3.11", 1769, DeployConfig(), "recipe",
                          today=date.fromisoformat(today))
    assert says in notes[-1] and notes[-1].endswith("choose a newer target.runtime")
    _, newer = sam.render("r", "int8", ZIP, "python3.12", 1769, DeployConfig(), "recipe",
                          today=date.fromisoformat(today))
    assert not any("deprecated" in n for n in newer)


def test_an_image_template_and_a_broken_one():
    image = [{"kind": "image", "ref": "optimizer/img:1", "architecture": "x86_64"}]
    text, notes = sam.render("img", "fp32", image, "python3.12", 1024, DeployConfig(), "r")
    assert lint(text) == []
    fn = resources(text)["Function"]["Properties"]
    assert fn["PackageType"] == "Image" and fn["ImageUri"] == "optimizer/img:1"
    assert "SnapStart" not in fn and "Runtime" not in fn and "Handler" not in fn
    assert notes == ["SnapStart off for Function: container images cannot use SnapStart"]
    # the lint is a real check: a runtime Lambda does not have is caught
    assert lint(text.replace("PackageType: Image", "PackageType: Image\n      Runtime: py2"))


def test_deploy_settings_are_checked_in_the_recipe(tmp_path: Path, tiny_keras):
    from optimizer.errors import RecipeError
    from optimizer.recipe.load import load_recipe
    from tests.conftest import package_recipe

    recipe = package_recipe(tmp_path, tiny_keras,
                            "zip: {layers: 1}\ndeploy: {function_url: PUBLIC, timeout_s: 0}")
    try:
        load_recipe(recipe)
    except RecipeError as exc:
        text = "\n".join(exc.lines)
        assert "function_url" in text and "timeout_s" in text
    else:
        raise AssertionError("bad deploy settings were accepted")


def _events(events: dict, output: dict | None = None) -> tuple[str, dict]:
    deploy = DeployConfig.model_validate({"events": events, "output": output})
    text, _ = sam.render("tagger", "int8", ZIP, "python3.12", 1769, deploy, "recipe")
    return text, resources(text)


def test_a_bucket_feeding_a_queue_with_partial_failures_and_a_dead_letter_queue():
    text, res = _events({"sqs": {"batch_size": 100, "maximum_batching_window_s": 5},
                         "s3": {"bucket": "photos-in", "prefix": "up/"}},
                        {"bucket": "tags-out", "prefix": "tags/"})
    assert lint(text) == []
    fn = res["Function"]["Properties"]
    queue = fn["Events"]["Queue"]["Properties"]
    assert queue["FunctionResponseTypes"] == ["ReportBatchItemFailures"]
    assert (queue["BatchSize"], queue["MaximumBatchingWindowInSeconds"]) == (100, 5)
    redrive = res["Queue"]["Properties"]["RedrivePolicy"]
    assert redrive == {"deadLetterTargetArn": {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]},
                       "maxReceiveCount": 5}
    assert res["Queue"]["Properties"]["VisibilityTimeout"] >= 6 * 30
    [notify] = res["InputBucket"]["Properties"]["NotificationConfiguration"][
        "QueueConfigurations"]
    assert notify["Queue"] == {"Fn::GetAtt": ["Queue", "Arn"]}
    assert notify["Filter"]["S3Key"]["Rules"] == [{"Name": "prefix", "Value": "up/"}]
    sender = res["QueuePolicy"]["Properties"]["PolicyDocument"]["Statement"][0]
    assert sender["Condition"] == {"ArnLike": {"aws:SourceArn": "arn:aws:s3:::photos-in"}}
    # least privilege: read the input prefix, write the output prefix, nothing else
    grants = [(st["Action"], st["Resource"]) for p in fn["Policies"] for st in p["Statement"]]
    assert grants == [(["s3:GetObject"], "arn:aws:s3:::photos-in/up/*"),
                      (["s3:PutObject"], "arn:aws:s3:::tags-out/tags/*")]
    assert fn["Environment"]["Variables"] == {"OPTIMIZER_OUTPUT_BUCKET": "tags-out",
                                              "OPTIMIZER_OUTPUT_PREFIX": "tags/"}


def test_a_bucket_invoking_the_function_directly_retries_into_a_dead_letter_queue():
    text, res = _events({"s3": {"bucket": "photos-in"}})
    assert lint(text) == []
    fn = res["Function"]["Properties"]
    assert fn["Events"]["Upload"]["Type"] == "S3"
    assert fn["Events"]["Upload"]["Properties"]["Bucket"] == {"Ref": "InputBucket"}
    assert fn["DeadLetterQueue"]["TargetArn"] == {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]}
    assert fn["EventInvokeConfig"] == {"MaximumRetryAttempts": 2}
    assert "Environment" not in fn and "Queue" not in res


@pytest.mark.parametrize(("deploy", "says"), [
    ({"events": {"sqs": {"batch_size": 100}}}, "maximum_batching_window_s of at least 1"),
    ({"events": {"s3": {"bucket": "pics", "prefix": "in/"}},
      "output": {"bucket": "pics", "prefix": "in/tags/"}}, "invoke the function again"),
    ({"events": {"s3": {"bucket": "Not_A_Bucket"}}}, "String should match pattern"),
])
def test_event_settings_that_cannot_work_are_refused(deploy, says):
    with pytest.raises(ValueError, match=says):
        DeployConfig.model_validate(deploy)
