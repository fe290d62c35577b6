"""template.yaml: the built packages as an AWS SAM application, ready for `sam deploy`.

Paths are relative to the package folder the template sits in, so the folder can be copied
as a whole. Everything the build decided (handler, runtime, architecture, layers, memory)
comes from the package records; the rest from the recipe's `package.deploy`.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import yaml

from optimizer import __version__, targets
from optimizer.package import sam_events
from optimizer.recipe.schema import DeployConfig

TEMPLATE = "template.yaml"
ALIAS = "live"  # SnapStart applies to published versions; the alias names the latest


def snap_start_note(kind: str, runtime: str) -> str | None:
    """Why SnapStart is off for this package, or None where Lambda allows it."""
    if kind != "zip":
        return "container images cannot use SnapStart"
    if not targets.RUNTIMES[runtime].snap_start:
        return f"SnapStart needs Python 3.12 or later ({runtime} here)"
    return None


def _function(props: dict[str, Any], deploy: DeployConfig, snap: bool) -> dict[str, Any]:
    props = {**props, "Timeout": deploy.timeout_s}
    if snap:
        props["AutoPublishAlias"] = ALIAS
        props["SnapStart"] = {"ApplyOn": "PublishedVersions"}
    if deploy.function_url:
        props["FunctionUrlConfig"] = {"AuthType": deploy.function_url}
    return {"Type": "AWS::Serverless::Function", "Properties": props}


def render(name: str, model: str, records: list[dict[str, Any]], runtime: str,
           memory_mb: int, deploy: DeployConfig, memory_from: str,
           today: date | None = None) -> tuple[str, list[str]]:
    """The template text and notes (what SnapStart could not apply to, and the runtime's
    place in AWS's deprecation schedule as of `today`)."""
    resources: dict[str, Any] = {}
    outputs: dict[str, Any] = {}
    notes: list[str] = []
    zip_rec = next((r for r in records if r["kind"] == "zip" and "file" in r), None)
    # an engine's image, else the daemonless tarball's (docker load it before deploying)
    image_rec = next((r for r in records if r["kind"] == "image"),
                     next((r for r in records if r["kind"] == "image-tarball"), None))
    if zip_rec is not None:
        arch = targets.lambda_architecture(zip_rec["architecture"])
        layers = [r for r in records if r["kind"] == "layer"]
        for i, rec in enumerate(layers, 1):
            resources[f"Layer{i}"] = {"Type": "AWS::Serverless::LayerVersion", "Properties": {
                "LayerName": f"{name}-{i}", "ContentUri": rec["file"],
                "CompatibleRuntimes": [runtime], "CompatibleArchitectures": [arch],
                "RetentionPolicy": "Delete"}}
        note = snap_start_note("zip", runtime)
        props: dict[str, Any] = {
            "CodeUri": zip_rec["file"], "Handler": zip_rec["handler"], "Runtime": runtime,
            "Architectures": [arch], "MemorySize": memory_mb,
            "Description": f"{name}: {model}"}
        if layers:
            props["Layers"] = [{"Ref": f"Layer{i}"} for i in range(1, len(layers) + 1)]
        resources["Function"] = _function(props, deploy, deploy.snap_start and note is None)
        if deploy.snap_start and note:
            notes.append(f"SnapStart off: {note}")
        if lifecycle := targets.runtime_lifecycle_note(runtime, today or date.today()):
            notes.append(lifecycle)
    if image_rec is not None:
        arch = targets.lambda_architecture(image_rec.get("architecture", "x86_64"))
        props = {"PackageType": "Image", "ImageUri": image_rec["ref"], "Architectures": [arch],
                 "MemorySize": memory_mb, "Description": f"{name}: {model} (image)"}
        logical = "ImageFunction" if zip_rec is not None else "Function"
        resources[logical] = _function(props, deploy, False)
        if deploy.snap_start:
            notes.append(f"SnapStart off for {logical}: {snap_start_note('image', runtime)}")
    if "Function" in resources:  # queue and bucket traffic go to the first function
        sam_events.add(deploy, resources["Function"]["Properties"], resources, outputs)
    for logical in (k for k in ("Function", "ImageFunction") if k in resources):
        outputs[f"{logical}Arn"] = {"Value": {"Fn::GetAtt": [logical, "Arn"]}}
        if deploy.function_url:
            outputs[f"{logical}Url"] = {"Value": {"Fn::GetAtt": [f"{logical}Url",
                                                                  "FunctionUrl"]}}
    doc = {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Transform": "AWS::Serverless-2016-10-31",
        "Description": f"{name} ({model}), built by optimizer {__version__}; memory "
                       f"{memory_mb} MB ({memory_from})",
        "Resources": resources,
        "Outputs": outputs,
    }
    return yaml.safe_dump(doc, sort_keys=False, width=100), notes
