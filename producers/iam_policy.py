"""The least-privilege IAM policies cloudinv needs, generated from the API calls its code makes.

Two policies and one template:

- the **reader** policy, for the role cloudinv assumes in every inventoried account
  (``cloudinv-reader``): the list operation of every registered type, its detail
  operations and its parent's list operation (walked from the registry, so a new type
  brings its permissions with it), plus the engine's own calls (:data:`ENGINE_CALLS`);
- the **pipeline** policy, for cloudinv's own account: assuming the member roles, the
  CloudTrail tailer (SQS, trail bucket) and the sinks (S3 warehouse, DynamoDB), each
  scoped to the resources the settings name (:data:`PIPELINE_CALLS`);
- the **member-role template**: CloudFormation for a StackSet creating ``cloudinv-reader``
  in every member account, trusting the pipeline's principal, the reader policy inline.

How a botocore operation becomes an IAM action (:func:`iam_permission`) is
:mod:`cloudinv.catalog.iam_actions`, shared with the catalog's derived types.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from cloudinv.catalog.iam_actions import (
    ApiCall,
    IamPermission,
    iam_permission,
)
from cloudinv.catalog.registry import Registry, default_registry
from cloudinv.core.errors import ConfigError
from cloudinv.core.settings import Settings

POLICY_VERSION = "2012-10-17"
READER_ROLE_NAME = "cloudinv-reader"
READER_POLICY_NAME = "cloudinv-read-only"


ENGINE_CALLS: tuple[ApiCall, ...] = (
    # AwsAccess.caller_account: the account of the local credentials. Needs no permission
    # on AWS (it cannot be denied); listed so the policy documents every call made.
    ApiCall("sts", "GetCallerIdentity"),
    # AwsAccess.enabled_regions, made in each member account when aws.regions = "all".
    ApiCall("ec2", "DescribeRegions"),
    # producers/reports/snapshots.py: EFS recovery points, one file system at a time.
    ApiCall("backup", "ListRecoveryPointsByResource"),
    # producers/reports/s3_metrics.py: bucket sizes and object counts, per bucket region.
    ApiCall("cloudwatch", "GetMetricData"),
)
"""Calls the engine, the credential code and the reports make in an inventoried account besides the
registered types' own."""


# -- the reader policy --------------------------------------------------------------------------


def registry_calls(registry: Registry | None = None) -> frozenset[ApiCall]:
    """Every call the engine makes to collect the registered types."""
    registry = registry or default_registry()
    calls: set[ApiCall] = set()
    for spec in registry:
        calls.add(ApiCall(spec.service, spec.list_operation))
        calls.update(ApiCall(spec.service, detail.operation) for detail in spec.details)
        if spec.parent is not None:
            parent = registry.get(spec.parent.cfn_type)
            calls.add(ApiCall(parent.service, parent.list_operation))
    return frozenset(calls)


def reader_calls(registry: Registry | None = None) -> frozenset[ApiCall]:
    return registry_calls(registry) | frozenset(ENGINE_CALLS)


def reader_permissions(
    registry: Registry | None = None, *, partition: str = "aws"
) -> list[IamPermission]:
    """The reader's permissions, sorted and without duplicates."""
    return sorted({iam_permission(c, partition=partition) for c in reader_calls(registry)})


def reader_policy(registry: Registry | None = None, *, partition: str = "aws") -> dict[str, Any]:
    """The read-only policy document for the role cloudinv assumes in inventoried accounts."""
    permissions = reader_permissions(registry, partition=partition)
    return policy_document(
        [
            ("CloudinvReadOnly", [p.action for p in permissions if p.resource is None], ["*"]),
            *_scoped_statements("CloudinvRead", [p for p in permissions if p.resource]),
        ]
    )


MANAGED_POLICY_MAX_CHARS = 6144
"""IAM's limit on a managed policy document, whitespace not counted."""


def policy_size(document: Mapping[str, Any]) -> int:
    """The size IAM counts: the document's characters without whitespace."""
    return len(json.dumps(document, separators=(",", ":")))


def reader_policies(
    registry: Registry | None = None, *, partition: str = "aws"
) -> list[dict[str, Any]]:
    """:func:`reader_policy` split into managed policies of at most 6,144 characters.

    With every derived type the reader's exact, read-only action list is several times
    IAM's limit for one policy (and the 10,240 characters all inline policies of a role may
    total). Rather than widen it to ``service:Get*`` (which would grant reads of secret
    values, object contents, parameters), the actions stay exact and are split by service
    into as many managed policies as needed; a role may have 10 attached (20 on request).
    """
    permissions = reader_permissions(registry, partition=partition)
    by_service: dict[str, list[str]] = {}
    for permission in permissions:
        if permission.resource is None:
            by_service.setdefault(permission.action.split(":", 1)[0], []).append(permission.action)
    scoped = _scoped_statements("CloudinvRead", [p for p in permissions if p.resource])
    parts: list[list[str]] = [[]]
    for actions in by_service.values():
        candidate = parts[-1] + actions
        if (
            parts[-1]
            and policy_size(policy_document([("CloudinvReadOnly", candidate, ["*"]), *scoped]))
            > MANAGED_POLICY_MAX_CHARS
        ):
            parts.append(list(actions))
        else:
            parts[-1] = candidate
    documents = [policy_document([("CloudinvReadOnly", actions, ["*"])]) for actions in parts]
    documents[-1] = policy_document([("CloudinvReadOnly", parts[-1], ["*"]), *scoped])
    for document in documents:
        if policy_size(document) > MANAGED_POLICY_MAX_CHARS:
            raise ValueError("one service's read actions exceed a managed policy's size")
    return documents


def _scoped_statements(
    sid_prefix: str, permissions: list[IamPermission]
) -> list[tuple[str, list[str], list[str]]]:
    """One statement per action for permissions the mapping scoped to resources."""
    by_action: dict[str, list[str]] = {}
    for permission in permissions:
        assert permission.resource is not None
        by_action.setdefault(permission.action, []).append(permission.resource)
    statements = []
    for action, resources in sorted(by_action.items()):
        service, verb = action.split(":", 1)
        sid = sid_prefix + _title(service) + _title(verb)
        statements.append((sid, [action], sorted(set(resources))))
    return statements


def _title(word: str) -> str:
    return "".join(part[:1].upper() + part[1:].lower() for part in re.split(r"[^A-Za-z0-9]", word))


def policy_document(statements: Iterable[tuple[str, list[str], list[str]]]) -> dict[str, Any]:
    """A policy document from (Sid, actions, resources); empty statements are left out."""
    return {
        "Version": POLICY_VERSION,
        "Statement": [
            {
                "Sid": sid,
                "Effect": "Allow",
                "Action": sorted(set(actions)),
                "Resource": resources[0] if len(resources) == 1 else sorted(set(resources)),
            }
            for sid, actions, resources in statements
            if actions and resources
        ],
    }


def policy_actions(document: Mapping[str, Any]) -> list[str]:
    """Every action a policy document grants, in document order."""
    actions: list[str] = []
    for statement in document["Statement"]:
        value = statement["Action"]
        actions.extend([value] if isinstance(value, str) else value)
    return actions


# -- the pipeline policy ------------------------------------------------------------------------

ResourceKind = Literal[
    "caller",
    "member-roles",
    "organization",
    "warehouse-objects",
    "warehouse-bucket",
    "sink-tables",
    "trail-queue",
    "trail-objects",
    "trail-bucket",
]


@dataclass(frozen=True)
class PipelineCall:
    """A call cloudinv makes in its own account, and the resource it is scoped to."""

    component: str
    call: ApiCall
    resource: ResourceKind


PIPELINE_CALLS: tuple[PipelineCall, ...] = (
    PipelineCall("accounts", ApiCall("sts", "GetCallerIdentity"), "caller"),
    PipelineCall("accounts", ApiCall("sts", "AssumeRole"), "member-roles"),
    PipelineCall("accounts", ApiCall("organizations", "ListAccounts"), "organization"),
    PipelineCall("cloudtrail tailer", ApiCall("sqs", "ReceiveMessage"), "trail-queue"),
    PipelineCall("cloudtrail tailer", ApiCall("sqs", "DeleteMessage"), "trail-queue"),
    PipelineCall("cloudtrail tailer", ApiCall("s3", "GetObject"), "trail-objects"),
    PipelineCall("cloudtrail backfill", ApiCall("s3", "ListObjectsV2"), "trail-bucket"),
    # Multipart uploads (parts over 16 MiB) are authorized as PutObject, except the abort.
    PipelineCall("s3 warehouse sink", ApiCall("s3", "PutObject"), "warehouse-objects"),
    PipelineCall("s3 warehouse sink", ApiCall("s3", "AbortMultipartUpload"), "warehouse-objects"),
    # Replacing a day's snapshot parts: list them, delete the ones no longer produced.
    PipelineCall("s3 warehouse sink", ApiCall("s3", "DeleteObjects"), "warehouse-objects"),
    PipelineCall("s3 warehouse sink", ApiCall("s3", "ListObjectsV2"), "warehouse-bucket"),
    PipelineCall("dynamodb sink", ApiCall("dynamodb", "DescribeTable"), "sink-tables"),
    PipelineCall("dynamodb sink", ApiCall("dynamodb", "CreateTable"), "sink-tables"),
    # The meta table's write events expire (cloudinv.sinks.dynamodb_tables turns TTL on).
    PipelineCall("dynamodb sink", ApiCall("dynamodb", "DescribeTimeToLive"), "sink-tables"),
    PipelineCall("dynamodb sink", ApiCall("dynamodb", "UpdateTimeToLive"), "sink-tables"),
    PipelineCall("dynamodb sink", ApiCall("dynamodb", "PutItem"), "sink-tables"),
    PipelineCall("dynamodb sink", ApiCall("dynamodb", "BatchWriteItem"), "sink-tables"),
    PipelineCall("dynamodb sink", ApiCall("dynamodb", "UpdateItem"), "sink-tables"),
    PipelineCall("dynamodb sink", ApiCall("dynamodb", "GetItem"), "sink-tables"),
    PipelineCall("dynamodb sink", ApiCall("dynamodb", "Query"), "sink-tables"),
)
"""The pipeline's own-account calls, declared here as data: the tailer and sinks live in
other modules, and a call added there must be added here (the policy is only as complete as
this list)."""

_PIPELINE_SIDS: Mapping[ResourceKind, str] = {
    "caller": "IdentifyCaller",
    "member-roles": "AssumeMemberRoles",
    "organization": "ListOrganizationAccounts",
    "trail-queue": "ReceiveCloudTrailNotifications",
    "trail-objects": "ReadCloudTrailLogs",
    "trail-bucket": "ListCloudTrailLogs",
    "warehouse-objects": "WriteWarehouse",
    "warehouse-bucket": "ListWarehouse",
    "sink-tables": "WriteDynamoDBTables",
}

_QUEUE_URL_RE = re.compile(r"^https?://(?:sqs\.)?([a-z0-9-]+)\.[^/]+/(\d{12})/([A-Za-z0-9_.-]+)/?$")
_QUEUE_ARN_RE = re.compile(r"^arn:aws[a-z-]*:sqs:[a-z0-9-]+:\d{12}:[A-Za-z0-9_.-]+$")
_ACCOUNT_RE = re.compile(r"^\d{12}$")


def queue_arn(queue: str, *, partition: str = "aws") -> str:
    """An SQS queue ARN from an ARN or a queue URL (``https://sqs.REGION.../ACCOUNT/NAME``)."""
    if _QUEUE_ARN_RE.match(queue):
        return queue
    match = _QUEUE_URL_RE.match(queue)
    if not match:
        raise ConfigError(
            f"CloudTrail queue {queue!r}: expected an SQS queue ARN "
            "(arn:aws:sqs:REGION:ACCOUNT:NAME) or URL (https://sqs.REGION.amazonaws.com/ACCOUNT/NAME)"
        )
    region, account, name = match.groups()
    return f"arn:{partition}:sqs:{region}:{account}:{name}"


@dataclass(frozen=True, kw_only=True)
class PipelineResources:
    """The resources the pipeline's calls are scoped to; ``None`` leaves a component out."""

    partition: str = "aws"
    account_id: str = "*"
    """The pipeline's own account, for DynamoDB table ARNs (``*`` when not known)."""
    member_role_arns: tuple[str, ...] = (f"arn:aws:iam::*:role/{READER_ROLE_NAME}",)
    discover_organization: bool = False
    warehouse_bucket: str | None = None
    warehouse_prefix: str = ""
    table_prefix: str | None = None
    trail_bucket: str | None = None
    trail_key_prefix: str = ""
    trail_queue_arn: str | None = None
    notes: tuple[str, ...] = field(default=(), compare=False)
    """Why a component was left out or scoped more widely than it could be."""

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        trail_bucket: str | None = None,
        trail_queue: str | None = None,
        trail_key_prefix: str = "",
        account_id: str | None = None,
    ) -> PipelineResources:
        """Scope from the settings (accounts, storage) and the CloudTrail flags."""
        aws, storage = settings.aws, settings.storage
        partition = aws.accounts[0].role_arn.split(":")[1] if aws.accounts else "aws"
        notes: list[str] = []
        roles = [account.role_arn for account in aws.accounts]
        if aws.organization_role_name:
            roles.append(f"arn:{partition}:iam::*:role/{aws.organization_role_name}")
        if not roles:
            roles.append(f"arn:{partition}:iam::*:role/{READER_ROLE_NAME}")
            notes.append(
                "aws.accounts and aws.organization_role_name are not set: sts:AssumeRole is "
                f"granted on the role {READER_ROLE_NAME} in any account (the member-role "
                "template's role)"
            )
        if account_id is not None and not _ACCOUNT_RE.match(account_id):
            raise ConfigError(f"--account-id {account_id!r}: expected a 12-digit account id")
        if "s3" in storage.targets and not storage.s3_bucket:
            raise ConfigError(
                "storage.targets includes s3 but storage.s3_bucket is not set: "
                "set it to scope the warehouse permissions"
            )
        if not storage.s3_bucket:
            notes.append("storage.s3_bucket is not set: no S3 warehouse permissions")
        table_prefix = storage.dynamodb_table_prefix if "dynamodb" in storage.targets else None
        if table_prefix is None:
            notes.append("storage.targets does not include dynamodb: no DynamoDB permissions")
        elif account_id is None:
            notes.append(
                "DynamoDB tables are scoped to any account: pass --account-id to pin "
                "them to the pipeline's own"
            )
        if not trail_queue:
            notes.append(
                "pass --trail-queue to add the CloudTrail tailer's SQS receive/delete permissions"
            )
        if not trail_bucket:
            notes.append(
                "pass --trail-bucket to add reading CloudTrail log files (tailer and backfill)"
            )
        return cls(
            partition=partition,
            account_id=account_id or "*",
            member_role_arns=tuple(sorted(set(roles))),
            discover_organization=bool(aws.organization_role_name),
            warehouse_bucket=storage.s3_bucket,
            warehouse_prefix=storage.s3_prefix,
            table_prefix=table_prefix,
            trail_bucket=trail_bucket,
            trail_key_prefix=trail_key_prefix,
            trail_queue_arn=queue_arn(trail_queue, partition=partition) if trail_queue else None,
            notes=tuple(notes),
        )

    def arns(self, kind: ResourceKind) -> list[str]:
        """The resources of ``kind``; empty when that component is not configured."""
        p = self.partition
        match kind:
            case "caller":
                return ["*"]
            case "member-roles":
                return list(self.member_role_arns)
            case "organization":
                return ["*"] if self.discover_organization else []
            case "trail-queue":
                return [self.trail_queue_arn] if self.trail_queue_arn else []
            case "trail-objects":
                if not self.trail_bucket:
                    return []
                return [
                    f"arn:{p}:s3:::{self.trail_bucket}/{_key_prefix(self.trail_key_prefix)}AWSLogs/*"
                ]
            case "trail-bucket":
                return [f"arn:{p}:s3:::{self.trail_bucket}"] if self.trail_bucket else []
            case "warehouse-objects":
                if not self.warehouse_bucket:
                    return []
                return [
                    f"arn:{p}:s3:::{self.warehouse_bucket}/{_key_prefix(self.warehouse_prefix)}*"
                ]
            case "warehouse-bucket":
                return [f"arn:{p}:s3:::{self.warehouse_bucket}"] if self.warehouse_bucket else []
            case "sink-tables":
                if self.table_prefix is None:
                    return []
                return [f"arn:{p}:dynamodb:*:{self.account_id}:table/{self.table_prefix}*"]


def _key_prefix(prefix: str) -> str:
    prefix = prefix.strip("/")
    return f"{prefix}/" if prefix else ""


def pipeline_permissions(resources: PipelineResources) -> list[tuple[PipelineCall, IamPermission]]:
    return [(c, iam_permission(c.call, partition=resources.partition)) for c in PIPELINE_CALLS]


def pipeline_policy(resources: PipelineResources) -> dict[str, Any]:
    """The policy of cloudinv's own principal: one statement per resource kind configured."""
    actions: dict[ResourceKind, list[str]] = {}
    for call, permission in pipeline_permissions(resources):
        actions.setdefault(call.resource, []).append(permission.action)
    return policy_document(
        (_PIPELINE_SIDS[kind], kind_actions, resources.arns(kind))
        for kind, kind_actions in actions.items()
    )


# -- the member-role template -------------------------------------------------------------------


@dataclass(frozen=True)
class CfnTag:
    """A CloudFormation intrinsic function, written ``!Ref X`` in YAML, ``{"Ref": X}`` in JSON."""

    function: Literal["Ref", "Sub", "GetAtt", "If", "Not", "Equals"]
    value: Any

    def long_form(self) -> dict[str, Any]:
        value = to_long_form(self.value)
        if self.function == "Ref":
            return {"Ref": value}
        if self.function == "GetAtt":
            return {"Fn::GetAtt": value.split(".", 1)}
        return {f"Fn::{self.function}": value}


def to_long_form(value: Any) -> Any:
    """``value`` with every :class:`CfnTag` replaced by its JSON form."""
    if isinstance(value, CfnTag):
        return value.long_form()
    if isinstance(value, Mapping):
        return {k: to_long_form(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_long_form(v) for v in value]
    return value


def _sub_partition(value: Any, partition_marker: str) -> Any:
    """Strings holding ``partition_marker`` become ``!Sub`` with ``${AWS::Partition}``."""
    if isinstance(value, str) and partition_marker in value:
        return CfnTag("Sub", value.replace(partition_marker, "${AWS::Partition}"))
    if isinstance(value, Mapping):
        return {k: _sub_partition(v, partition_marker) for k, v in value.items()}
    if isinstance(value, list):
        return [_sub_partition(v, partition_marker) for v in value]
    return value


def member_role_template(
    registry: Registry | None = None,
    *,
    trusted_principal: str | None = None,
    role_name: str = READER_ROLE_NAME,
) -> dict[str, Any]:
    """CloudFormation (for a StackSet) creating the reader role in a member account.

    The role trusts ``TrustedPrincipalArn`` (the pipeline's role, or its account's root),
    with an ``sts:ExternalId`` condition when the ``ExternalId`` parameter is not empty, and
    has :func:`reader_policies` attached as managed policies (ARNs in the stack's partition).
    """
    marker = "cloudinv-partition-marker"
    policies = [
        _sub_partition(document, marker) for document in reader_policies(registry, partition=marker)
    ]
    managed = {
        f"ReaderPolicy{n}": {
            "Type": "AWS::IAM::ManagedPolicy",
            "Properties": {
                "ManagedPolicyName": f"{READER_POLICY_NAME}-{n}",
                "Description": f"cloudinv inventory, read-only (part {n} of {len(policies)}): "
                "generated from the API calls cloudinv makes",
                "PolicyDocument": document,
            },
        }
        for n, document in enumerate(policies, start=1)
    }
    principal: dict[str, Any] = {
        "Type": "String",
        "Description": "The principal cloudinv runs as, in the pipeline account: its role "
        "ARN or arn:aws:iam::ACCOUNT:root",
        "AllowedPattern": r"^arn:aws[a-z-]*:(iam|sts)::\d{12}:.+$",
    }
    if trusted_principal:
        principal["Default"] = trusted_principal
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": f"{role_name}: the read-only role cloudinv assumes to inventory this "
        "account (generated by `cloudinv iam-policy --template member-role`)",
        "Parameters": {
            "TrustedPrincipalArn": principal,
            "ExternalId": {
                "Type": "String",
                "Default": "",
                "NoEcho": True,
                "Description": "If not empty, AssumeRole must pass this external id",
            },
            "RoleName": {"Type": "String", "Default": role_name},
        },
        "Conditions": {
            "HasExternalId": CfnTag("Not", [CfnTag("Equals", [CfnTag("Ref", "ExternalId"), ""])])
        },
        "Resources": {
            "ReaderRole": {
                "Type": "AWS::IAM::Role",
                "Properties": {
                    "RoleName": CfnTag("Ref", "RoleName"),
                    "Description": "cloudinv inventory: read-only, generated from the API "
                    "calls cloudinv makes",
                    "MaxSessionDuration": 3600,
                    "AssumeRolePolicyDocument": {
                        "Version": POLICY_VERSION,
                        "Statement": [
                            {
                                "Effect": "Allow",
                                "Principal": {"AWS": CfnTag("Ref", "TrustedPrincipalArn")},
                                "Action": "sts:AssumeRole",
                                "Condition": CfnTag(
                                    "If",
                                    [
                                        "HasExternalId",
                                        {
                                            "StringEquals": {
                                                "sts:ExternalId": CfnTag("Ref", "ExternalId")
                                            }
                                        },
                                        CfnTag("Ref", "AWS::NoValue"),
                                    ],
                                ),
                            }
                        ],
                    },
                    "ManagedPolicyArns": [CfnTag("Ref", name) for name in managed],
                    "Tags": [{"Key": "managed-by", "Value": "cloudinv"}],
                },
            },
            **managed,
        },
        "Outputs": {
            "RoleArn": {
                "Description": "Give this ARN to cloudinv (aws.accounts) or use "
                "aws.organization_role_name",
                "Value": CfnTag("GetAtt", "ReaderRole.Arn"),
            }
        },
    }


# -- rendering ----------------------------------------------------------------------------------

OutputFormat = Literal["json", "yaml"]

_PLAIN_SCALAR_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_./:*@=+,-]*$")
_YAML_WORDS = frozenset({"y", "n", "yes", "no", "on", "off", "true", "false", "null"})


def render(value: Any, output: OutputFormat) -> str:
    """JSON (intrinsic functions in long form) or block YAML (short-form ``!Tags``)."""
    if output == "json":
        return json.dumps(to_long_form(value), indent=2) + "\n"
    return "\n".join(_yaml_block(value, 0)) + "\n"


def _yaml_scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return json.dumps(value)
    if not isinstance(value, str):
        raise TypeError(f"cannot write {type(value).__name__} as YAML")
    text = value
    if _PLAIN_SCALAR_RE.match(text) and text.lower() not in _YAML_WORDS and text[-1] != ":":
        return text
    # A JSON string is a valid YAML double-quoted scalar.
    return json.dumps(text, ensure_ascii=False)


def _yaml_inline(value: Any, indent: int) -> tuple[str, list[str]]:
    """What follows ``key:`` or ``-`` on the same line, and the block lines after it."""
    if isinstance(value, CfnTag):
        text, block = _yaml_inline(value.value, indent)
        if block:
            return f" !{value.function}", block
        return f" !{value.function}{text}", []
    if isinstance(value, Mapping | list | tuple):
        if not value:
            return (" {}" if isinstance(value, Mapping) else " []"), []
        return "", _yaml_block(value, indent + 2)
    return " " + _yaml_scalar(value), []


def _yaml_block(value: Any, indent: int) -> list[str]:
    pad = " " * indent
    lines: list[str] = []
    if isinstance(value, Mapping):
        for key, item in value.items():
            text, block = _yaml_inline(item, indent)
            lines.append(f"{pad}{_yaml_scalar(key)}:{text}")
            lines.extend(block)
    elif isinstance(value, list | tuple):
        for item in value:
            if isinstance(item, Mapping | list | tuple) and item:
                # The item's first line moves up beside the dash: "- Key: value".
                block = _yaml_block(item, indent + 2)
                lines.append(f"{pad}- {block[0][indent + 2 :]}")
                lines.extend(block[1:])
            else:
                text, block = _yaml_inline(item, indent)
                lines.append(f"{pad}-{text}")
                lines.extend(block)
    else:
        lines.append(pad + _yaml_scalar(value))
    return lines
