"""template.yaml's event sources for queue and bucket traffic: the queue with its
dead-letter queue, the bucket notification (to the queue, or to the function), partial
batch responses, and S3 permissions no wider than the prefixes the function reads and
writes."""

from __future__ import annotations

from typing import Any

from optimizer.handler.bulk import OUTPUT_BUCKET, OUTPUT_PREFIX
from optimizer.recipe.schema import DeployConfig, S3Location

RETENTION_S = 14 * 24 * 3600  # SQS's longest: a failed image waits two weeks for a look
CREATED = "s3:ObjectCreated:*"


def _arn(place: S3Location) -> str:
    return f"arn:aws:s3:::{place.bucket}/{place.prefix}*"


def _filter(place: S3Location) -> dict[str, Any]:
    return {"S3Key": {"Rules": [{"Name": "prefix", "Value": place.prefix}]}}


def _queues(deploy: DeployConfig, resources: dict[str, Any]) -> dict[str, Any]:
    sqs = deploy.events.sqs
    assert sqs is not None
    resources["DeadLetterQueue"] = {"Type": "AWS::SQS::Queue", "Properties": {
        "MessageRetentionPeriod": RETENTION_S}}
    resources["Queue"] = {"Type": "AWS::SQS::Queue", "Properties": {
        # AWS: at least six times the function timeout, plus the batching window
        "VisibilityTimeout": 6 * deploy.timeout_s + sqs.maximum_batching_window_s,
        "MessageRetentionPeriod": RETENTION_S,
        "RedrivePolicy": {"deadLetterTargetArn": {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]},
                          "maxReceiveCount": sqs.max_receive_count}}}
    return {"Queue": {"Type": "SQS", "Properties": {
        "Queue": {"Fn::GetAtt": ["Queue", "Arn"]}, "BatchSize": sqs.batch_size,
        "MaximumBatchingWindowInSeconds": sqs.maximum_batching_window_s,
        "FunctionResponseTypes": ["ReportBatchItemFailures"]}}}


def _bucket_to_queue(s3: S3Location, resources: dict[str, Any]) -> None:
    resources["QueuePolicy"] = {"Type": "AWS::SQS::QueuePolicy", "Properties": {
        "Queues": [{"Ref": "Queue"}], "PolicyDocument": {"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {"Service": "s3.amazonaws.com"},
            "Action": "sqs:SendMessage", "Resource": {"Fn::GetAtt": ["Queue", "Arn"]},
            "Condition": {"ArnLike": {"aws:SourceArn": f"arn:aws:s3:::{s3.bucket}"}}}]}}}
    resources["InputBucket"] = {"Type": "AWS::S3::Bucket", "DependsOn": "QueuePolicy",
                                "Properties": {"BucketName": s3.bucket,
                                               "NotificationConfiguration": {
                                                   "QueueConfigurations": [{
                                                       "Event": CREATED,
                                                       "Queue": {"Fn::GetAtt": ["Queue",
                                                                                "Arn"]},
                                                       "Filter": _filter(s3)}]}}}


def add(deploy: DeployConfig, props: dict[str, Any], resources: dict[str, Any],
        outputs: dict[str, Any]) -> None:
    """Event sources, policies and variables into the function's properties."""
    sqs, s3, out = deploy.events.sqs, deploy.events.s3, deploy.output
    events: dict[str, Any] = {}
    policies: list[dict[str, Any]] = []
    if sqs is not None:
        events = _queues(deploy, resources)
        if s3 is not None:
            _bucket_to_queue(s3, resources)
    elif s3 is not None:  # the bucket invokes the function; failures after retries: the DLQ
        resources["DeadLetterQueue"] = {"Type": "AWS::SQS::Queue", "Properties": {
            "MessageRetentionPeriod": RETENTION_S}}
        resources["InputBucket"] = {"Type": "AWS::S3::Bucket",
                                    "Properties": {"BucketName": s3.bucket}}
        events = {"Upload": {"Type": "S3", "Properties": {
            "Bucket": {"Ref": "InputBucket"}, "Events": CREATED, "Filter": _filter(s3)}}}
        props["DeadLetterQueue"] = {"Type": "SQS",
                                    "TargetArn": {"Fn::GetAtt": ["DeadLetterQueue", "Arn"]}}
        props["EventInvokeConfig"] = {"MaximumRetryAttempts": 2}
    if s3 is not None:
        policies.append(_statement("s3:GetObject", _arn(s3)))
    if out is not None:
        policies.append(_statement("s3:PutObject", _arn(out)))
        props["Environment"] = {"Variables": {OUTPUT_BUCKET: out.bucket,
                                              OUTPUT_PREFIX: out.prefix}}
    if events:
        props["Events"] = events
    if policies:
        props["Policies"] = policies
    for logical in ("Queue", "DeadLetterQueue"):
        if logical in resources:
            outputs[f"{logical}Url"] = {"Value": {"Ref": logical}}


def _statement(action: str, resource: str) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": [action], "Resource": resource}]}
