"""The built-in rule pack, rule by rule: each rule fires on a resource, change or event made
for it, and stays quiet on a close one that is fine.

Resources are shaped as the producers collect them (the AWS API item with the detail calls
merged in, see ``cloudinv/catalog/resources``) and go through the real ``ChangeDetector``, so the
rules see normalized configurations and real JSON Patches. Events are raw CloudTrail records
put through the real ``normalize_record``. A meta-test makes every rule of the pack need a
case here.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from cloudinv.core.models import ChangeEvent, ResourceSnapshot
from cloudinv.producers.cloudtrail.normalize import normalize_record
from cloudinv.streams.changes import ChangeDetector, DeletionRequest
from cloudinv.streams.rules import (
    Rule,
    RuleSet,
    evaluate_change,
    evaluate_event,
    load_rules,
    parse_rules,
    rule_set_of,
)

ACCOUNT = "111122223333"
REGION = "us-east-1"
T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)
_ids = itertools.count(1)

PACK: RuleSet = load_rules()


# -- inputs -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    """A resource's configuration: a state rule sees it as a created resource."""

    configuration: dict[str, Any]


@dataclass(frozen=True)
class Change:
    """A resource going from ``before`` to ``after``."""

    before: dict[str, Any]
    after: dict[str, Any]


@dataclass(frozen=True)
class Event:
    """A raw CloudTrail record."""

    record: dict[str, Any]


Input = Config | Change | Event


def _snapshot(
    rtype: str, configuration: dict[str, Any], key: str, at: datetime
) -> ResourceSnapshot:
    return ResourceSnapshot.build(
        account_id=ACCOUNT,
        region=REGION,
        resource_type=rtype,
        resource_id=key.rsplit("/", 1)[-1],
        arn=key,
        configuration=configuration,
        scan_id="scan",
        captured_at=at,
    )


def changes_of(rtype: str, *configurations: dict[str, Any]) -> list[ChangeEvent]:
    """The ChangeEvents the real detector makes for one resource taking these states."""
    detector = ChangeDetector()
    key = f"arn:aws:test:{REGION}:{ACCOUNT}:thing/r-{next(_ids)}"
    found = []
    for n, configuration in enumerate(configurations):
        change = detector.observe(_snapshot(rtype, configuration, key, T0 + timedelta(minutes=n)))
        assert change is not None
        found.append(change)
    return found


def event_document(record: dict[str, Any]) -> dict[str, Any]:
    """The event as the rules see it: normalized, as JSON on the CloudTrail topic.

    ``additionalEventData`` is not (yet) carried by CloudTrailEvent; it is added here under
    the name the console-login rule reads (see test_console_login_mfa_needs_additional_data).
    """
    document = normalize_record(record).model_dump(mode="json")
    if "additionalEventData" in record:
        document["additional_event_data"] = record["additionalEventData"]
    return document


def fires(rule: Rule, given: Input) -> bool:
    ruleset = rule_set_of([rule])
    if isinstance(given, Event):
        evaluation = evaluate_event(ruleset, event_document(given.record))
    elif isinstance(given, Config):
        # No related resources (rules on them: tests/test_rules_related.py).
        (change,) = changes_of(str(rule.resource_type), given.configuration)
        evaluation = evaluate_change(ruleset, change, [])
    else:
        change = changes_of(str(rule.resource_type), given.before, given.after)[-1]
        evaluation = evaluate_change(ruleset, change, [])
    assert not evaluation.errors, evaluation.errors
    return any(o.opens for o in evaluation.observations)


# -- resources as collected ---------------------------------------------------------------------


def perm(
    from_port: int | None,
    to_port: int | None = None,
    *,
    cidr: str | None = "0.0.0.0/0",
    v6: str | None = None,
    proto: str = "tcp",
) -> dict[str, Any]:
    permission: dict[str, Any] = {
        "IpProtocol": proto,
        "IpRanges": [{"CidrIp": cidr}] if cidr else [],
        "Ipv6Ranges": [{"CidrIpv6": v6}] if v6 else [],
        "PrefixListIds": [],
        "UserIdGroupPairs": [],
    }
    if from_port is not None:
        permission["FromPort"] = from_port
        permission["ToPort"] = to_port if to_port is not None else from_port
    return permission


ALL_OUT = {
    "IpProtocol": "-1",
    "IpRanges": [{"CidrIp": "0.0.0.0/0"}],
    "Ipv6Ranges": [],
    "PrefixListIds": [],
    "UserIdGroupPairs": [],
}


def sg(
    *ingress: dict[str, Any],
    name: str = "web",
    egress: list[dict[str, Any]] | None = None,
    description: str = "web tier",
) -> dict[str, Any]:
    """A DescribeSecurityGroups item."""
    return {
        "Description": description,
        "GroupName": name,
        "IpPermissions": list(ingress),
        "OwnerId": ACCOUNT,
        "GroupId": "sg-0123456789abcdef0",
        "IpPermissionsEgress": [ALL_OUT] if egress is None else egress,
        "Tags": [{"Key": "team", "Value": "web"}],
        "VpcId": "vpc-0a1b2c3d",
    }


def nacl(*entries: dict[str, Any]) -> dict[str, Any]:
    return {
        "Associations": [],
        "Entries": [
            *entries,
            {
                "CidrBlock": "0.0.0.0/0",
                "Egress": False,
                "Protocol": "-1",
                "RuleAction": "deny",
                "RuleNumber": 32767,
            },
        ],
        "IsDefault": False,
        "NetworkAclId": "acl-0a1b2c3d",
        "Tags": [],
        "VpcId": "vpc-0a1b2c3d",
        "OwnerId": ACCOUNT,
    }


def nacl_entry(number: int, protocol: str, ports: tuple[int, int] | None) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "CidrBlock": "0.0.0.0/0",
        "Egress": False,
        "Protocol": protocol,
        "RuleAction": "allow",
        "RuleNumber": number,
    }
    if ports is not None:
        entry["PortRange"] = {"From": ports[0], "To": ports[1]}
    return entry


def volume(encrypted: bool) -> dict[str, Any]:
    return {
        "Attachments": [],
        "AvailabilityZone": "us-east-1a",
        "CreateTime": "2026-10-01T10:00:00+00:00",
        "Encrypted": encrypted,
        "Size": 8,
        "SnapshotId": "",
        "State": "available",
        "VolumeId": "vol-0a1b2c3d",
        "VolumeType": "gp3",
    }


def ebs_snapshot(encrypted: bool) -> dict[str, Any]:
    return {
        "Description": "nightly",
        "Encrypted": encrypted,
        "OwnerId": ACCOUNT,
        "Progress": "100%",
        "SnapshotId": "snap-0a1b2c3d",
        "StartTime": "2026-10-01T10:00:00+00:00",
        "State": "completed",
        "VolumeId": "vol-0a1b2c3d",
        "VolumeSize": 8,
        "StorageTier": "standard",
    }


def instance(http_tokens: str, state: str = "running") -> dict[str, Any]:
    return {
        "InstanceId": "i-0a1b2c3d",
        "InstanceType": "t3.micro",
        "ImageId": "ami-12345678",
        "State": {"Code": 16, "Name": state},
        "SubnetId": "subnet-0a1b",
        "VpcId": "vpc-0a1b2c3d",
        "MetadataOptions": {
            "State": "applied",
            "HttpTokens": http_tokens,
            "HttpPutResponseHopLimit": 1,
            "HttpEndpoint": "enabled",
            "HttpProtocolIpv6": "disabled",
            "InstanceMetadataTags": "disabled",
        },
    }


def vpc(default: bool) -> dict[str, Any]:
    return {
        "CidrBlock": "172.31.0.0/16",
        "DhcpOptionsId": "dopt-0a1b",
        "State": "available",
        "VpcId": "vpc-0a1b2c3d",
        "OwnerId": ACCOUNT,
        "InstanceTenancy": "default",
        "IsDefault": default,
    }


FULL_BLOCK = {
    "BlockPublicAcls": True,
    "IgnorePublicAcls": True,
    "BlockPublicPolicy": True,
    "RestrictPublicBuckets": True,
}
SSL_ONLY_POLICY = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "DenyInsecureTransport",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": ["arn:aws:s3:::data", "arn:aws:s3:::data/*"],
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            }
        ],
    }
)
OWNER = {"DisplayName": "owner", "ID": "a" * 64}


def bucket(**merged: Any) -> dict[str, Any]:
    """A ListBuckets item with the detail calls merged in (cloudinv/catalog/resources/s3.py)."""
    configuration: dict[str, Any] = {
        "Name": "data",
        "CreationDate": "2026-10-01T10:00:00+00:00",
        "Location": None,
        "Policy": SSL_ONLY_POLICY,
        "PolicyStatus": {"IsPublic": False},
        "Acl": {
            "Owner": OWNER,
            "Grants": [
                {"Grantee": {**OWNER, "Type": "CanonicalUser"}, "Permission": "FULL_CONTROL"}
            ],
        },
        "Encryption": {
            "Rules": [
                {
                    "ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"},
                    "BucketKeyEnabled": False,
                }
            ]
        },
        "Versioning": {"Status": "Enabled", "MFADelete": "Enabled"},
        "Lifecycle": None,
        "Logging": None,
        "Replication": None,
        "Cors": None,
        "Tagging": [{"Key": "team", "Value": "data"}],
        "PublicAccessBlock": FULL_BLOCK,
        "OwnershipControls": {"Rules": [{"ObjectOwnership": "BucketOwnerEnforced"}]},
    }
    configuration.update(merged)
    return configuration


def iam_user(**merged: Any) -> dict[str, Any]:
    """A GetAccountAuthorizationDetails user with access keys, MFA devices, login profile."""
    configuration: dict[str, Any] = {
        "Path": "/",
        "UserName": "bob",
        "UserId": "AIDAEXAMPLE",
        "Arn": f"arn:aws:iam::{ACCOUNT}:user/bob",
        "CreateDate": "2026-10-01T10:00:00+00:00",
        "UserPolicyList": [],
        "GroupList": ["developers"],
        "AttachedManagedPolicies": [],
        "Tags": [],
        "AccessKeys": [
            {
                "UserName": "bob",
                "AccessKeyId": "AKIAEXAMPLE1",
                "Status": "Active",
                "CreateDate": "2026-10-01T10:00:00+00:00",
            }
        ],
        "MFADevices": [
            {
                "UserName": "bob",
                "SerialNumber": f"arn:aws:iam::{ACCOUNT}:mfa/bob",
                "EnableDate": "2026-10-01T10:00:00+00:00",
            }
        ],
        "LoginProfile": {
            "UserName": "bob",
            "CreateDate": "2026-10-01T10:00:00+00:00",
            "PasswordResetRequired": False,
        },
    }
    configuration.update(merged)
    return configuration


def managed_policy(statement: Any) -> dict[str, Any]:
    return {
        "PolicyName": "ops",
        "PolicyId": "ANPAEXAMPLE",
        "Arn": f"arn:aws:iam::{ACCOUNT}:policy/ops",
        "Path": "/",
        "DefaultVersionId": "v1",
        "IsAttachable": True,
        "CreateDate": "2026-10-01T10:00:00+00:00",
        "UpdateDate": "2026-10-01T10:00:00+00:00",
        "DefaultVersion": {
            "Document": {"Version": "2012-10-17", "Statement": statement},
            "VersionId": "v1",
            "IsDefaultVersion": True,
            "CreateDate": "2026-10-01T10:00:00+00:00",
        },
    }


def kms_key(state: str = "Enabled", rotation: bool | None = True) -> dict[str, Any]:
    """ListKeys item + DescribeKey's KeyMetadata + rotation, policy and tags."""
    return {
        "KeyId": "1234abcd-12ab-34cd-56ef-1234567890ab",
        "KeyArn": f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        "AWSAccountId": ACCOUNT,
        "Arn": f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        "CreationDate": "2026-10-01T10:00:00+00:00",
        "Enabled": state == "Enabled",
        "Description": "app data",
        "KeyUsage": "ENCRYPT_DECRYPT",
        "KeyState": state,
        "Origin": "AWS_KMS",
        "KeyManager": "CUSTOMER",
        "CustomerMasterKeySpec": "SYMMETRIC_DEFAULT",
        "KeySpec": "SYMMETRIC_DEFAULT",
        "EncryptionAlgorithms": ["SYMMETRIC_DEFAULT"],
        "MultiRegion": False,
        "KeyRotationEnabled": rotation,
        "KeyPolicy": "{}",
        "Tags": [],
    }


def db_instance(**merged: Any) -> dict[str, Any]:
    configuration: dict[str, Any] = {
        "DBInstanceIdentifier": "orders",
        "DBInstanceClass": "db.t3.micro",
        "Engine": "postgres",
        "DBInstanceStatus": "available",
        "AllocatedStorage": 20,
        "PubliclyAccessible": False,
        "StorageEncrypted": True,
        "AutoMinorVersionUpgrade": True,
        "DBSubnetGroup": {
            "DBSubnetGroupName": "orders-db",
            "VpcId": "vpc-0a1b2c3d",
            "SubnetGroupStatus": "Complete",
            "Subnets": [],
        },
        "DBInstanceArn": f"arn:aws:rds:{REGION}:{ACCOUNT}:db:orders",
        "TagList": [],
    }
    configuration.update(merged)
    return configuration


def db_snapshot(encrypted: bool) -> dict[str, Any]:
    return {
        "DBSnapshotIdentifier": "orders-manual",
        "DBInstanceIdentifier": "orders",
        "Engine": "postgres",
        "Status": "available",
        "SnapshotType": "manual",
        "Encrypted": encrypted,
        "DBSnapshotArn": f"arn:aws:rds:{REGION}:{ACCOUNT}:snapshot:orders-manual",
        "TagList": [],
    }


def cluster_snapshot(encrypted: bool) -> dict[str, Any]:
    return {
        "DBClusterSnapshotIdentifier": "reports-manual",
        "DBClusterIdentifier": "reports",
        "Engine": "aurora-postgresql",
        "Status": "available",
        "SnapshotType": "manual",
        "StorageEncrypted": encrypted,
        "DBClusterSnapshotArn": f"arn:aws:rds:{REGION}:{ACCOUNT}:cluster-snapshot:reports-manual",
        "TagList": [],
    }


def trail(**merged: Any) -> dict[str, Any]:
    """A DescribeTrails item with GetEventSelectors merged in."""
    configuration: dict[str, Any] = {
        "Name": "main",
        "S3BucketName": "trail-logs",
        "IncludeGlobalServiceEvents": True,
        "IsMultiRegionTrail": True,
        "HomeRegion": REGION,
        "TrailARN": f"arn:aws:cloudtrail:{REGION}:{ACCOUNT}:trail/main",
        "LogFileValidationEnabled": True,
        "KmsKeyId": f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1234abcd",
        "HasCustomEventSelectors": False,
        "HasInsightSelectors": False,
        "IsOrganizationTrail": False,
        "EventSelectors": {
            "TrailARN": f"arn:aws:cloudtrail:{REGION}:{ACCOUNT}:trail/main",
            "EventSelectors": [
                {"ReadWriteType": "All", "IncludeManagementEvents": True, "DataResources": []}
            ],
        },
    }
    configuration.update(merged)
    return configuration


# -- CloudTrail records -------------------------------------------------------------------------

IAM_USER = {
    "type": "IAMUser",
    "principalId": "AIDAEXAMPLE",
    "arn": f"arn:aws:iam::{ACCOUNT}:user/alice",
    "accountId": ACCOUNT,
    "accessKeyId": "AKIAEXAMPLE2",
    "userName": "alice",
}
ROOT = {
    "type": "Root",
    "principalId": ACCOUNT,
    "arn": f"arn:aws:iam::{ACCOUNT}:root",
    "accountId": ACCOUNT,
    "accessKeyId": "ASIAEXAMPLE3",
}


def record(
    name: str,
    source: str,
    *,
    params: dict[str, Any] | None = None,
    response: dict[str, Any] | None = None,
    identity: dict[str, Any] | None = None,
    error: tuple[str, str] | None = None,
    **extra: Any,
) -> Event:
    raw: dict[str, Any] = {
        "eventVersion": "1.08",
        "userIdentity": identity or IAM_USER,
        "eventTime": "2026-11-01T12:00:00Z",
        "eventSource": source,
        "eventName": name,
        "awsRegion": REGION,
        "sourceIPAddress": "203.0.113.10",
        "userAgent": "aws-cli/2.15.0",
        "requestParameters": params,
        "responseElements": response,
        "requestID": f"req-{next(_ids)}",
        "eventID": f"evt-{next(_ids)}",
        "readOnly": False,
        "eventType": "AwsApiCall",
        "managementEvent": True,
        "recipientAccountId": ACCOUNT,
        **extra,
    }
    if error is not None:
        raw["errorCode"], raw["errorMessage"] = error
    return Event(raw)


DENIED = ("AccessDenied", "User is not authorized to perform this operation")


def console_login(result: str, mfa: str) -> Event:
    return record(
        "ConsoleLogin",
        "signin.amazonaws.com",
        response={"ConsoleLogin": result},
        additionalEventData={
            "LoginTo": "https://console.aws.amazon.com/console/home",
            "MobileVersion": "No",
            "MFAUsed": mfa,
        },
        **({"errorMessage": "Failed authentication"} if result == "Failure" else {}),
    )


KEY_ARN = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/1234abcd-12ab-34cd-56ef-1234567890ab"
KMS_RESOURCES = [{"accountId": ACCOUNT, "type": "AWS::KMS::Key", "ARN": KEY_ARN}]


# -- the cases: rule id -> (fires on, quiet on) -------------------------------------------------

CASES: dict[str, tuple[Input, Input]] = {
    "ec2-sg-ssh-open-to-world": (
        Config(sg(perm(22))),
        Config(sg(perm(22, cidr="10.0.0.0/8"), perm(443))),
    ),
    # The same condition rated by what uses the group (tests/test_rules_related.py).
    "ec2-sg-ssh-open-to-world-in-use": (
        Config(sg(perm(22))),
        Config(sg(perm(22, cidr="10.0.0.0/8"), perm(443))),
    ),
    "ec2-sg-rdp-open-to-world": (
        Config(sg(perm(3389, cidr=None, v6="::/0"))),
        Config(sg(perm(3389, cidr="192.168.0.0/16"), perm(22, cidr="10.0.0.0/8"))),
    ),
    "ec2-sg-all-traffic-open-to-world": (
        Config(sg(perm(None, proto="-1"))),
        Config(sg(perm(None, proto="-1", cidr="10.0.0.0/8"), perm(443))),
    ),
    "ec2-sg-database-ports-open-to-world": (
        Config(sg(perm(443), perm(5432))),
        Config(sg(perm(443), perm(5432, cidr="10.0.0.0/8"))),
    ),
    "ec2-default-sg-allows-traffic": (
        Config(sg(name="default")),
        Config(sg(name="default", egress=[])),
    ),
    "ec2-sg-ingress-opened-to-world": (
        Change(sg(perm(8080, cidr="10.0.0.0/8")), sg(perm(8080))),
        Change(sg(perm(443)), sg(perm(443), perm(8080, cidr="10.0.0.0/8"))),
    ),
    "ec2-nacl-admin-ports-open-to-world": (
        Config(nacl(nacl_entry(100, "-1", None))),
        Config(nacl(nacl_entry(100, "6", (443, 443)), nacl_entry(110, "6", (8080, 8080)))),
    ),
    "ec2-volume-unencrypted": (Config(volume(False)), Config(volume(True))),
    "ec2-snapshot-unencrypted": (Config(ebs_snapshot(False)), Config(ebs_snapshot(True))),
    "ec2-snapshot-made-public": (
        record(
            "ModifySnapshotAttribute",
            "ec2.amazonaws.com",
            params={
                "snapshotId": "snap-0a1b2c3d",
                "createVolumePermission": {"add": {"items": [{"group": "all"}]}},
                "attributeType": "CREATE_VOLUME_PERMISSION",
            },
            response={"requestId": "r", "_return": True},
        ),
        record(
            "ModifySnapshotAttribute",
            "ec2.amazonaws.com",
            params={
                "snapshotId": "snap-0a1b2c3d",
                "createVolumePermission": {"add": {"items": [{"userId": "444455556666"}]}},
                "attributeType": "CREATE_VOLUME_PERMISSION",
            },
        ),
    ),
    "ec2-ami-made-public": (
        record(
            "ModifyImageAttribute",
            "ec2.amazonaws.com",
            params={
                "imageId": "ami-0a1b2c3d",
                "launchPermission": {"add": {"items": [{"group": "all"}]}},
                "attributeType": "launchPermission",
            },
        ),
        record(
            "ModifyImageAttribute",
            "ec2.amazonaws.com",
            params={
                "imageId": "ami-0a1b2c3d",
                "launchPermission": {"remove": {"items": [{"group": "all"}]}},
                "attributeType": "launchPermission",
            },
        ),
    ),
    "ec2-instance-imdsv1-allowed": (Config(instance("optional")), Config(instance("required"))),
    "ec2-default-vpc-present": (Config(vpc(True)), Config(vpc(False))),
    "s3-bucket-public-access-block-missing": (
        Config(bucket(PublicAccessBlock=None)),
        Config(bucket()),
    ),
    "s3-bucket-policy-public": (
        Config(bucket(PolicyStatus={"IsPublic": True})),
        Config(bucket()),
    ),
    "s3-bucket-acl-public": (
        Config(
            bucket(
                Acl={
                    "Owner": OWNER,
                    "Grants": [
                        {
                            "Grantee": {**OWNER, "Type": "CanonicalUser"},
                            "Permission": "FULL_CONTROL",
                        },
                        {
                            "Grantee": {
                                "Type": "Group",
                                "URI": "http://acs.amazonaws.com/groups/global/AllUsers",
                            },
                            "Permission": "READ",
                        },
                    ],
                }
            )
        ),
        Config(bucket()),
    ),
    "s3-bucket-no-default-encryption": (Config(bucket(Encryption=None)), Config(bucket())),
    "s3-bucket-allows-http": (Config(bucket(Policy=None)), Config(bucket())),
    "s3-bucket-mfa-delete-disabled": (
        Config(bucket(Versioning={"Status": "Enabled", "MFADelete": "Disabled"})),
        Config(bucket()),
    ),
    "iam-user-console-without-mfa": (Config(iam_user(MFADevices=[])), Config(iam_user())),
    "iam-user-multiple-active-keys": (
        Config(
            iam_user(
                AccessKeys=[
                    {"UserName": "bob", "AccessKeyId": "AKIA1", "Status": "Active"},
                    {"UserName": "bob", "AccessKeyId": "AKIA2", "Status": "Active"},
                ]
            )
        ),
        Config(
            iam_user(
                AccessKeys=[
                    {"UserName": "bob", "AccessKeyId": "AKIA1", "Status": "Active"},
                    {"UserName": "bob", "AccessKeyId": "AKIA2", "Status": "Inactive"},
                ]
            )
        ),
    ),
    "iam-user-direct-policies": (
        Config(
            iam_user(
                AttachedManagedPolicies=[
                    {
                        "PolicyName": "AdministratorAccess",
                        "PolicyArn": "arn:aws:iam::aws:policy/AdministratorAccess",
                    }
                ]
            )
        ),
        Config(iam_user()),
    ),
    "iam-policy-full-admin": (
        Config(managed_policy([{"Effect": "Allow", "Action": "*", "Resource": "*"}])),
        Config(
            managed_policy(
                [{"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": "arn:aws:s3:::d/*"}]
            )
        ),
    ),
    "iam-access-key-created": (
        record(
            "CreateAccessKey",
            "iam.amazonaws.com",
            params={"userName": "bob"},
            response={
                "accessKey": {
                    "accessKeyId": "AKIAEXAMPLE9",
                    "status": "Active",
                    "userName": "bob",
                    "createDate": "Nov 1, 2026 12:00:00 PM",
                }
            },
        ),
        record("CreateAccessKey", "iam.amazonaws.com", params={"userName": "bob"}, error=DENIED),
    ),
    "iam-policy-changed": (
        record(
            "AttachUserPolicy",
            "iam.amazonaws.com",
            params={"userName": "bob", "policyArn": "arn:aws:iam::aws:policy/AdministratorAccess"},
        ),
        record(
            "AttachUserPolicy",
            "iam.amazonaws.com",
            params={"userName": "bob", "policyArn": "arn:aws:iam::aws:policy/AdministratorAccess"},
            error=DENIED,
        ),
    ),
    "kms-key-pending-deletion": (
        Config(kms_key("PendingDeletion")),
        Config(kms_key("Disabled")),
    ),
    "kms-key-disabled-or-deletion-scheduled": (
        record(
            "ScheduleKeyDeletion",
            "kms.amazonaws.com",
            params={"keyId": KEY_ARN, "pendingWindowInDays": 7},
            response={"keyId": KEY_ARN, "keyState": "PendingDeletion"},
            resources=KMS_RESOURCES,
        ),
        record(
            "ScheduleKeyDeletion",
            "kms.amazonaws.com",
            params={"keyId": KEY_ARN, "pendingWindowInDays": 7},
            resources=KMS_RESOURCES,
            error=DENIED,
        ),
    ),
    "kms-key-rotation-disabled": (
        Config(kms_key(rotation=False)),
        Config(kms_key(rotation=True)),
    ),
    "rds-instance-publicly-accessible": (
        Config(db_instance(PubliclyAccessible=True)),
        Config(db_instance()),
    ),
    "rds-instance-unencrypted": (
        Config(db_instance(StorageEncrypted=False)),
        Config(db_instance()),
    ),
    "rds-instance-auto-minor-upgrade-disabled": (
        Config(db_instance(AutoMinorVersionUpgrade=False)),
        Config(db_instance()),
    ),
    "rds-instance-in-default-vpc": (
        Config(db_instance(DBSubnetGroup={"DBSubnetGroupName": "default", "VpcId": "vpc-d"})),
        Config(db_instance()),
    ),
    "rds-snapshot-unencrypted": (Config(db_snapshot(False)), Config(db_snapshot(True))),
    "rds-cluster-snapshot-unencrypted": (
        Config(cluster_snapshot(False)),
        Config(cluster_snapshot(True)),
    ),
    "rds-snapshot-made-public": (
        record(
            "ModifyDBSnapshotAttribute",
            "rds.amazonaws.com",
            params={
                "dBSnapshotIdentifier": "orders-manual",
                "attributeName": "restore",
                "valuesToAdd": ["all"],
            },
        ),
        record(
            "ModifyDBSnapshotAttribute",
            "rds.amazonaws.com",
            params={
                "dBSnapshotIdentifier": "orders-manual",
                "attributeName": "restore",
                "valuesToAdd": ["444455556666"],
            },
        ),
    ),
    "root-account-used": (
        record("ListBuckets", "s3.amazonaws.com", identity=ROOT),
        record("ListBuckets", "s3.amazonaws.com"),
    ),
    "console-login-without-mfa": (console_login("Success", "No"), console_login("Success", "Yes")),
    "console-login-failed": (console_login("Failure", "No"), console_login("Success", "Yes")),
    "cloudtrail-logging-stopped": (
        record(
            "StopLogging",
            "cloudtrail.amazonaws.com",
            params={"name": f"arn:aws:cloudtrail:{REGION}:{ACCOUNT}:trail/main"},
        ),
        record(
            "StopLogging",
            "cloudtrail.amazonaws.com",
            params={"name": f"arn:aws:cloudtrail:{REGION}:{ACCOUNT}:trail/main"},
            error=DENIED,
        ),
    ),
    "cloudtrail-not-multi-region": (
        Config(trail(IsMultiRegionTrail=False)),
        Config(trail()),
    ),
    "cloudtrail-log-validation-disabled": (
        Config(trail(LogFileValidationEnabled=False)),
        Config(trail()),
    ),
    "cloudtrail-not-kms-encrypted": (
        Config({k: v for k, v in trail().items() if k != "KmsKeyId"}),
        Config(trail()),
    ),
    "config-recording-stopped": (
        record(
            "StopConfigurationRecorder",
            "config.amazonaws.com",
            params={"configurationRecorderName": "default"},
        ),
        record(
            "StopConfigurationRecorder",
            "config.amazonaws.com",
            params={"configurationRecorderName": "default"},
            error=DENIED,
        ),
    ),
}


# -- tests --------------------------------------------------------------------------------------


def test_the_pack_loads_whole_and_every_rule_has_a_case() -> None:
    assert not PACK.problems, [str(p) for p in PACK.problems]
    assert len(PACK.rules) >= 25
    assert {r.id for r in PACK.rules} == set(CASES)
    assert {r.kind for r in PACK.rules} == {"state", "change", "event"}


@pytest.mark.parametrize("rule_id", sorted(CASES))
def test_rule_fires(rule_id: str) -> None:
    rule = PACK.get(rule_id)
    assert rule is not None
    assert fires(rule, CASES[rule_id][0])


@pytest.mark.parametrize("rule_id", sorted(CASES))
def test_rule_stays_quiet(rule_id: str) -> None:
    rule = PACK.get(rule_id)
    assert rule is not None
    assert not fires(rule, CASES[rule_id][1])


@pytest.mark.parametrize(
    ("rule_id", "given", "expected"),
    [
        # SSH: a port range covering 22, all traffic, and IPv6 all count; ICMP does not.
        ("ec2-sg-ssh-open-to-world", Config(sg(perm(0, 65535))), True),
        ("ec2-sg-ssh-open-to-world", Config(sg(perm(None, proto="-1"))), True),
        ("ec2-sg-ssh-open-to-world", Config(sg(perm(22, cidr=None, v6="::/0"))), True),
        ("ec2-sg-ssh-open-to-world", Config(sg(perm(-1, -1, proto="icmp"))), False),
        ("ec2-sg-ssh-open-to-world", Config(sg(perm(23, 1000))), False),
        # A created group open to the world is an opening too.
        ("ec2-sg-ingress-opened-to-world", Change(sg(), sg(perm(22))), True),
        # A world range added to an existing permission.
        (
            "ec2-sg-ingress-opened-to-world",
            Change(
                sg(perm(22, cidr="10.0.0.0/8")),
                sg(
                    {
                        **perm(22, cidr="10.0.0.0/8"),
                        "IpRanges": [{"CidrIp": "10.0.0.0/8"}, {"CidrIp": "0.0.0.0/0"}],
                    }
                ),
            ),
            True,
        ),
        # Egress to the world is normal.
        ("ec2-sg-ingress-opened-to-world", Change(sg(egress=[]), sg()), False),
        # One of the four public access block settings off is enough.
        (
            "s3-bucket-public-access-block-missing",
            Config(bucket(PublicAccessBlock={**FULL_BLOCK, "RestrictPublicBuckets": False})),
            True,
        ),
        (
            "s3-bucket-no-default-encryption",
            Config(bucket(Encryption={"Rules": []})),
            True,
        ),
        # A policy with one statement as an object, and Action as a list.
        (
            "iam-policy-full-admin",
            Config(managed_policy({"Effect": "Allow", "Action": ["*"], "Resource": ["*"]})),
            True,
        ),
        (
            "iam-policy-full-admin",
            Config(managed_policy({"Effect": "Deny", "Action": "*", "Resource": "*"})),
            False,
        ),
        # No login profile: no console access, MFA or not.
        ("iam-user-console-without-mfa", Config(iam_user(MFADevices=[], LoginProfile=None)), False),
        # The service acting for root is not root usage.
        (
            "root-account-used",
            record(
                "Decrypt",
                "kms.amazonaws.com",
                identity={**ROOT, "invokedBy": "cloudtrail.amazonaws.com"},
            ),
            False,
        ),
        ("kms-key-rotation-disabled", Config(kms_key("PendingDeletion", rotation=False)), False),
    ],
)
def test_rule_edges(rule_id: str, given: Input, expected: bool) -> None:
    rule = PACK.get(rule_id)
    assert rule is not None
    assert fires(rule, given) is expected


def test_a_state_alert_holds_until_a_change_clears_it_or_the_resource_goes() -> None:
    rule = PACK.get("ec2-sg-ssh-open-to-world")
    assert rule is not None
    ruleset = rule_set_of([rule])
    opened, tagged, closed = changes_of(
        "AWS::EC2::SecurityGroup", sg(perm(22)), sg(perm(22), description="web, reviewed"), sg()
    )
    states = [
        (o.opens, o.holds)
        for change in (opened, tagged, closed)
        for o in evaluate_change(ruleset, change).observations
    ]
    assert states == [(True, True), (True, True), (False, False)]
    detector = ChangeDetector()
    key = opened.key
    first = detector.observe(_snapshot("AWS::EC2::SecurityGroup", sg(perm(22)), key, T0))
    assert first is not None
    gone = detector.request_deletion(
        DeletionRequest(
            key=key,
            resource_type="AWS::EC2::SecurityGroup",
            account_id=ACCOUNT,
            region=REGION,
            scan_id="scan-2",
            scan_started_at=T0 + timedelta(hours=1),
        )
    )
    assert gone is not None and gone.change_type == "deleted"
    (observation,) = evaluate_change(ruleset, gone).observations
    assert (observation.opens, observation.holds) == (False, False)


def test_a_change_alert_stays_open_while_open_while_holds() -> None:
    rule = PACK.get("ec2-sg-ingress-opened-to-world")
    assert rule is not None
    ruleset = rule_set_of([rule])
    opened, retagged, closed = changes_of(
        "AWS::EC2::SecurityGroup",
        sg(perm(8080)),
        sg(perm(8080), description="renamed"),
        sg(perm(8080, cidr="10.0.0.0/8")),
    )
    states = [
        (o.opens, o.holds)
        for change in (opened, retagged, closed)
        for o in evaluate_change(ruleset, change).observations
    ]
    assert states == [(True, True), (False, True), (False, False)]


def test_an_event_alert_resolves_on_its_resolving_event_for_the_same_resource() -> None:
    rule = PACK.get("cloudtrail-logging-stopped")
    assert rule is not None
    ruleset = rule_set_of([rule])
    name = {"name": f"arn:aws:cloudtrail:{REGION}:{ACCOUNT}:trail/main"}
    stop = record("StopLogging", "cloudtrail.amazonaws.com", params=name)
    start = record("StartLogging", "cloudtrail.amazonaws.com", params=name)
    (stopped,) = evaluate_event(ruleset, event_document(stop.record)).observations
    (started,) = evaluate_event(ruleset, event_document(start.record)).observations
    assert (stopped.opens, stopped.holds) == (True, True)
    assert (started.opens, started.holds) == (False, False)
    assert stopped.key == started.key == name["name"]
    assert stopped.detail["principal"]["name"] == "alice"


def test_console_login_mfa_needs_additional_data() -> None:
    raw = console_login("Success", "No").record
    document = normalize_record(raw).model_dump(mode="json")
    assert document.get("additional_event_data", {}).get("MFAUsed") == "No"


# -- loading: malformed rules are rejected alone ---------------------------------------------------

MIXED_FILE = """
rules:
  - id: good-one
    title: A good rule
    severity: low
    kind: state
    resource_type: AWS::S3::Bucket
    condition: PolicyStatus.IsPublic == `true`
  - id: bad-jmespath
    title: Broken condition
    severity: high
    kind: state
    resource_type: AWS::S3::Bucket
    condition: Acl.Grants[?Grantee.URI ==
  - id: bad-type
    title: Unknown type
    severity: high
    kind: state
    resource_type: AWS::S3::Buckett
    condition: Name
  - id: bad-kind-fields
    title: Event rule without events
    severity: high
    kind: event
    condition: "!error_code"
  - id: bad-severity
    title: Severity out of range
    severity: urgent
    kind: state
    resource_type: AWS::S3::Bucket
    condition: Name
  - id: good-two
    title: Another good rule
    severity: info
    kind: event
    event: {names: [StopLogging]}
    condition: "!error_code"
  - id: bad-negation
    title: A negation JMESPath does not read as written
    severity: low
    kind: state
    resource_type: AWS::S3::Bucket
    condition: "!Encryption.Rules"
  - id: good-one
    title: Same id again
    severity: low
    kind: state
    resource_type: AWS::S3::Bucket
    condition: Name
"""


def test_malformed_rules_are_rejected_with_file_id_line_and_problem() -> None:
    rules, problems = parse_rules(MIXED_FILE, "team/rules.yaml")
    assert [r.id for r in rules] == ["good-one", "good-two"]
    by_id = {p.rule_id: p for p in problems}
    assert set(by_id) == {
        "bad-jmespath",
        "bad-type",
        "bad-kind-fields",
        "bad-severity",
        "bad-negation",
        "good-one",
    }
    assert "write '!(a.b)'" in by_id["bad-negation"].problem
    assert "invalid JMESPath" in by_id["bad-jmespath"].problem
    assert "AWS::S3::Buckett" in by_id["bad-type"].problem
    assert "did you mean AWS::S3::Bucket" in by_id["bad-type"].problem
    assert "needs 'event'" in by_id["bad-kind-fields"].problem
    assert by_id["bad-severity"].problem.startswith("severity:")
    assert "duplicate" in by_id["good-one"].problem
    text = str(by_id["bad-jmespath"])
    assert text.startswith("team/rules.yaml:9: rule 'bad-jmespath': condition: invalid JMESPath")


def test_a_file_that_is_not_yaml_is_rejected_whole(tmp_path: Any) -> None:
    (tmp_path / "broken.yaml").write_text("rules:\n  - id: x\n    title: [unclosed\n")
    (tmp_path / "fine.yaml").write_text(MIXED_FILE)
    rules = load_rules(tmp_path)
    problems = {(p.file.rsplit("/", 1)[-1], p.rule_id) for p in rules.problems}
    assert ("broken.yaml", None) in problems
    assert rules.get("good-one") is not None and rules.get("good-two") is not None
    # The pack is still there.
    assert rules.get("ec2-sg-ssh-open-to-world") is not None


def test_rules_dir_overrides_and_disables_builtin_rules(tmp_path: Any) -> None:
    (tmp_path / "site.yaml").write_text(
        """
rules:
  - id: ec2-default-vpc-present
    title: Default VPC present
    severity: info
    kind: state
    resource_type: AWS::EC2::VPC
    condition: IsDefault == `true`
  - id: s3-bucket-mfa-delete-disabled
    title: off here
    severity: low
    kind: state
    resource_type: AWS::S3::Bucket
    condition: "`false`"
    disabled: true
"""
    )
    rules = load_rules(tmp_path)
    assert not rules.problems
    vpc_rule = rules.get("ec2-default-vpc-present")
    assert vpc_rule is not None and vpc_rule.severity == "info"
    assert vpc_rule.source.endswith("site.yaml")
    assert all(r.id != "s3-bucket-mfa-delete-disabled" for r in rules.for_type("AWS::S3::Bucket"))


def test_a_condition_failing_on_some_input_is_reported_not_raised() -> None:
    (rule,), _ = parse_rules(
        """
- id: needs-a-string
  title: contains() on a number
  severity: low
  kind: state
  resource_type: AWS::EC2::Volume
  condition: contains(Size, 'x')
""",
        "t.yaml",
    )
    (change,) = changes_of("AWS::EC2::Volume", volume(True))
    evaluation = evaluate_change(rule_set_of([rule]), change)
    assert not evaluation.observations
    assert evaluation.errors and evaluation.errors[0][0] == "needs-a-string"
