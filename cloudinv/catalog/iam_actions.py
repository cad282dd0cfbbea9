"""How a botocore operation becomes the IAM action that authorizes it.

Shared by the reader policy (``cloudinv.producers.iam_policy``) and the catalog's derivation
of resource types from CloudFormation schemas (``cloudinv.catalog.derive``), which reads IAM
actions such as ``glue:ListJobs`` and must find the operation behind them.

1. the prefix is the service's IAM prefix: :data:`IAM_PREFIXES` where it differs from the
   service model's ``signingName`` (else ``endpointPrefix``), which it almost always equals;
2. the action is the operation's wire ``name`` in the service model with a trailing API
   version date removed (CloudFront's ``ListDistributions2020_05_31``, Lambda's older
   ``ListFunctions20150331``), unless :data:`IAM_ACTION_NAMES` says otherwise (mostly S3,
   whose IAM actions predate its API names);
3. API Gateway (REST and v2) is authorized by HTTP verb on a resource path, not by operation:
   ``GetRestApis`` is ``apigateway:GET`` on ``arn:aws:apigateway:*::/restapis``
   (:data:`HTTP_VERB_SERVICES`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

import botocore.session


@dataclass(frozen=True, order=True)
class ApiCall:
    """One API operation as botocore names it: client name and operation model name."""

    service: str
    operation: str


@dataclass(frozen=True, order=True)
class IamPermission:
    """An IAM action and, when the mapping itself scopes it, the resource it applies to."""

    action: str
    resource: str | None = None
    """``None``: the action is granted on ``*`` (or on what the caller scopes it to)."""


IAM_PREFIXES: Mapping[str, str] = {
    # CloudWatch signs requests as "monitoring" (its endpoint name) but its IAM actions
    # are cloudwatch:*.
    "cloudwatch": "cloudwatch",
    # The Resource Groups Tagging API signs as "tagging"; its IAM actions are tag:*.
    "resourcegroupstaggingapi": "tag",
    # IoT data plane signs as "iotdata"; its IAM actions are iot:* (iot:Publish, ...).
    "iot-data": "iot",
}
"""botocore client name → IAM prefix, only where the model's signingName/endpointPrefix is
not the IAM prefix."""

IAM_ACTION_NAMES: Mapping[ApiCall, str] = {
    # S3's IAM actions are older than its REST API names, and several API calls share one
    # action (Service Authorization Reference, "Actions defined by Amazon S3").
    ApiCall("s3", "ListBuckets"): "ListAllMyBuckets",
    ApiCall("s3", "HeadBucket"): "ListBucket",
    ApiCall("s3", "ListObjects"): "ListBucket",
    ApiCall("s3", "ListObjectsV2"): "ListBucket",
    ApiCall("s3", "ListObjectVersions"): "ListBucketVersions",
    ApiCall("s3", "HeadObject"): "GetObject",
    ApiCall("s3", "DeleteObjects"): "DeleteObject",
    ApiCall("s3", "GetBucketCors"): "GetBucketCORS",
    ApiCall("s3", "GetBucketEncryption"): "GetEncryptionConfiguration",
    ApiCall("s3", "GetBucketLifecycleConfiguration"): "GetLifecycleConfiguration",
    ApiCall("s3", "GetBucketReplication"): "GetReplicationConfiguration",
    ApiCall("s3", "GetPublicAccessBlock"): "GetBucketPublicAccessBlock",
    ApiCall("s3", "GetBucketAccelerateConfiguration"): "GetAccelerateConfiguration",
    ApiCall("s3", "GetBucketNotificationConfiguration"): "GetBucketNotification",
    ApiCall("s3", "PutBucketNotificationConfiguration"): "PutBucketNotification",
    ApiCall("s3", "GetObjectLockConfiguration"): "GetBucketObjectLockConfiguration",
    # SQS batch calls are authorized as the single-message action.
    ApiCall("sqs", "DeleteMessageBatch"): "DeleteMessage",
    ApiCall("sqs", "SendMessageBatch"): "SendMessage",
    ApiCall("sqs", "ChangeMessageVisibilityBatch"): "ChangeMessageVisibility",
}
"""Operations whose IAM action name is not the operation's name (prefix as in rule 1)."""

HTTP_VERB_SERVICES: Mapping[str, str] = {
    # API Gateway authorizes its management API by HTTP verb on the request path:
    # apigateway:GET on arn:aws:apigateway:<region>::/restapis (v1) and ::/apis (v2,
    # whose request paths carry a /v2 prefix the IAM resource path does not).
    "apigateway": "",
    "apigatewayv2": "/v2",
}
"""botocore client name → request path prefix to drop; the action is ``apigateway:<VERB>``."""

_API_VERSION_SUFFIX_RE = re.compile(r"(\d{4}_\d{2}_\d{2}|\d{8})$")
_PATH_PARAM_RE = re.compile(r"\{[^}]+\}")


@cache
def _service_model(service: str) -> Any:
    return _botocore_session().get_service_model(service)


@cache
def _botocore_session() -> Any:
    return botocore.session.get_session()


def iam_prefix(service: str) -> str:
    """The IAM prefix of a botocore client name (``elbv2`` → ``elasticloadbalancing``)."""
    if service in IAM_PREFIXES:
        return IAM_PREFIXES[service]
    if service in HTTP_VERB_SERVICES:
        return "apigateway"
    metadata = _service_model(service).metadata
    return str(metadata.get("signingName") or metadata["endpointPrefix"])


def action_name(service: str, operation: str) -> str:
    """The IAM action name (without prefix) of a non-HTTP-verb service's operation."""
    call = ApiCall(service, operation)
    wire_name = _service_model(service).operation_model(operation).wire_name
    return IAM_ACTION_NAMES.get(call) or _API_VERSION_SUFFIX_RE.sub("", wire_name)


def iam_permission(call: ApiCall, *, partition: str = "aws") -> IamPermission:
    """The IAM permission ``call`` needs; raises ``ValueError`` for an unknown operation."""
    model = _service_model(call.service)
    if call.operation not in model.operation_names:
        raise ValueError(f"{call.service} has no operation {call.operation!r}")
    operation = model.operation_model(call.operation)
    prefix = iam_prefix(call.service)
    if call.service in HTTP_VERB_SERVICES:
        path = operation.http["requestUri"].split("?", 1)[0]
        path = path.removeprefix(HTTP_VERB_SERVICES[call.service]) or "/"
        path = _PATH_PARAM_RE.sub("*", path)
        verb = operation.http["method"]
        return IamPermission(f"{prefix}:{verb}", f"arn:{partition}:apigateway:*::{path}")
    name = IAM_ACTION_NAMES.get(call) or _API_VERSION_SUFFIX_RE.sub("", operation.wire_name)
    return IamPermission(f"{prefix}:{name}")
